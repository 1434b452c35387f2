"""Optimizer registry: every optimizer × model trains, known answers, determinism, exact resume."""

import copy
import math

import pytest
import torch

from kryflow.models import MODELS, ModeMixing, build_model
from kryflow.optim import (
    OPTIMIZERS, LayerCapture, build_optimizer, build_scheduler, covered_layers, scale_lr, sherman_morrison,
    woodbury_ihvp,
)

TINY = {
    "fno": {"width": 4, "modes": 3, "layers": 2, "projection_width": 8},
    "unet": {"width": 4, "depth": 1},
    "resnet": {"width": 4, "blocks": 1, "dilations": [1, 2]},
    "sinenet": {"width": 4, "waves": 2, "depth": 1},
}
#: kryflow's own models; neuraloperator's entries (an optional extra) have their optimizer matrix
#: in test_neuralop.py
OWN_MODELS = [n for n in sorted(MODELS) if not n.startswith("neuralop_")]

# lr, extras and steps per optimizer for the "loss goes down" test. Every registered optimizer
# needs an entry: a registry name without one fails test_every_optimizer_is_tested.
TRAIN = {
    "sgd": (0.05, {}, 6),
    "adam": (3e-3, {}, 6),
    "adamw": (3e-3, {}, 6),
    "lbfgs": (1.0, {}, 4),
    "adahessian": (0.01, {}, 6),
    "sophiah": (3e-3, {"update_period": 1}, 6),
    "shampoo": (3e-3, {}, 6),
    "soap": (3e-3, {}, 6),
    "kron": (3e-3, {}, 6),
    "kfac": (0.02, {}, 6),
    "mfac": (0.02, {}, 6),
    "mkor": (0.02, {}, 6),
    "mkor_h": (0.02, {}, 6),
    "zo_spsa": (2e-3, {"q": 4}, 8),
}


def loss_closure(model):
    """MSE on a fixed tiny batch (B=4, 8×8 grid), drawn from its own generator."""
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = 0.5 * torch.roll(x, 1, dims=-1) + 0.1 * x**2
    return lambda: ((model(x) - y) ** 2).mean()


def problem(name, seed=0):
    """A tiny model (2D) and its loss closure."""
    torch.manual_seed(seed)
    model = build_model(name, in_channels=1, out_channels=1, dim=2, **TINY[name])
    return model, loss_closure(model)


def test_every_optimizer_is_tested():
    assert set(OPTIMIZERS) == set(TRAIN)
    for spec in OPTIMIZERS.values():
        assert spec.kind in ("backward", "create_graph", "closure", "forward_only", "hooks")
        assert spec.family in ("first_order", "curvature", "zeroth_order")


@pytest.mark.parametrize("model_name", OWN_MODELS)
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_loss_goes_down(opt_name, model_name):
    torch.set_num_threads(1)
    model, loss_fn = problem(model_name)
    lr, extras, steps = TRAIN[opt_name]
    runner = build_optimizer(opt_name, model, lr=lr, **extras)
    with torch.no_grad():
        before = float(loss_fn())
    for _ in range(steps):
        loss = runner.step(loss_fn)
        assert loss.dim() == 0 and not loss.requires_grad
    with torch.no_grad():
        after = float(loss_fn())
    assert math.isfinite(after) and after < before, (before, after)


@pytest.mark.parametrize("model_name", ["fno", "unet"])
@pytest.mark.parametrize("opt_name", ["kfac", "mkor"])
def test_curvature_optimizers_on_3d_models(opt_name, model_name):
    """Kronecker factors of 3D convolutions (k×k×k patches) and 3D spectral layers."""
    torch.manual_seed(0)
    model = build_model(model_name, in_channels=1, out_channels=1, dim=3, **TINY[model_name])
    x = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    loss_fn = lambda: ((model(x) - 0.5 * torch.roll(x, 1, dims=-1)) ** 2).mean()  # noqa: E731
    runner = build_optimizer(opt_name, model, lr=TRAIN[opt_name][0])
    with torch.no_grad():
        before = float(loss_fn())
    for _ in range(4):
        runner.step(loss_fn)
    with torch.no_grad():
        assert float(loss_fn()) < before


# -- known answers -------------------------------------------------------------------------------


