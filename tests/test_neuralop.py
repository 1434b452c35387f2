"""neuraloperator's models as kryflow model entries (the optional ``neuralop`` extra).

Where neuraloperator is not installed the tests that build its models skip and say so; the entries'
refusal with the extra's name is tested either way.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from conftest import TINY_CONFIG
from kryflow.config import ConfigError, check_config
from kryflow.models import MODELS, build_model, model_config, model_from_config
from kryflow.models._neuralop import neuralop_available
from kryflow.optim import OPTIMIZERS, build_optimizer

ENTRIES = {
    "neuralop_fno": {"n_modes": 4, "hidden_channels": 6, "n_layers": 2},
    "neuralop_tfno": {"n_modes": 4, "hidden_channels": 6, "n_layers": 2},
    "neuralop_uno": {"hidden_channels": 6, "lifting_channels": 6, "projection_channels": 6,
                     "uno_out_channels": [6, 6, 6], "uno_n_modes": [4, 3, 4], "uno_scalings": [0.5, 1.0, 2.0]},
}
needs_neuralop = pytest.mark.skipif(
    not neuralop_available(), reason='neuraloperator is not installed (optional extra: pip install -e ".[neuralop]")')


def test_every_neuralop_entry_is_listed():
    assert {n for n in MODELS if n.startswith("neuralop_")} == set(ENTRIES)


def test_absent_extra_is_a_config_error_naming_it(monkeypatch):
    import kryflow.models._neuralop as nop

    monkeypatch.setattr(nop, "neuralop_available", lambda: False)
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["models"] = {"nop": {"name": "neuralop_tfno"}}
    with pytest.raises(ConfigError, match=r"config key 'models.nop'.*optional extra.*\.\[neuralop\]"):
        check_config(cfg)
    with pytest.raises(ValueError, match=r"\.\[neuralop\]"):
        build_model("neuralop_fno", in_channels=1, out_channels=1, dim=2)


@needs_neuralop
@pytest.mark.parametrize(
    "name, kwargs, key",
    [
        ("neuralop_fno", {"hidden_channels": 0}, "hidden_channels"),
        ("neuralop_fno", {"factorization": "Tucker"}, "factorization"),
        ("neuralop_fno", {"rank": 0.5}, "rank"),
        ("neuralop_tfno", {"norm": "batch_norm"}, "norm"),
        ("neuralop_tfno", {"domain_padding": -0.1}, "domain_padding"),
        ("neuralop_tfno", {"n_mode": 4}, "n_mode"),
        ("neuralop_uno", {"uno_scalings": [0.5, 1.0, 1.0, 1.0]}, "uno_scalings"),
        ("neuralop_uno", {"uno_n_modes": [4, 4]}, "uno_n_modes"),
        ("neuralop_uno", {"fno_skip": "soft-gating"}, "fno_skip"),
    ],
)
def test_bad_arguments_are_config_errors_naming_the_key(name, kwargs, key):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["models"] = {"nop": {"name": name, **kwargs}}
    with pytest.raises(ConfigError, match=rf"config key 'models.nop.{key}'"):
        check_config(cfg)


@needs_neuralop
def test_uno_grid_divisor_is_checked_against_the_datasets():
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["models"] = {"uno": {"name": "neuralop_uno", "uno_scalings": [0.25, 1.0, 4.0, 1.0]}}
    cfg["datasets"]["darcy"]["params"]["n"] = 18
    with pytest.raises(ConfigError, match="divisible by 4"):
        check_config(cfg)


@needs_neuralop
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_weights_are_real_and_reload(name, tmp_path):
    from kryflow.training.surrogate import Surrogate, load_surrogate, save_surrogate

    torch.manual_seed(0)
    net = build_model(name, in_channels=2, out_channels=1, dim=2, **ENTRIES[name])
    assert not any(p.is_complex() for p in net.parameters())
    assert any(n.endswith("_as_real") for n, _ in net.named_parameters())
    state = net.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values()), "neuraloperator's _metadata leaked"
    stats = {"x_mean": [0.0, 1.0], "x_std": [1.0, 2.0], "y_mean": [0.5], "y_std": [3.0]}
    save_surrogate(tmp_path / "model.pt", Surrogate(net, stats, 2))
    again = load_surrogate(tmp_path / "model.pt")
    assert type(again.net) is type(net) and model_config(again.net) == model_config(net)
    x = torch.randn(3, 2, 16, 16)
    torch.testing.assert_close(again.net(x), net(x))
    model_from_config(model_config(net)).load_state_dict(state, strict=True)
    # MLflow saves the whole module with torch.save (cloudpickle); pickling and deep copies work too
    buf = io.BytesIO()
    torch.save(again, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.load(buf, weights_only=False).net(x), net(x))
    torch.testing.assert_close(pickle.loads(pickle.dumps(net))(x), net(x))
    torch.testing.assert_close(copy.deepcopy(net)(x), net(x))
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)
    assert repr(net)


@needs_neuralop
def test_tfno_is_tucker_factorised_and_smaller():
    fno = build_model("neuralop_fno", in_channels=1, out_channels=1, dim=2, n_modes=8, hidden_channels=16)
    tfno = build_model("neuralop_tfno", in_channels=1, out_channels=1, dim=2, n_modes=8, hidden_channels=16)
    names = [n for n, _ in tfno.named_parameters()]
    assert any("weight.core_as_real" in n for n in names) and any("factor_0_as_real" in n for n in names)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(tfno) < 0.5 * count(fno)


@needs_neuralop
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_shapes_and_gradients(name, dim):
    torch.manual_seed(0)
    net = build_model(name, in_channels=2, out_channels=3, dim=dim, **ENTRIES[name])
    y = net(torch.randn(2, 2, *(8,) * dim))
    assert y.shape == (2, 3, *(8,) * dim) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


# a step must not wait for warm-up or a long update period, so that every curvature path runs
_FAST = {"adahessian": {"hessian_warmup": 0, "update_period": 1}, "kfac": {"factor_every": 1, "inverse_every": 2},
         "mkor": {"refresh_every": 2}, "mkor_h": {"refresh_every": 2}, "sophiah": {"update_period": 1},
         "soap": {"precondition_frequency": 1}}
_LR = {"zo_spsa": 1e-3, "lbfgs": 0.5, "sgd": 1e-2}


@needs_neuralop
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_optimizer_steps_on_every_entry(name, optimizer):
    """Every registered optimizer takes steps on the real-stored (factorised) spectral weights too:
    none of them needs refusing for these models."""
    torch.manual_seed(0)
    net = build_model(name, in_channels=1, out_channels=1, dim=2, **ENTRIES[name])
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    spectral = {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith("_as_real")}
    runner = build_optimizer(optimizer, net, lr=_LR.get(optimizer, 1e-3), **_FAST.get(optimizer, {}))
    losses = [float(runner.step(lambda: (net(x) - y).square().mean())) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    after = dict(net.named_parameters())
    moved = [n for n, before in spectral.items() if not torch.equal(after[n].detach(), before)]
    assert moved == list(spectral), f"{optimizer} left spectral weights unchanged: {set(spectral) - set(moved)}"


@needs_neuralop
@pytest.mark.slow
def test_workflow_trains_neuralop_models_with_adamw_and_shampoo(tmp_path):
    """A real Snakemake run: neuraloperator's FNO and TFNO trained and evaluated with AdamW and Shampoo
    (a curvature optimizer that refuses complex parameters: it steps on the real-stored weights)."""
    import pandas as pd

    from conftest import run_snakemake, write_config
    from kryflow.training.surrogate import load_surrogate

    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"] = {"darcy": {k: v for k, v in cfg["datasets"]["darcy"].items() if k != "transfer"}}
    cfg["models"] = {"nop_fno": {"name": "neuralop_fno", "n_modes": 6, "hidden_channels": 8, "n_layers": 2},
                     "nop_tfno": {"name": "neuralop_tfno", "n_modes": 6, "hidden_channels": 8, "n_layers": 2}}
    cfg["optimizers"] = {"adamw": {"lr": 3e-3}, "shampoo": {"lr": 3e-3}}
    cfg["solver_benchmark"] = {"enabled": False}
    proc = run_snakemake(tmp_path, write_config(tmp_path / "nop.yaml", cfg))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert len(summary) == 4 and set(summary["status"]) == {"finished"}, summary[["model", "optimizer", "status"]]
    assert (summary["test_rel_l2_mean"] > 0).all()
    for label, cls in (("nop_fno", "NeuralopFNO"), ("nop_tfno", "NeuralopTFNO")):
        surrogate = load_surrogate(tmp_path / "results" / "runs" / "darcy" / label / "shampoo" / "0" / "model.pt")
        assert type(surrogate.net).__name__ == cls
