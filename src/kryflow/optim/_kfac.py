"""K-FAC (Martens & Grosse 2015; Grosse & Martens 2016 for convolutions) for every layer of kryflow models.

Curvature. Each covered layer computes ``s = a W`` per position (see :mod:`._layers`). Its
Fisher/Gauss–Newton block is approximated as ``A ⊗ G`` with

* ``A = E[a^H a]`` over samples and positions (a bias column of ones appended),
* ``G = E_n[Σ_t g^H g]`` for weights shared across positions (Linear, Conv: KFC's spatially
  uncorrelated approximation), or ``E_{n,t}[g^H g]`` for weights owned by one position
  (spectral modes),

where ``g`` is the gradient of the per-sample loss with respect to ``s``. That is
"K-FAC-expand" (``approx="expand"``, the default; Grosse & Martens' KFC), exact for a Linear
layer and for one Conv layer under ``fisher="exact"``. ``approx="reduce"`` (Eschenhagen et al.
2023: one row per sample, ``ā_n = mean_t a``, ``ḡ_n = Σ_t g``) and ``approx="mixed"`` (``A`` over
all positions, ``G`` from position-summed gradients) are offered for experiments; on our small
PDE surrogates both gave worse steps than expand.

Caveat measured on the small ResNet (Gauss–Newton quadratic forms by forward-mode JVPs): the
block-diagonal K-FAC curvature underestimates the true GN curvature of hidden conv layers by
~5-10×, and per-layer Newton steps add up across layers. Plain Newton-sized steps (lr ≈ 1)
therefore diverge; use lr ≈ 0.01-0.05 with the KL clip (the registry defaults' regime).

Spectral layers (:class:`~kryflow.models.ModeMixing`). Each retained Fourier mode ``k`` has its
own complex matrix ``W_k`` acting as ``s_k = a_k W_k``. We tie the Kronecker factors across
modes (``A = mean_k A_k``, ``G = mean_k G_k``, Hermitian) and precondition every mode's complex
gradient as ``A⁻¹ ∇W_k G⁻¹``. Treating ``W_k`` as complex assumes a *proper* (circular)
curvature: the real 2×2 structure between real and imaginary parts that the pseudo-covariance
``E[a^T a]`` would add is dropped. For a proper complex gradient ``v`` the covariance of its real
view is half of ``E[v vᴴ]``, hence ``G/2`` for spectral layers (exact for one mode: see
``test_kfac_spectral_single_mode_is_one_gauss_newton_step``). The weight is stored real
(trailing 2) and converted back.

Which curvature (``fisher``):

* ``"empirical"`` (default): ``g`` from the training loss itself — no extra backward pass;
* ``"mc"``: ``g = J^T z`` with ``z ~ N(0, I)`` shaped like the model output; its expectation is
  the Gauss–Newton matrix of ``0.5 · mean_n ‖f(x_n) − y_n‖²`` (one extra backward pass);
* ``"exact"``: the same Gauss–Newton factor computed exactly, one backward pass per output
  entry — for tiny models and the known-answer test only.

Damping is factored Tikhonov (Martens & Grosse 2015, §6.3): ``(A + π√λ I) ⊗ (G + √λ/π I)`` with
``π² = (tr A / dim A) / (tr G / dim G)``, inverted factor by factor (Cholesky) every
``inverse_every`` steps, so a step costs one product with each inverse. ``λ`` is absolute
(loss-curvature units): directions with curvature ≫ λ get Newton-like steps, the rest SGD-like steps of about
lr/λ. (Exact eigen-damping of the product needs two products with each eigenbasis per step —
twice the cost — and a damping relative to the mean eigenvalue let the ~1e-9 curvature of deep
U-Net layers, whose estimate goes stale within a few steps, produce exploding steps.)
Parameters of uncovered layers (none in kryflow's models) receive the plain gradient.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._layers import LayerCapture, apply_preconditioned_step
from ._state import KeepStateDtypes

__all__ = ["KFAC"]


def _eig(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # eigh in float64 on small factors: factors can be badly conditioned and this runs rarely
    d, q = torch.linalg.eigh(m.to(torch.complex128 if m.is_complex() else torch.float64))
    return d.clamp_min(0).to(m.real.dtype), q.to(m.dtype)


def _accurate(t: torch.Tensor) -> torch.Tensor:
    # under autocast activations arrive in half precision; second moments need float32
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def damped_inverse(m: torch.Tensor, shift: float) -> torch.Tensor:
    """``(M + shift·I)⁻¹`` of a Hermitian PSD factor.

    Cholesky in float64, several times cheaper than an eigendecomposition (inverting all factors
    of the benchmark U-Net, up to 577², adds ~2.5 plain steps' time instead of ~9); where
    round-off leaves ``M + shift·I`` not positive definite, the eigendecomposition with negative
    eigenvalues clamped to 0 is used instead.
    """
    wide = m.to(torch.complex128 if m.is_complex() else torch.float64)
    shifted = wide + shift * torch.eye(m.shape[0], dtype=wide.dtype, device=m.device)
    chol, info = torch.linalg.cholesky_ex(shifted)
    if int(info) == 0:
        return torch.cholesky_inverse(chol).to(m.dtype)
    d, q = _eig(m)
    return (q / (d + shift)) @ q.conj().t()


def precondition(grad: torch.Tensor, a_inv: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
    """``A⁻¹ ∇ G⁻¹`` for ``grad`` of shape (in, out) or (in, out, K) (one matrix per mode)."""
    if grad.dim() == 2:
        return a_inv @ grad @ g_inv
    return torch.einsum("ij,jok,op->ipk", a_inv, grad, g_inv)


class KFAC(KeepStateDtypes, torch.optim.Optimizer):
    """K-FAC over all Linear, Conv (1×1 and k×k, 2D/3D) and spectral layers of ``model``.

    Used through a ``"hooks"`` :class:`~kryflow.optim.StepRunner`:
    ``capture_enabled()`` → forward → :meth:`backward` → :meth:`step`.

    Arguments:
        model: the network (its parameters are optimised).
        lr: step size; weight_decay: decoupled weight decay.
        damping: absolute Tikhonov damping λ (factored, see module docstring).
        factor_decay: EMA weight of old factors (0 = use only the latest batch).
        factor_every: recompute factors every k steps; inverse_every: invert them every k steps.
            Factors of a k×k conv cost ~9× its forward pass (unfolded patches): on the benchmark
            U-Net (CPU) a statistics step costs ~3.7 plain steps and an inversion ~2.5 more, so the
            defaults (20, 100) amortise them to ~15% over a plain step (Martens & Grosse 2015 also
            recompute inverses only every 20 steps).
        momentum: heavy-ball momentum on the preconditioned direction.
        kl_clip: bound on ``lr² · Δᵀ F Δ`` (trust region, Ba et al. 2017); None disables.
        fisher: "empirical", "mc" or "exact" (see module docstring).
        approx: weight sharing over positions, "mixed", "reduce" or "expand" (see module docstring).
        seed: seeds the Monte-Carlo targets of ``fisher="mc"`` and the drawn rows of ``stats_rows``.
        stats_rows: most rows (positions) per layer that a statistics step uses (``approx="expand"``);
            larger layers use a uniform random subset, drawn afresh each statistics step from
            ``seed`` and the step number (so a resumed run draws the same rows). Unbiased for both
            factors; the factor EMA averages the sampling noise. On the U-Net at 64², batch 16
            (65536 rows in the top layers), the full statistics step cost 5.5 Adam steps, mostly
            building the unfolded patch matrix and ``aᵀa``. None uses every row.
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.0, damping: float = 1e-2,
                 factor_decay: float = 0.95, factor_every: int = 20, inverse_every: int = 100, momentum: float = 0.5,
                 kl_clip: float | None = 1e-4, fisher: str = "empirical", approx: str = "expand", seed: int = 0,
                 stats_rows: int | None = 8192):
        if fisher not in ("empirical", "mc", "exact"):
            raise ValueError(f"fisher must be 'empirical', 'mc' or 'exact', got {fisher!r}")
        defaults = dict(lr=lr, weight_decay=weight_decay, damping=damping, factor_decay=factor_decay,
                        factor_every=factor_every, inverse_every=inverse_every, momentum=momentum, kl_clip=kl_clip)
        super().__init__([{"params": list(model.parameters()), "k_step": 0}], defaults)
        if approx not in ("mixed", "reduce", "expand"):
            raise ValueError(f"approx must be 'mixed', 'reduce' or 'expand', got {approx!r}")
        if stats_rows is not None and (isinstance(stats_rows, bool) or not isinstance(stats_rows, int) or stats_rows < 1):
            raise ValueError(f"stats_rows must be null or an integer >= 1, got {stats_rows!r}")
        self.fisher, self.approx, self.stats_rows, self._seed = fisher, approx, stats_rows, int(seed)
        self.capture = LayerCapture(model)
        dev = next(model.parameters()).device
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(seed)

    # -- curvature statistics -------------------------------------------------------------
    def stats_due(self) -> bool:
        g = self.param_groups[0]
        return g["k_step"] % g["factor_every"] == 0

    def capture_enabled(self) -> bool:
        return self.stats_due()

    def _output_grads(self, surrogate, outs, retain=True):
        return torch.autograd.grad(surrogate, outs, retain_graph=retain, allow_unused=True)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward pass that also accumulates the Kronecker factors when they are due."""
        cap = self.capture
        layers, outs = cap.outputs()
        if not layers:
            loss.backward()
            return
        n = cap.batch
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.requires_grad]
        if self.fisher == "empirical":
            grads = torch.autograd.grad(loss, params + outs, allow_unused=True)
            for p, g in zip(params, grads[: len(params)]):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
            # the loss is a batch mean: per-sample gradients are n × the recorded ones
            self._accumulate(layers, [[None if g is None else g * n] for g in grads[len(params):]], n)
            return
        f = cap.model_output
        if self.fisher == "mc":
            z = torch.randn(f.shape, generator=self.generator, device=f.device, dtype=f.dtype)
            gs = self._output_grads((f * z).sum(), outs)
            samples = [[g] for g in gs]
        else:
            flat = f.reshape(f.shape[0], -1)
            samples = [[] for _ in outs]
            for j in range(flat.shape[1]):
                gs = self._output_grads(flat[:, j].sum(), outs)
                for lst, g in zip(samples, gs):
                    lst.append(g)
        self._accumulate(layers, samples, n)
        loss.backward()

    @torch.no_grad()
    def _accumulate(self, layers, samples, n):
        cap = self.capture
        group = self.param_groups[0]
        decay = group["factor_decay"]
        for layer, gl in zip(layers, samples):
            gl = [g for g in gl if g is not None]
            if not gl:
                continue
            # expand: rows are exchangeable positions, so a random subset estimates both factors;
            # mixed/reduce group rows by sample and need them all
            limit = self.stats_rows if self.approx == "expand" else None
            gen = None
            if limit is not None:
                gen = torch.Generator().manual_seed(self._seed * 1_000_003 + group["k_step"])
            a, rows, total = cap.sampled_rows(layer, cap.inputs[layer], gl, limit, gen)
            a, rows = _accurate(a), [_accurate(r) for r in rows]
            sampled = rows[0].shape[0]
            if cap.positions_shared(layer) and self.approx != "expand" and a.shape[0] > n:
                # sum output gradients over positions per sample (keeps cross-position correlations)
                rows = [r.reshape(n, -1, r.shape[1]).sum(1) for r in rows]
                if self.approx == "reduce":
                    a = a.reshape(n, -1, a.shape[1]).mean(1)
            A = cap.second_moment_a(layer, a)
            G = sum(r.conj().t() @ r for r in rows)
            # shared weights: mean over samples of the sum over positions (estimated from the drawn
            # rows: x total/sampled); per-position weights: mean over both
            G = G * (total / sampled) / n if cap.positions_shared(layer) else G / sampled
            if G.is_complex():
                # for a proper complex gradient v the real (Re, Im) covariance is half of E[v vᴴ]
                G = G / 2
            # Hermitian factors; the transposed layout of grad_matrix means conj(C) — see module docstring
            st = self.state[layer.weight]
            if "A" not in st:
                st["A"], st["G"] = A, G
            else:
                st["A"].mul_(decay).add_(A, alpha=1 - decay)
                st["G"].mul_(decay).add_(G, alpha=1 - decay)

    # -- the step ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        lr, damping = group["lr"], group["damping"]
        invert = group["k_step"] % group["inverse_every"] == 0
        updates: dict[torch.Tensor, torch.Tensor] = {}
        vg = []  # Δᵀ ∇ per layer for the KL clip (≈ Δᵀ F Δ since Δ = F⁻¹ ∇); summed once: one GPU sync
        for layer in self.capture.layers:
            st = self.state[layer.weight]
            grad = LayerCapture.grad_matrix(layer)
            if grad is None or "A" not in st:
                continue
            if invert or "A_inv" not in st:
                if not (torch.isfinite(st["A"]).all() and torch.isfinite(st["G"]).all()):
                    st.pop("A_inv", None)
                    continue  # diverged statistics: raw gradient; the trainer's divergence check acts
                # factored Tikhonov damping with Martens & Grosse's π balancing the two factors' scales
                mean_a = float(st["A"].diagonal().real.mean())
                mean_g = float(st["G"].diagonal().real.mean())
                pi = math.sqrt(mean_a / mean_g) if mean_a > 0 and mean_g > 0 else 1.0
                st["A_inv"] = damped_inverse(st["A"], pi * math.sqrt(damping))
                st["G_inv"] = damped_inverse(st["G"], math.sqrt(damping) / pi)
            u = precondition(grad, st["A_inv"], st["G_inv"])
            vg.append(torch.vdot(u.reshape(-1), grad.reshape(-1)).real)
            for p, up in LayerCapture.set_update(layer, u):
                updates[p] = up
        nu = 1.0
        total = float(torch.stack(vg).sum()) if vg else 0.0
        if group["kl_clip"] is not None and total > 0:
            nu = min(1.0, (group["kl_clip"] / (lr**2 * total)) ** 0.5)
        apply_preconditioned_step(self, group, updates, lr, scale=nu)
        group["k_step"] += 1
        return None
