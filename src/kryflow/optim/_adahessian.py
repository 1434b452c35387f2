"""AdaHessian (Yao et al. 2021) with the delayed Hessian update, on every kryflow model.

Step ``t`` (decoupled weight decay λ, Hessian power ``k``):

* on each of the first ``hessian_warmup`` steps and then every ``update_period`` steps (the
  delayed Hessian update of the paper): a Hutchinson
  estimate of the Hessian diagonal ``D = mean_s z_s ⊙ (H z_s)`` with Rademacher ``z_s``
  (``num_samples`` probes), spatially averaged as ``|D|`` over the kernel of each k×k convolution
  (the paper's block averaging; the spatial weights of spectral layers are per mode and not
  averaged), then ``v ← β₂ v + (1 − β₂) D²``;
* every step: ``m ← β₁ m + (1 − β₁) g`` and
  ``θ ← θ (1 − lr λ) − lr · m̂ / (v̂^{k/2} + ε)`` with ``m̂ = m / (1 − β₁ᵗ)`` and
  ``v̂ = v / (1 − β₂ⁿ)``, ``n`` the number of Hessian estimates so far.

The warm-up matters: reusing the first single-probe estimate for ``update_period`` steps lets
entries where that probe happened to give ``|D| ≈ 0`` take steps of ``lr · g / ε`` several times
in a row; on the peer Darcy FNO (lr 0.05, period 5) that diverged within 5 steps, whereas
estimating every step for the first 20 steps (``v`` then averages 20 probes) trained as well as
period 1. Bias-correcting ``v`` by the number of *estimates* (not steps) keeps the step size independent
of ``update_period``; pytorch-optimizer's AdaHessian corrects by the step count, which with a
period of 10 shrinks the denominator ~3× for the first thousands of steps.

The product ``H z`` needs the gradient with its graph (``create_graph=True``), which costs a
second backward pass through a larger graph. :meth:`AdaHessian.hessian_due` tells the
:class:`~kryflow.optim.StepRunner` on which steps to pay for it; the others are plain backward
steps, so the amortised step costs ``(period − 1) · plain + hessian`` over ``period`` steps.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AdaHessian"]


def _kernel_dims(model: nn.Module) -> dict[nn.Parameter, tuple[int, ...]]:
    """Weights of k×k convolutions (k > 1) and their spatial kernel axes."""
    dims = {}
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and any(k > 1 for k in m.kernel_size):
            dims[m.weight] = tuple(range(2, m.weight.dim()))
    return dims


class AdaHessian(torch.optim.Optimizer):
    """AdaHessian over ``model``'s parameters (a ``"create_graph"`` registry kind).

    Arguments:
        model: the network (its parameters are optimised; k×k conv kernels are block-averaged).
        lr: step size; weight_decay: decoupled weight decay λ.
        betas: (β₁, β₂) of the gradient and squared-Hessian-diagonal averages.
        eps: added to the denominator; hessian_power: k in ``v̂^{k/2}``.
        update_period: estimate the Hessian diagonal every this many steps (1: every step).
        num_samples: Rademacher probes per estimate.
        hessian_warmup: estimate on every one of the first this many steps.
        seed: seeds the probes (own generator).
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999),
                 eps: float = 1e-4, hessian_power: float = 1.0, update_period: int = 5, num_samples: int = 1,
                 hessian_warmup: int = 20, seed: int = 0):
        defaults = dict(lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, hessian_power=hessian_power)
        super().__init__([{"params": [p for p in model.parameters() if p.requires_grad], "step": 0,
                           "hessian_updates": 0}], defaults)
        self.update_period, self.num_samples, self.hessian_warmup = update_period, num_samples, hessian_warmup
        self._kernel_dims = _kernel_dims(model)
        dev = next(model.parameters()).device
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(seed)

    def hessian_due(self) -> bool:
        """Whether the next :meth:`step` estimates the Hessian (its gradients must carry a graph)."""
        step = self.param_groups[0]["step"]
        return step < self.hessian_warmup or step % self.update_period == 0

    def _hessian_diagonal(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        grads = [p.grad for p in params]
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        if not live:
            raise RuntimeError("AdaHessian: the gradients carry no graph; the Hessian step needs a backward "
                               "with create_graph=True (use the 'create_graph' StepRunner)")
        diag = [torch.zeros_like(p) for p in params]
        for s in range(self.num_samples):
            zs = [torch.randint(0, 2, params[i].shape, generator=self.generator, device=params[i].device)
                  .to(params[i].dtype).mul_(2).sub_(1) for i in live]
            hz = torch.autograd.grad([grads[i] for i in live], [params[i] for i in live], grad_outputs=zs,
                                     retain_graph=s < self.num_samples - 1, allow_unused=True)
            for i, h, z in zip(live, hz, zs):
                if h is not None:
                    diag[i].addcmul_(h, z, value=1.0 / self.num_samples)
        for i, p in enumerate(params):
            dims = self._kernel_dims.get(p)
            if dims:
                diag[i] = diag[i].abs().mean(dim=dims, keepdim=True).expand_as(p)
        return diag

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("AdaHessian.step takes no closure (use StepRunner.step)")
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return None
        beta1, beta2 = group["betas"]
        if self.hessian_due():
            with torch.enable_grad():
                diag = self._hessian_diagonal(params)
            for p, d in zip(params, diag):
                st = self.state[p]
                if "hessian_sq" not in st:
                    st["hessian_sq"] = torch.zeros_like(p)
                st["hessian_sq"].mul_(beta2).addcmul_(d, d, value=1 - beta2)
            group["hessian_updates"] += 1
        group["step"] += 1
        t, n = group["step"], group["hessian_updates"]
        lr, k = group["lr"], group["hessian_power"]
        bc1, bc2 = 1 - beta1**t, 1 - beta2**n
        for p in params:
            st = self.state[p]
            if "exp_avg" not in st:
                st["exp_avg"] = torch.zeros_like(p)
            m = st["exp_avg"]
            m.lerp_(p.grad.detach(), 1 - beta1)
            if "hessian_sq" not in st:
                continue  # no gradient at the last Hessian step: wait for a curvature estimate
            denom = (st["hessian_sq"] / bc2).pow_(k / 2).add_(group["eps"])
            if group["weight_decay"]:
                p.mul_(1 - lr * group["weight_decay"])
            p.addcdiv_(m, denom, value=-lr / bc1)
        return None
