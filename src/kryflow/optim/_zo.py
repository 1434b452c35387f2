"""Zeroth-order SPSA / MeZO (Malladi et al. 2023): forward passes only, perturbations regenerated from seeds."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["ZerothOrderSPSA"]


class ZerothOrderSPSA(torch.optim.Optimizer):
    """Two-point SPSA with ``q`` Gaussian directions per step.

    ``ĝ = (1/q) Σ_j [(L(θ + ε z_j) − L(θ − ε z_j)) / (2ε)] z_j`` with ``z_j ~ N(0, I)`` over the
    real view of every parameter (spectral weights are real-stored, so no half-scaling). For a
    quadratic ``L`` the central difference is exact and ``E[ĝ] = ∇L``; otherwise ĝ is unbiased
    for the gradient of the Gaussian-smoothed loss. Each ``z_j`` is regenerated from a seed
    (MeZO's trick) — perturb, evaluate, un-perturb and update never hold a second copy of the
    parameters. Seeds come from this optimizer's own generator, whose state is saved.

    Arguments:
        params: parameters; lr: step size; weight_decay: decoupled decay.
        eps: perturbation size ε; q: directions per step; seed: generator seed.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, eps: float = 1e-3, q: int = 1, seed: int = 0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, eps=eps, q=q))
        self.generator = torch.Generator()  # CPU: only draws integer seeds
        self.generator.manual_seed(seed)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _perturb(self, params, seed: int, scale: float) -> None:
        gens: dict[torch.device, torch.Generator] = {}
        for p in params:
            g = gens.get(p.device)
            if g is None:
                g = gens[p.device] = torch.Generator(device=p.device)
                g.manual_seed(seed)
            z = torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype)
            p.add_(z, alpha=scale)

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
            self._perturb(params, s, eps)
            lp = float(loss_fn())
            self._perturb(params, s, -2 * eps)
            lm = float(loss_fn())
            self._perturb(params, s, eps)
            proj.append((lp - lm) / (2 * eps))
            total += lp + lm
        return seeds, proj, total / (2 * q)

    @torch.no_grad()
    def gradient_estimate(self, loss_fn: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
        """ĝ as dense tensors (for tests and diagnostics; the step never materialises it)."""
        params = self._params()
        seeds, proj, _ = self.projected_gradients(loss_fn)
        est = [torch.zeros_like(p) for p in params]
        for s, c in zip(seeds, proj):
            gens = {}
            for e, p in zip(est, params):
                g = gens.get(p.device)
                if g is None:
                    g = gens[p.device] = torch.Generator(device=p.device)
                    g.manual_seed(s)
                e.add_(torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype), alpha=c / len(seeds))
        return est

    @torch.no_grad()
    def step_with(self, loss_fn: Callable[[], torch.Tensor]) -> float:
        """One SPSA step; returns the mean of the perturbed losses.

        Per direction: θ+εz → L+, θ−εz → L−, then one pass θ += (ε − lr·c/q) z that restores θ
        and applies the update together (three regenerations of z instead of four).
        """
        params = self._params()
        group = self.param_groups[0]
        eps, q, lr = group["eps"], group["q"], group["lr"]
        seeds = torch.randint(0, 2**62, (q,), generator=self.generator).tolist()
        total = 0.0
        for s in seeds:
            self._perturb(params, s, eps)
            lp = float(loss_fn())
            self._perturb(params, s, -2 * eps)
            lm = float(loss_fn())
            c = (lp - lm) / (2 * eps)
            # a NaN projection restores θ without updating; the trainer's divergence check sees the loss
            self._perturb(params, s, eps - (lr * c / q if c == c else 0.0))
            total += lp + lm
        if group["weight_decay"]:
            for p in params:
                p.mul_(1 - lr * group["weight_decay"])
        return total / (2 * q)

    def step(self, closure=None):
        if closure is None:
            raise ValueError("ZerothOrderSPSA.step needs a closure returning the loss (use StepRunner.step)")
        return self.step_with(closure)
