"""M-FAC (Frantar, Kurtic & Alistarh 2021): matrix-free inverse empirical Fisher from a window of gradients."""

from __future__ import annotations

import torch

from ._state import KeepStateDtypes

__all__ = ["MFAC", "woodbury_ihvp"]


def woodbury_ihvp(grads: torch.Tensor, v: torch.Tensor, damping: float) -> torch.Tensor:
    """Inverse-Hessian-vector product with the windowed empirical Fisher.

    ``F = λ I + (1/m) Σ_i g_i g_iᵀ``; by the Woodbury identity
    ``F⁻¹ v = (v − Gᵀ (m λ I + G Gᵀ)⁻¹ G v) / λ``, so only an m×m system is solved.

    Arguments:
        grads: (m, d) window of flattened gradients G.
        v: (d,) or (d, k) vectors.
        damping: λ > 0.

    Returns:
        Same shape as ``v``.
    """
    m = grads.shape[0]
    # the m×m Gram system in float64: it is tiny and can be ill-conditioned when gradients align
    gram = (grads.double() @ grads.double().t()) + m * damping * torch.eye(m, dtype=torch.float64, device=grads.device)
    gv = grads.double() @ v.double()
    sol = torch.linalg.solve(gram, gv)
    return ((v.double() - grads.double().t() @ sol) / damping).to(v.dtype)


class MFAC(KeepStateDtypes, torch.optim.Optimizer):
    """Preconditioned SGD with ``F⁻¹ ∇`` from the last ``window`` gradients (dense over all parameters).

    The paper's recursive (dynamic-algorithm) formulation is replaced by the equivalent Woodbury
    solve with an incrementally updated Gram matrix: per step two (m × d) products and an m×m
    solve. ``test_optim`` checks the step against a dense inverse.
    The direction is always rescaled to the gradient's norm: with a small damping λ the raw
    F⁻¹∇ is about 1/λ times longer than ∇ on directions outside the window, so without the
    rescaling the learning rate would depend on λ. M-FAC therefore takes SGD-sized steps
    (learning rates like SGD's; ``momentum`` 0.9 is usually needed).

    Arguments:
        params: parameters; lr: step size; weight_decay: decoupled decay.
        window: m, number of stored gradients; damping: λ; momentum: heavy ball on the direction.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, window: int = 16, damping: float = 1e-4,
                 momentum: float = 0.0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, window=window, damping=damping,
                                      momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return None
        group = self.param_groups[0]
        m, lam = group["window"], group["damping"]
        st = self.state[params[0]]
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        if "window" not in st or st["window"].shape != (m, flat.numel()):
            st["window"] = flat.new_zeros(m, flat.numel())
            st["gram"] = torch.zeros(m, m, dtype=torch.float64, device=flat.device)  # kept float64 on reload
            st["filled"], st["next"] = 0, 0
        win, gram = st["window"], st["gram"]
        # sliding window as a ring buffer; the Gram matrix G Gᵀ is updated by one row/column per
        # step (m·d work) instead of being recomputed (m²·d)
        slot, filled = st["next"], min(st["filled"] + 1, m)
        dots = (win[:filled] @ flat).double()
        dots[slot] = flat.double().dot(flat.double())
        win[slot] = flat
        gram[slot, :filled] = dots
        gram[:filled, slot] = dots
        st["next"], st["filled"] = (slot + 1) % m, filled
        # Woodbury (see woodbury_ihvp); G v = dots because v is the newest gradient
        system = gram[:filled, :filled] + filled * lam * torch.eye(filled, dtype=torch.float64, device=flat.device)
        sol = torch.linalg.solve(system, dots)
        direction = (flat - win[:filled].t() @ sol.to(flat.dtype)) / lam
        # scale so that the step length matches the gradient's (λ-independent learning rate)
        direction = direction * (flat.norm() / direction.norm().clamp_min(1e-30))
        if group["momentum"]:
            buf = st.get("momentum_buffer")
            buf = direction.clone() if buf is None else buf.mul_(group["momentum"]).add_(direction)
            st["momentum_buffer"] = buf
            direction = buf
        offset = 0
        for p in params:
            n = p.numel()
            if group["weight_decay"]:
                p.mul_(1 - group["lr"] * group["weight_decay"])
            p.add_(direction[offset:offset + n].view_as(p), alpha=-group["lr"])
            offset += n
        return None
