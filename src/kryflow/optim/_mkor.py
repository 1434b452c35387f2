"""MKOR (Mozaffari et al. 2023): Kronecker factors kept as inverses, updated by rank-1 Sherman–Morrison steps.

Per covered layer (same coverage as K-FAC, see :mod:`._layers`) we keep ``L⁻¹`` (in × in) and
``R⁻¹`` (out × out) of the factors

``L_t = γ L_{t−1} + (1 − γ) ā āᴴ``,  ``R_t = γ R_{t−1} + (1 − γ) ḡ ḡᴴ``

where ``ā``/``ḡ`` are the batch-mean activation and output gradient, normalised to unit length
(their scale is irrelevant because the step is rescaled to the gradient norm). A rank-1 update
costs O(d²) instead of K-FAC's O(d³) inversion, so factors are refreshed every step.

Stabilisation (our choice, documented because the paper's exact stabiliser differs): the
factors start at the identity and the identity part decays like γᵗ, so every ``refresh_every``
steps the inverses are re-damped to ``(L + λ I)⁻¹`` (one eigendecomposition of the tracked
inverse); between refreshes only rank-1 updates are applied and only the inverses are stored.
Preconditioned directions are rescaled to the norm of the raw gradient (MKOR's norm-based
stabiliser), then heavy-ball momentum applies.

MKOR-H (``hybrid=True``) watches an EMA of the loss every ``check_every`` steps and switches
permanently to the first-order branch (the same momentum SGD on raw gradients, same lr, because
the second-order step was already normalised to the gradient norm) when the relative decrease
over a check window falls below ``switch_threshold``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._layers import LayerCapture, apply_preconditioned_step
from ._state import KeepStateDtypes

__all__ = ["MKOR", "sherman_morrison"]


def sherman_morrison(inv: torch.Tensor, v: torch.Tensor, gamma: float) -> torch.Tensor:
    """Inverse of ``γ M + (1 − γ) v vᴴ`` from ``inv = M⁻¹`` (Hermitian M).

    Arguments:
        inv: (d, d); v: (d,).
    """
    c = (1 - gamma) / gamma
    u = inv @ v
    denom = 1 + c * (v.conj() @ u).real
    return (inv - c * torch.outer(u, u.conj()) / denom) / gamma


def _redamp(inv: torch.Tensor, damping: float) -> torch.Tensor:
    """``(M + λ I)⁻¹`` from ``M⁻¹`` through one eigendecomposition: eigenvalues μ of M⁻¹ become
    1 / (1/μ + λ). Only the inverse is tracked, so the per-step cost stays O(d²)."""
    d, q = torch.linalg.eigh(inv.to(torch.complex128 if inv.is_complex() else torch.float64))
    d = 1.0 / (1.0 / d.clamp_min(1e-30) + damping)
    return ((q * d) @ q.conj().t()).to(inv.dtype)


class MKOR(KeepStateDtypes, torch.optim.Optimizer):
    """MKOR / MKOR-H over all Linear, Conv and spectral layers of ``model`` (``"hooks"`` kind).

    Arguments:
        model: the network; lr: step size; weight_decay: decoupled decay.
        factor_decay: γ of the factor EMA; damping: λ at refreshes; refresh_every: exact re-inversion period.
        momentum: heavy ball; hybrid: MKOR-H switching; check_every, switch_threshold: switching rule.
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.0, factor_decay: float = 0.95,
                 damping: float = 1e-2, refresh_every: int = 100, momentum: float = 0.9, hybrid: bool = False,
                 check_every: int = 20, switch_threshold: float = 1e-3):
        defaults = dict(lr=lr, weight_decay=weight_decay, factor_decay=factor_decay, damping=damping,
                        refresh_every=refresh_every, momentum=momentum)
        super().__init__([{"params": list(model.parameters()), "k_step": 0, "second_order": True,
                           "loss_ema": None, "loss_ref": None}], defaults)
        self.hybrid, self.check_every, self.switch_threshold = hybrid, check_every, switch_threshold
        self.capture = LayerCapture(model)

    def capture_enabled(self) -> bool:
        return self.param_groups[0]["second_order"]

    def backward(self, loss: torch.Tensor) -> None:
        cap = self.capture
        layers, outs = cap.outputs()
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.requires_grad]
        if not layers:
            loss.backward()
            return
        grads = torch.autograd.grad(loss, params + outs, allow_unused=True)
        for p, g in zip(params, grads[: len(params)]):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        with torch.no_grad():
            for layer, g in zip(layers, grads[len(params):]):
                if g is None:
                    continue
                a = cap.mean_a(layer, cap.inputs[layer])
                r = cap.mean_g(layer, g)
                # autocast: factors stay in float32
                a = a.float() if a.dtype in (torch.float16, torch.bfloat16) else a
                r = r.float() if r.dtype in (torch.float16, torch.bfloat16) else r
                self._update_factors(layer, a, r)

    def _update_factors(self, layer, a, g):
        group = self.param_groups[0]
        gamma = group["factor_decay"]
        st = self.state[layer.weight]
        if "Linv" not in st:
            st["Linv"] = torch.eye(a.numel(), dtype=a.dtype, device=a.device)
            st["Rinv"] = torch.eye(g.numel(), dtype=g.dtype, device=g.device)
        # the factor layout matches K-FAC's: L = E[conj(a) aᵀ], R = E[conj(g) gᵀ]
        for key, v in (("L", a.conj()), ("R", g.conj())):
            nv = v.norm()
            ok = torch.isfinite(nv) & (nv > 0)
            new = sherman_morrison(st[key + "inv"], v / torch.where(ok, nv, 1.0), gamma)
            # skip degenerate vectors without a host sync (torch.where instead of `if`)
            st[key + "inv"] = torch.where(ok, new, st[key + "inv"])

    def observe_loss(self, loss: torch.Tensor) -> None:
        """MKOR-H switching rule (no-op unless ``hybrid``; only then is the loss read on the host)."""
        group = self.param_groups[0]
        if not self.hybrid or not group["second_order"]:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            return
        group["loss_ema"] = loss if group["loss_ema"] is None else 0.9 * group["loss_ema"] + 0.1 * loss
        if group["k_step"] > 0 and group["k_step"] % self.check_every == 0:
            ref = group["loss_ref"]
            if ref is not None and (ref - group["loss_ema"]) / max(abs(ref), 1e-30) < self.switch_threshold:
                group["second_order"] = False
            group["loss_ref"] = group["loss_ema"]

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        lr = group["lr"]
        refresh = group["k_step"] > 0 and group["k_step"] % group["refresh_every"] == 0
        updates = {}
        if group["second_order"]:
            for layer in self.capture.layers:
                st = self.state[layer.weight]
                grad = LayerCapture.grad_matrix(layer)
                if grad is None or "Linv" not in st:
                    continue
                if refresh:
                    for key in ("Linv", "Rinv"):
                        st[key] = _redamp(st[key], group["damping"])
                Li, Ri = st["Linv"], st["Rinv"]
                u = Li @ grad @ Ri if grad.dim() == 2 else torch.einsum("ij,jok,op->ipk", Li, grad, Ri)
                # norm-based stabiliser: keep the raw gradient's length
                u = u * (grad.norm() / u.norm().clamp_min(1e-30))
                # non-finite preconditioned step: raw gradient for this layer (no host sync)
                u = torch.where(torch.isfinite(u).all(), u, grad)
                for p, up in LayerCapture.set_update(layer, u):
                    updates[p] = up
        apply_preconditioned_step(self, group, updates, lr)
        group["k_step"] += 1
        return None
