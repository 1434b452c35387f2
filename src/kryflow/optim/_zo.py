"""Zeroth-order SPSA / MeZO (Malladi et al. 2023): forward passes only, directions drawn from seeds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["ZerothOrderSPSA"]


def _seeded_generators(seed: int) -> Callable[[torch.device], torch.Generator]:
    """``device -> generator`` seeded with ``seed``, one per device, created on first use.

    Both direction modes draw z through this, parameter by parameter in order, so they draw the
    same numbers.
    """
    gens: dict[torch.device, torch.Generator] = {}

    def get(device: torch.device) -> torch.Generator:
        if device not in gens:
            gens[device] = torch.Generator(device=device)
            gens[device].manual_seed(seed)
        return gens[device]

    return get


class ZerothOrderSPSA(torch.optim.Optimizer):
    """Two-point SPSA with ``q`` Gaussian directions per step.

    ``ĝ = (1/q) Σ_j [(L(θ + ε z_j) − L(θ − ε z_j)) / (2ε)] z_j`` with ``z_j ~ N(0, I)`` over the
    real view of every parameter (spectral weights are real-stored, so no half-scaling). For a
    quadratic ``L`` the central difference is exact and ``E[ĝ] = ∇L``; otherwise ĝ is unbiased
    for the gradient of the Gaussian-smoothed loss. Each ``z_j`` is drawn from a seed (MeZO's
    trick). With ``directions="regenerate"`` (the default, MeZO's way) ``z`` is drawn again from
    its seed for every pass over the parameters, one parameter at a time, so no copy of it is ever
    held: memory is that of inference plus one parameter-sized temporary. ``directions="buffer"``
    draws ``z`` once per direction into a kept flat buffer (one extra copy of the parameters, two
    fewer random passes per direction: faster where random numbers are costly, e.g. on CPU).
    Seeds come from this optimizer's own generator, whose state is saved.

    Arguments:
        params: parameters; lr: step size; weight_decay: decoupled decay.
        eps: perturbation size ε; q: directions per step; seed: generator seed;
        directions: ``"regenerate"`` or ``"buffer"`` (same numbers, different memory/time trade).
    """

    def __init__(
        self, params, lr: float, weight_decay: float = 0.0, eps: float = 1e-3, q: int = 1, seed: int = 0,
        directions: str = "regenerate",
    ):
        if directions not in ("regenerate", "buffer"):
            raise ValueError(f"directions must be 'regenerate' or 'buffer', got {directions!r}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, eps=eps, q=q))
        self.directions = directions
        self._buffers: dict[tuple, torch.Tensor] = {}
        self.generator = torch.Generator()  # CPU: only draws integer seeds
        self.generator.manual_seed(seed)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _directions(self, params: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
        """``z ~ N(0, I)`` for ``seed``, one tensor per parameter, drawn into kept flat buffers.

        Drawn through :func:`_seeded_generators` in parameter order, as :meth:`_perturb`
        regenerates them, so both modes use the same z.
        """
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault((p.device, p.dtype), []).append(i)
        views: list[torch.Tensor | None] = [None] * len(params)
        for (device, dtype), idx in groups.items():
            total = sum(params[i].numel() for i in idx)
            buf = self._buffers.get((device, dtype))
            if buf is None or buf.numel() != total:
                buf = self._buffers[(device, dtype)] = torch.empty(total, device=device, dtype=dtype)
            for i, z in zip(idx, buf.split([params[i].numel() for i in idx])):
                views[i] = z.view(params[i].shape)
        gen = _seeded_generators(seed)
        for p, z in zip(params, views):
            z.normal_(generator=gen(p.device))
        return views

    def _perturb(self, params: list[torch.Tensor], seed: int, alpha: float, z=None) -> None:
        """θ += alpha·z for the direction of ``seed``: from the kept buffer ``z`` or regenerated."""
        if z is not None:
            torch._foreach_add_(params, z, alpha=alpha)
            return
        gen = _seeded_generators(seed)
        for p in params:  # same draw order and generators as _directions: same z
            p.add_(torch.empty_like(p).normal_(generator=gen(p.device)), alpha=alpha)

    def _prepare(self, params: list[torch.Tensor], seed: int):
        return self._directions(params, seed) if self.directions == "buffer" else None

    @torch.no_grad()
    def projected_gradients(self, loss_fn: Callable[[], torch.Tensor]) -> tuple[list[int], list[float], float]:
        """Evaluate the 2q perturbed losses.

        Returns:
            (seeds, projected derivatives (L+ − L−)/(2ε), mean of the 2q losses ≈ L(θ) + O(ε²)).
        """
        params = self._params()
        eps, q = self.param_groups[0]["eps"], self.param_groups[0]["q"]
        seeds = torch.randint(0, 2**62, (q,), generator=self.generator).tolist()
        proj, total = [], 0.0
        for s in seeds:
            lp, lm, z = self._loss_pair(params, s, eps, loss_fn)
            self._perturb(params, s, eps, z)
            proj.append((lp - lm) / (2 * eps))
            total += lp + lm
        return seeds, proj, total / (2 * q)

    def _loss_pair(self, params, seed: int, eps: float, loss_fn) -> tuple[float, float, Any]:
        """L(θ+εz) and L(θ−εz) for direction ``seed``; leaves the parameters at θ−εz."""
        z = self._prepare(params, seed)
        self._perturb(params, seed, eps, z)
        lp = float(loss_fn())
        self._perturb(params, seed, -2 * eps, z)
        return lp, float(loss_fn()), z

    @torch.no_grad()
    def gradient_estimate(self, loss_fn: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
        """ĝ as dense tensors (for tests and diagnostics; the step never materialises it)."""
        params = self._params()
        seeds, proj, _ = self.projected_gradients(loss_fn)
        est = [torch.zeros_like(p) for p in params]
        for s, c in zip(seeds, proj):
            torch._foreach_add_(est, self._directions(params, s), alpha=c / len(seeds))
        if self.directions == "regenerate":
            self._buffers.clear()  # diagnostics only: hold nothing between steps
        return est

    @torch.no_grad()
    def step_with(self, loss_fn: Callable[[], torch.Tensor]) -> float:
        """One SPSA step; returns the mean of the perturbed losses.

        Per direction: θ+εz → L+, θ−εz → L−, then one pass θ += (ε − lr·c/q) z that restores θ
        and applies the update together (three passes over the parameters; z regenerated in each,
        or drawn once with ``directions="buffer"``).
        """
        params = self._params()
        group = self.param_groups[0]
        eps, q, lr = group["eps"], group["q"], group["lr"]
        seeds = torch.randint(0, 2**62, (q,), generator=self.generator).tolist()
        total = 0.0
        for s in seeds:
            lp, lm, z = self._loss_pair(params, s, eps, loss_fn)
            c = (lp - lm) / (2 * eps)
            # a NaN projection restores θ without updating; the trainer's divergence check sees the loss
            self._perturb(params, s, eps - (lr * c / q if c == c else 0.0), z)
            total += lp + lm
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        return total / (2 * q)

    def step(self, closure=None):
        if closure is None:
            raise ValueError("ZerothOrderSPSA.step needs a closure returning the loss (use StepRunner.step)")
        return self.step_with(closure)