def test_kfac_linear_least_squares_is_one_gauss_newton_step():
    """K-FAC with the exact GN factors and lr=1 jumps to the least-squares solution."""
    torch.manual_seed(0)
    x, t = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3)).double()
    runner = build_optimizer("kfac", model, lr=1.0, damping=1e-24, momentum=0.0, kl_clip=None, fisher="exact",
                             factor_decay=0.0)
    runner.step(lambda: 0.5 * ((model(x) - t) ** 2).sum(1).mean())
    xb = torch.cat([x, torch.ones(64, 1, dtype=x.dtype)], 1)
    solution = torch.linalg.lstsq(xb, t).solution
    torch.testing.assert_close(model[0].weight.detach().t(), solution[:-1], atol=1e-9, rtol=0)
    torch.testing.assert_close(model[0].bias.detach(), solution[-1], atol=1e-9, rtol=0)


def test_kfac_conv_least_squares_is_one_gauss_newton_step():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    x, t = torch.randn(8, 2, 5, 5, dtype=torch.float64), torch.randn(8, 3, 5, 5, dtype=torch.float64)
    runner = build_optimizer("kfac", torch.nn.Sequential(conv), lr=1.0, damping=1e-24, momentum=0.0, kl_clip=None,
                             fisher="exact", factor_decay=0.0)
    runner.step(lambda: 0.5 * ((runner.model(x) - t) ** 2).sum((1, 2, 3)).mean())
    patches = torch.nn.functional.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 18)
    design = torch.cat([patches, torch.ones(len(patches), 1, dtype=x.dtype)], 1)
    solution = torch.linalg.lstsq(design, t.permute(0, 2, 3, 1).reshape(-1, 3)).solution
    torch.testing.assert_close(conv.weight.detach().reshape(3, -1).t(), solution[:-1], atol=1e-9, rtol=0)


def test_kfac_spectral_single_mode_is_one_gauss_newton_step():
    """One Fourier mode, complex least squares over the real-stored weight."""
    torch.manual_seed(0)
    mix = ModeMixing(3, 2, corners=1, modes=(1,)).double()
    x = torch.randn(32, 3, 1, 1, dtype=torch.complex128)
    t = torch.randn(32, 2, 1, 1, dtype=torch.complex128)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = mix

        def forward(self, z):
            return torch.view_as_real(self.mix(z))

    model = Wrap()
    runner = build_optimizer("kfac", model, lr=1.0, damping=1e-24, momentum=0.0, kl_clip=None, fisher="exact",
                             factor_decay=0.0)
    runner.step(lambda: 0.5 * ((model(x) - torch.view_as_real(t)) ** 2).sum((1, 2, 3, 4)).mean())
    solution = torch.linalg.lstsq(x[:, :, 0, 0], t[:, :, 0, 0]).solution  # (3, 2) complex
    torch.testing.assert_close(torch.view_as_complex(mix.weight.detach())[:, :, 0, 0], solution, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", OWN_MODELS)
def test_kfac_covers_every_parameter(name):
    model = build_model(name, in_channels=1, out_channels=1, dim=3, **TINY[name])
    covered = {id(p) for layer in covered_layers(model) for p in layer.parameters(recurse=False)}
    assert covered == {id(p) for p in model.parameters()}


@pytest.mark.parametrize(
    "conv",
    [torch.nn.Conv2d(3, 4, 3, padding=2, dilation=2), torch.nn.Conv3d(2, 3, 3, padding=1, stride=2),
     torch.nn.Conv2d(3, 2, 1)],
)
def test_patches_reproduce_the_convolution(conv):
    from kryflow.optim._layers import mean_patch

    torch.manual_seed(0)
    x = torch.randn(2, conv.in_channels, *(7,) * (conv.weight.dim() - 2))
    out = conv(x)
    rows = LayerCapture.rows_a(conv, x)  # (B * positions, C k^d + 1)
    weight = torch.cat([conv.weight.reshape(conv.out_channels, -1), conv.bias[:, None]], 1)
    y = (rows @ weight.t()).reshape(2, *out.shape[2:], -1).movedim(-1, 1)
    torch.testing.assert_close(y, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(LayerCapture.mean_a(conv, x), rows.mean(0), atol=1e-6, rtol=1e-6)
    assert mean_patch(x, conv).shape == (rows.shape[1] - 1,)


def test_mfac_inverse_hessian_vector_product_matches_dense():
    torch.manual_seed(0)
    m, d, lam = 6, 20, 1e-2
    grads, v = torch.randn(m, d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    dense = lam * torch.eye(d, dtype=torch.float64) + grads.t() @ grads / m
    torch.testing.assert_close(woodbury_ihvp(grads, v, lam), torch.linalg.solve(dense, v))


def test_mfac_step_uses_the_windowed_dense_inverse():
    """After more steps than the window, the step direction is F⁻¹∇ of the last m gradients."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    runner = build_optimizer("mfac", model, lr=1e-3, window=3, damping=1e-2)
    grads = []
    for i in range(5):
        x = torch.randn(8, 4, dtype=torch.float64)
        loss_fn = lambda: (model(x) ** 2).mean()  # noqa: E731
        before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        model.zero_grad()
        loss_fn().backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        grads.append(g)
        runner.step(loss_fn)
        step = before - torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    window = torch.stack(grads[-3:])
    dense = 1e-2 * torch.eye(len(g), dtype=torch.float64) + window.t() @ window / 3
    expected = torch.linalg.solve(dense, g)
    expected = expected * g.norm() / expected.norm() * 1e-3
    torch.testing.assert_close(step, expected)


def test_mkor_sherman_morrison_matches_dense_inverse():
    torch.manual_seed(0)
    a = torch.randn(5, 5, dtype=torch.complex128)
    m = a @ a.conj().t() + torch.eye(5)
    v = torch.randn(5, dtype=torch.complex128)
    updated = 0.9 * m + 0.1 * torch.outer(v, v.conj())
    torch.testing.assert_close(sherman_morrison(torch.linalg.inv(m), v, 0.9), torch.linalg.inv(updated))


def test_zeroth_order_gradient_is_unbiased():
    """On a quadratic the SPSA estimate averages to the true gradient."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    x, t = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    loss_fn = lambda: 0.5 * ((model(x) - t) ** 2).sum(1).mean()  # noqa: E731
    runner = build_optimizer("zo_spsa", model, lr=1e-3, q=20000, eps=1e-3)
    estimate = torch.cat([g.reshape(-1) for g in runner.optimizer.gradient_estimate(loss_fn)])
    model.zero_grad()
    loss_fn().backward()
    exact = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    # standard error ≈ |g| sqrt(d / q) ≈ 0.03 |g| here
    assert (estimate - exact).norm() / exact.norm() < 0.12


def test_zeroth_order_regenerated_directions_match_kept_buffer_and_hold_no_copy():
    """MeZO's regeneration and the kept-buffer mode draw the same z: identical trajectories."""
    x, t = torch.randn(16, 3), torch.randn(16, 2)
    traj, kept = {}, {}
    for mode in ("regenerate", "buffer"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        runner = build_optimizer("zo_spsa", model, lr=1e-2, q=2, directions=mode)
        for _ in range(5):
            runner.optimizer.step(lambda: ((model(x) - t) ** 2).mean())
        traj[mode] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        kept[mode] = sum(b.numel() for b in runner.optimizer._buffers.values())
    torch.testing.assert_close(traj["regenerate"], traj["buffer"], rtol=0, atol=1e-6)
    n_params = traj["buffer"].numel()
    assert kept == {"regenerate": 0, "buffer": n_params}


class _DiagonalQuadratic(torch.nn.Module):
    """``L(θ) = ½ Σ h_i θ_i²``: Hutchinson's z ⊙ Hz is exactly the diagonal h for any Rademacher z."""

    def __init__(self):
        super().__init__()
        self.h = torch.tensor([4.0, 0.5, -2.0, 10.0], dtype=torch.float64)
        self.theta = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 0.3], dtype=torch.float64))

    def loss(self):
        return 0.5 * (self.h * self.theta**2).sum()


def test_adahessian_first_step_is_a_newton_step_on_a_diagonal_quadratic():
    """m̂ = g and v̂ = h² after one step, so θ ← θ − lr · hθ / |h| (Newton's step for h > 0)."""
    quad = _DiagonalQuadratic()
    theta0 = quad.theta.detach().clone()
    runner = build_optimizer("adahessian", quad, lr=0.5, eps=1e-12)
    runner.step(quad.loss)
    expected = theta0 - 0.5 * quad.h * theta0 / quad.h.abs()
    torch.testing.assert_close(quad.theta.detach(), expected)


def test_adahessian_delayed_update_keeps_the_trajectory_on_a_quadratic():
    """With a constant exact Hessian diagonal, estimating it every step or every 3rd step gives the
    same steps (bias correction counts estimates, not steps), and only every 3rd step builds the
    double-backward graph."""
    trajectories, due = [], []
    for period in (1, 3):
        quad = _DiagonalQuadratic()
        runner = build_optimizer("adahessian", quad, lr=0.1, update_period=period, hessian_warmup=0)
        path = []
        for _ in range(7):
            if period == 3:
                due.append(runner._hessian_due())
            runner.step(quad.loss)
            path.append(quad.theta.detach().clone())
        trajectories.append(torch.stack(path))
    torch.testing.assert_close(trajectories[0], trajectories[1])
    assert due == [True, False, False, True, False, False, True]


def test_adahessian_estimates_every_step_during_warmup():
    quad = _DiagonalQuadratic()
    runner = build_optimizer("adahessian", quad, lr=0.1, update_period=4, hessian_warmup=6)
    due = []
    for _ in range(13):
        due.append(runner._hessian_due())
        runner.step(quad.loss)
    assert due == [True] * 6 + [False, False, True, False, False, False, True]
    assert runner.optimizer.param_groups[0]["hessian_updates"] == 8


def test_mkor_h_switches_to_first_order_when_loss_stalls():
    model, _ = problem("resnet")
    runner = build_optimizer("mkor_h", model, lr=1e-3, check_every=2)
    x = torch.randn(2, 1, 8, 8)
    for _ in range(8):
        runner.step(lambda: model(x).mean() * 0 + 1.0)  # constant loss: no progress
    assert runner.optimizer.param_groups[0]["second_order"] is False


# -- determinism and exact resume ----------------------------------------------------------------


def _params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("opt_name", ["zo_spsa", "adahessian", "kfac", "kron"])
def test_deterministic_for_fixed_seed(opt_name):
    results = []
    for _ in range(2):
        model, loss_fn = problem("fno")
        lr, extras, _ = TRAIN[opt_name]
        torch.manual_seed(123)
        runner = build_optimizer(opt_name, model, lr=lr, **extras)
        for _ in range(3):
            runner.step(loss_fn)
        results.append(_params(model))
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(opt_name):
    torch.set_num_threads(1)
    lr, extras, _ = TRAIN[opt_name]
    if opt_name == "kfac":  # exercise the generator, factor updates, stale inverses and drawn rows across the save
        extras = {**extras, "fisher": "mc", "factor_every": 2, "inverse_every": 3, "stats_rows": 16}
    if opt_name in ("mkor", "mkor_h"):  # exercise the re-damping refresh
        extras = {**extras, "refresh_every": 2}
    model, loss_fn = problem("resnet")
    runner = build_optimizer(opt_name, model, lr=lr, **extras)
    for _ in range(3):
        runner.step(loss_fn)
    saved_model = copy.deepcopy(model.state_dict())
    saved_runner = copy.deepcopy(runner.state_dict())
    for _ in range(3):
        runner.step(loss_fn)
    expected = _params(model)

    resumed, loss_resumed = problem("resnet", seed=99)  # other init: everything must come from the state
    resumed.load_state_dict(saved_model)
    runner2 = build_optimizer(opt_name, resumed, lr=lr, **extras)
    runner2.load_state_dict(saved_runner)
    for _ in range(3):
        runner2.step(loss_resumed)
    assert torch.equal(_params(resumed), expected)


@pytest.mark.parametrize("opt_name", ["kfac", "mkor"])
def test_state_round_trip_keeps_complex_spectral_factors(opt_name):
    model, loss_fn = problem("fno")
    runner = build_optimizer(opt_name, model, lr=TRAIN[opt_name][0])
    for _ in range(2):
        runner.step(loss_fn)
    state = copy.deepcopy(runner.state_dict())
    runner2 = build_optimizer(opt_name, copy.deepcopy(model), lr=TRAIN[opt_name][0])
    runner2.load_state_dict(state)
    key = "A" if opt_name == "kfac" else "Linv"
    mixers = [m for m in model.modules() if isinstance(m, ModeMixing)]
    mixers2 = [m for m in runner2.model.modules() if isinstance(m, ModeMixing)]
    assert mixers
    for m, m2 in zip(mixers, mixers2):
        original = runner.optimizer.state[m.weight][key]
        loaded = runner2.optimizer.state[m2.weight][key]
        assert original.is_complex() and loaded.dtype == original.dtype
        torch.testing.assert_close(loaded, original)


def test_state_from_another_optimizer_is_rejected():
    model, _ = problem("resnet")
    state = build_optimizer("adam", model, lr=1e-3).state_dict()
    with pytest.raises(ValueError, match="saved by optimizer 'adam'"):
        build_optimizer("sgd", model, lr=1e-3).load_state_dict(state)


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, key",
    [
        ("adam", {"lr": 0.0}, "lr"),
        ("adam", {"lr": -1.0}, "lr"),
        ("sgd", {"lr": 0.1, "weight_decay": -1.0}, "weight_decay"),
        ("kfac", {"lr": 0.1, "dampnig": 1.0}, "dampnig"),
        ("kfac", {"lr": 0.1, "damping": 0.0}, "damping"),
        ("zo_spsa", {"lr": 0.1, "q": 0}, "'q'"),
        ("zo_spsa", {"lr": 0.1, "directions": "stored"}, "'directions'"),
        ("mfac", {"lr": 0.1, "window": 1.5}, "window"),
        ("adam", {"lr": 0.1, "betas": [0.9, 1.5]}, "betas"),
        ("nadam", {"lr": 0.1}, "valid optimizers"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_key(name, kwargs, key):
    model, _ = problem("resnet")
    with pytest.raises(ValueError, match=key):
        build_optimizer(name, model, **kwargs)


def test_scale_lr():
    assert scale_lr("sgd", 0.1, 64, 16) == pytest.approx(0.4)
    assert scale_lr("adam", 0.1, 64, 16) == pytest.approx(0.2)
    assert scale_lr("lbfgs", 1.0, 64, 16) == 1.0
    with pytest.raises(ValueError):
        scale_lr("adam", 0.1, 0, 16)


@pytest.mark.parametrize("kind", ["constant", "cosine", "step"])
def test_schedulers(kind):
    model, loss_fn = problem("resnet")
    runner = build_optimizer("zo_spsa", model, lr=1.0)
    sched = build_scheduler(runner, kind, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(runner.optimizer.param_groups[0]["lr"])
        runner.step(loss_fn)
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == 1.0
    if kind == "cosine":
        assert lrs[-1] < 0.1
    with pytest.raises(ValueError, match="warmup_steps"):
        build_scheduler(runner, kind, total_steps=10, warmup_steps=10)


def test_kfac_sampled_statistics_rows_are_unbiased():
    # stats_rows draws a random subset of positions per statistics step: the factors must agree
    # with the every-row factors in expectation (mean over many independent draws)
    from kryflow.optim._layers import LayerCapture

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 12, 12)
    g = torch.randn(2, 4, 12, 12)
    a_all, g_all, total = LayerCapture.sampled_rows(conv, x, [g], None)
    assert total == a_all.shape[0] == 2 * 144 and a_all.shape[1] == 27
    A_all = a_all.t() @ a_all / total
    G_all = g_all[0].t() @ g_all[0]
    A_mean, G_mean, draws = torch.zeros_like(A_all), torch.zeros_like(G_all), 400
    for k in range(draws):
        a, gs, tot = LayerCapture.sampled_rows(conv, x, [g], 50, torch.Generator().manual_seed(k))
        assert a.shape == (50, 27) and gs[0].shape == (50, 4) and tot == total
        A_mean += a.t() @ a / 50 / draws
        G_mean += gs[0].t() @ gs[0] * (tot / 50) / draws
    assert torch.allclose(A_mean, A_all, atol=0.08 * A_all.diagonal().mean())
    assert torch.allclose(G_mean, G_all, atol=0.08 * G_all.diagonal().mean())
    # a drawn row is exactly the patch of its position: the subset is a subset of the full rows
    a, gs, _ = LayerCapture.sampled_rows(conv, x, [g], 7, torch.Generator().manual_seed(1))
    for row, grow in zip(a, gs[0]):
        hit = ((a_all == row).all(1) & (g_all[0] == grow).all(1)).nonzero()
        assert hit.numel() == 1
