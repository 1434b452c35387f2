"""The one place an optimizer name maps to code, and the step runners the trainer calls.

Every optimizer is driven through :meth:`StepRunner.step(loss_fn)`; how a step is taken is the
registry entry's ``kind``:

* ``"backward"``: zero_grad → loss.backward() → optimizer.step();
* ``"create_graph"``: backward with ``create_graph=True`` on the steps where the optimizer
  estimates the Hessian diagonal (Hutchinson methods; see ``StepRunner._hessian_due``), plain
  backward on the others;
* ``"closure"``: optimizer.step(closure) re-evaluating the loss (L-BFGS);
* ``"forward_only"``: perturbed forward passes, no autograd (zeroth-order);
* ``"hooks"``: layer hooks record activations/output gradients (K-FAC, MKOR).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from kryflow._registry import ParameterError, Registry, unknown_names

from ._adahessian import AdaHessian
from ._kfac import KFAC
from ._space import Dim
from ._mfac import MFAC
from ._mkor import MKOR
from ._zo import ZerothOrderSPSA

__all__ = ["OPTIMIZERS", "OptimizerSpec", "StepRunner", "build_optimizer", "build_scheduler", "scale_lr"]

KINDS = ("backward", "create_graph", "closure", "forward_only", "hooks")
FAMILIES = ("first_order", "curvature", "zeroth_order")


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry.

    Attributes:
        name: registry key.
        kind: how a step is taken (see module docstring).
        family: "first_order", "curvature" or "zeroth_order".
        defaults: extra hyperparameters (besides lr, weight_decay) and their defaults.
        factory: ``(model, lr, weight_decay, **extras) -> torch.optim.Optimizer``.
        lr_scaling: batch-size rule for :func:`scale_lr`: "linear", "sqrt" or "none".
        global_rng: draws from torch's global RNG inside step (saved in the runner state).
        description: one line for docs and config listings.
        label: the name figures and tables print.
        style: ``(colour, marker, line style)`` in figures; marker and line style pairs are unique
            per entry so greyscale prints tell optimizers apart. Registry order is figure order.
        space: what the tuning protocol searches (name -> :class:`~kryflow.optim.Dim`), beside
            the shared warm-up fraction; names as :func:`~kryflow.optim.apply_setting` reads them.
    """

    name: str
    kind: str
    family: str
    defaults: dict
    factory: Callable[..., torch.optim.Optimizer] = field(repr=False)
    lr_scaling: str = "sqrt"
    global_rng: bool = False
    description: str = ""
    label: str = ""
    style: tuple[str, str, str] = ("#777777", "o", "-")
    space: dict = field(default_factory=dict, repr=False)


def _po(cls_name: str):
    def make(model, lr, weight_decay, **extras):
        import pytorch_optimizer

        return getattr(pytorch_optimizer, cls_name)(model.parameters(), lr=lr, weight_decay=weight_decay, **extras)

    return make


def _torch(cls):
    def make(model, lr, weight_decay, **extras):
        return cls(model.parameters(), lr=lr, weight_decay=weight_decay, **extras)

    return make


def _balanced_2d(shape) -> tuple[int, int]:
    best = None
    for k in range(1, len(shape)):
        left, right = math.prod(shape[:k]), math.prod(shape[k:])
        if best is None or max(left, right) < max(best):
            best = (left, right)
    return best


def _kron(model, lr, weight_decay, **extras):
    """PSGD Kron on 2-D views of every parameter.

    pytorch-optimizer's Kron contracts one einsum over all axes of a tensor; without opt_einsum
    torch evaluates it left to right through huge outer products (an FNO spectral weight has 6
    axes: ~10 s per step on a tiny model). We therefore hand Kron a (dim0, rest) view sharing
    storage with each parameter (as other PSGD implementations merge dims), and copy gradients
    into the views before each step. The split point balances the two sides, since each side's
    triangular preconditioner costs O(side³).
    """
    import pytorch_optimizer

    params = [p for p in model.parameters() if p.requires_grad]
    views = [p.detach().view(_balanced_2d(p.shape)) if p.dim() > 2 else p.detach() for p in params]
    opt = pytorch_optimizer.Kron(views, lr=lr, weight_decay=weight_decay, **extras)

    def copy_grads(optimizer, args, kwargs):
        for p, v in zip(params, views):
            v.grad = None if p.grad is None else p.grad.reshape(v.shape)

    opt.register_step_pre_hook(copy_grads)
    return opt


def _lbfgs(model, lr, weight_decay, **extras):
    # weight decay is added to the closure's loss by the runner (LBFGS has no weight_decay argument)
    return torch.optim.LBFGS(model.parameters(), lr=lr, **extras)


_SPECS = [
    OptimizerSpec("sgd", "backward", "first_order", {"momentum": 0.9, "nesterov": False}, _torch(torch.optim.SGD),
                  lr_scaling="linear", description="SGD with (Nesterov) momentum",
                  label="SGD", style=("#000000", "o", "-"),
                  space={"lr": Dim(1e-3, 1.0, log=True)}),
    OptimizerSpec("adam", "backward", "first_order", {"betas": (0.9, 0.999), "eps": 1e-8}, _torch(torch.optim.Adam),
                  description="Adam (L2 weight decay)",
                  label="Adam", style=("#0072B2", "s", "-"),
                  space={"lr": Dim(1e-4, 3e-2, log=True), "one_minus_beta1": Dim(0.01, 0.5, log=True), "one_minus_beta2": Dim(1e-3, 0.1, log=True), "weight_decay": Dim(1e-6, 1e-2, log=True)}),
    OptimizerSpec("adamw", "backward", "first_order", {"betas": (0.9, 0.999), "eps": 1e-8},
                  _torch(torch.optim.AdamW), description="AdamW (decoupled weight decay)",
                  label="AdamW", style=("#56B4E9", "D", "--"),
                  space={"lr": Dim(1e-4, 3e-2, log=True), "one_minus_beta1": Dim(0.01, 0.5, log=True), "one_minus_beta2": Dim(1e-3, 0.1, log=True), "weight_decay": Dim(1e-6, 1e-2, log=True)}),
    OptimizerSpec("lbfgs", "closure", "curvature",
                  {"max_iter": 1, "max_eval": 10, "history_size": 10, "line_search_fn": "strong_wolfe"}, _lbfgs,
                  lr_scaling="none",
                  description="L-BFGS, one iteration per batch with a strong-Wolfe line search of up to max_eval losses",
                  label="L-BFGS", style=("#D55E00", "^", "-."),
                  space={"lr": Dim(0.05, 1.0, log=True)}),
    OptimizerSpec("adahessian", "create_graph", "curvature",
                  {"betas": (0.9, 0.999), "eps": 1e-4, "hessian_power": 1.0, "update_period": 5, "num_samples": 1,
                   "hessian_warmup": 20, "seed": 0},
                  lambda model, lr, weight_decay, **e: AdaHessian(model, lr=lr, weight_decay=weight_decay, **e),
                  description="AdaHessian, Hessian diagonal every update_period steps (delayed update)",
                  label="AdaHessian", style=("#009E73", "v", "-"),
                  space={"lr": Dim(1e-3, 0.5, log=True), "update_period": Dim(1, 20, log=True, integer=True)}),
    OptimizerSpec("sophiah", "create_graph", "curvature",
                  {"betas": (0.96, 0.99), "p": 0.01, "update_period": 10, "num_samples": 1},
                  _po("SophiaH"), global_rng=True, description="Sophia-H (pytorch-optimizer)",
                  label="Sophia-H", style=("#E69F00", "<", "--"),
                  # centred on the implementation's default lr (0.06): its clipped update moves each
                  # weight by at most lr, and below ~5e-3 no trial of the first study learned at all
                  space={"lr": Dim(3e-3, 1.0, log=True), "update_period": Dim(1, 20, log=True, integer=True)}),
    OptimizerSpec("shampoo", "backward", "curvature",
                  {"momentum": 0.0, "preconditioning_compute_steps": 1, "matrix_eps": 1e-6},
                  _po("Shampoo"), description="Shampoo (pytorch-optimizer)",
                  label="Shampoo", style=("#CC79A7", ">", "-."),
                  # without grafting its step scales with the gradient's fourth root: below ~5e-3 no trial
                  # of the first study learned, 0.01-0.06 did (diverging above), so the range centres there
                  space={"lr": Dim(2e-3, 0.3, log=True), "preconditioning_compute_steps": Dim(1, 50, log=True, integer=True),
                         "matrix_eps": Dim(1e-8, 1e-4, log=True)}),
    OptimizerSpec("soap", "backward", "curvature", {"betas": (0.95, 0.95), "precondition_frequency": 10, "eps": 1e-8},
                  _po("SOAP"), description="SOAP (pytorch-optimizer)",
                  label="SOAP", style=("#882255", "p", ":"),
                  space={"lr": Dim(1e-4, 0.1, log=True), "precondition_frequency": Dim(1, 50, log=True, integer=True),
                         "eps": Dim(1e-10, 1e-6, log=True)}),
    OptimizerSpec("kron", "backward", "curvature", {"momentum": 0.9, "pre_conditioner_update_probability": None},
                  _kron, global_rng=True,
                  description="PSGD Kron (pytorch-optimizer)",
                  label="Kron (PSGD)", style=("#44AA99", "h", ":"),
                  space={"lr": Dim(1e-4, 0.1, log=True), "pre_conditioner_update_probability": Dim(0.02, 1.0, log=True)}),
    OptimizerSpec("kfac", "hooks", "curvature",
                  {"damping": 1e-2, "factor_decay": 0.95, "factor_every": 20, "inverse_every": 100, "momentum": 0.5,
                   "kl_clip": 1e-4, "fisher": "empirical", "approx": "expand", "seed": 0, "stats_rows": 8192},
                  lambda model, lr, weight_decay, **e: KFAC(model, lr=lr, weight_decay=weight_decay, **e),
                  description="K-FAC on Linear/Conv/spectral layers",
                  label="K-FAC", style=("#332288", "*", "--"),
                  space={"lr": Dim(1e-3, 0.5, log=True), "damping": Dim(1e-4, 0.1, log=True),
                         "inverse_every": Dim(10, 200, log=True, integer=True)}),
    OptimizerSpec("mfac", "backward", "curvature", {"window": 16, "damping": 1e-4, "momentum": 0.0},
                  _torch(MFAC), lr_scaling="linear",
                  description="M-FAC: windowed empirical Fisher inverse (Woodbury), step normalised to |grad|",
                  label="M-FAC", style=("#661100", "P", "-"),
                  space={"lr": Dim(1e-3, 1.0, log=True), "window": Dim(4, 32, log=True, integer=True)}),
    OptimizerSpec("mkor", "hooks", "curvature",
                  {"factor_decay": 0.95, "damping": 1e-2, "refresh_every": 100, "momentum": 0.9},
                  lambda model, lr, weight_decay, **e: MKOR(model, lr=lr, weight_decay=weight_decay, **e),
                  lr_scaling="linear", description="MKOR: rank-1 Sherman-Morrison Kronecker inverses",
                  label="MKOR", style=("#AA4499", "X", "-."),
                  space={"lr": Dim(1e-2, 1.0, log=True), "damping": Dim(1e-4, 0.1, log=True),
                         "refresh_every": Dim(10, 200, log=True, integer=True)}),
    OptimizerSpec("mkor_h", "hooks", "curvature",
                  {"factor_decay": 0.95, "damping": 1e-2, "refresh_every": 100, "momentum": 0.9, "check_every": 20,
                   "switch_threshold": 1e-3},
                  lambda model, lr, weight_decay, **e: MKOR(model, lr=lr, weight_decay=weight_decay, hybrid=True, **e),
                  lr_scaling="linear",
                  description="MKOR-H: MKOR that switches to momentum SGD when second-order steps stop helping",
                  label="MKOR-H", style=("#997700", "d", "--"),
                  space={"lr": Dim(1e-2, 1.0, log=True), "damping": Dim(1e-4, 0.1, log=True),
                         "refresh_every": Dim(10, 200, log=True, integer=True)}),
    OptimizerSpec("zo_spsa", "forward_only", "zeroth_order", {"eps": 1e-3, "q": 1, "seed": 0, "directions": "regenerate"},
                  _torch(ZerothOrderSPSA),
                  lr_scaling="linear", description="MeZO-style two-point SPSA, q seeded Gaussian directions",
                  label="ZO-SPSA", style=("#777777", "8", ":"),
                  space={"lr": Dim(1e-5, 1e-2, log=True), "eps": Dim(1e-4, 1e-2, log=True), "q": Dim(1, 8, log=True, integer=True)}),
]
#: The optimizers by name, in figure order (first order, quasi-Newton, Hutchinson curvature,
#: Kronecker/Shampoo-type preconditioners, layer-hook second order, zeroth order).
OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")
for _s in _SPECS:
    OPTIMIZERS.register(_s.name, _s)

# Range checks for extras: key -> (predicate, requirement text)
_POS = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0")
_NONNEG = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "a number >= 0")
_UNIT = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "a number in [0, 1)")
_POSINT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")
_NONNEG_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0")
_BETAS = (
    lambda v: isinstance(v, (list, tuple)) and len(v) in (2, 3) and all(_UNIT[0](b) for b in v),
    "a list of 2 numbers in [0, 1)",
)
_CHECKS = {
    "momentum": _UNIT, "eps": _POS, "damping": _POS, "factor_decay": _UNIT, "factor_every": _POSINT,
    "inverse_every": _POSINT, "max_eval": _POSINT, "refresh_every": _POSINT, "window": _POSINT, "q": _POSINT,
    "max_iter": _POSINT,
    "history_size": _POSINT, "update_period": _POSINT, "hessian_warmup": _NONNEG_INT, "num_samples": _POSINT,
    "check_every": _POSINT, "matrix_eps": _POS,
    "pre_conditioner_update_probability": (lambda v: v is None or (isinstance(v, (int, float)) and 0 < v <= 1),
                                           "null (the default schedule) or a number in (0, 1]"),
    "precondition_frequency": _POSINT, "preconditioning_compute_steps": _POSINT, "betas": _BETAS,
    "hessian_power": (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]"),
    "p": _POS, "switch_threshold": _NONNEG, "seed": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "kl_clip": (lambda v: v is None or (isinstance(v, (int, float)) and v > 0), "null or a number > 0"),
    "stats_rows": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                   "null (every row) or an integer >= 1"),
    "fisher": (lambda v: v in ("empirical", "mc", "exact"), "one of 'empirical', 'mc', 'exact'"),
    "directions": (lambda v: v in ("regenerate", "buffer"), "'regenerate' (MeZO: no copy of z) or 'buffer'"),
    "approx": (lambda v: v in ("mixed", "reduce", "expand"), "one of 'mixed', 'reduce', 'expand'"),
    "nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "line_search_fn": (lambda v: v in (None, "strong_wolfe"), "null or 'strong_wolfe'"),
}


def _spec(name: str) -> OptimizerSpec:
    return OPTIMIZERS[name]


def _validate(spec: OptimizerSpec, lr, weight_decay, extras: dict) -> dict:
    if not _POS[0](lr) or not math.isfinite(lr):
        raise ParameterError(f"lr must be a finite number > 0 for optimizer {spec.name!r}, got {lr!r}", "lr")
    if not _NONNEG[0](weight_decay):
        raise ParameterError(f"weight_decay must be a number >= 0 for optimizer {spec.name!r}, got {weight_decay!r}",
                             "weight_decay")
    unknown_names(extras, [*spec.defaults, "lr", "weight_decay"], f"optimizer {spec.name!r}", "hyperparameter")
    merged = {**spec.defaults, **extras}
    for key, value in merged.items():
        check = _CHECKS.get(key)
        if check is not None and not check[0](value):
            raise ParameterError(f"hyperparameter {key!r} of optimizer {spec.name!r} must be {check[1]}, "
                                 f"got {value!r}", key)
    if spec.name == "sgd" and merged["nesterov"] and merged["momentum"] == 0:
        raise ParameterError("optimizer 'sgd': nesterov=true needs momentum > 0", "nesterov")
    if "betas" in merged:
        merged["betas"] = tuple(merged["betas"])
    return merged


def check_hyperparameters(name: str, lr=None, weight_decay=0.0, **extras) -> dict:
    """Validate an optimizer's hyperparameters without building it (config checks use this).

    **Returns:** the merged extras (defaults filled in). Raises :class:`ParameterError` naming the key.
    """
    return _validate(_spec(name), lr, weight_decay, extras)


class StepRunner:
    """Takes one optimisation step given a loss closure; the trainer's only contact with optimizers.

    Attributes:
        optimizer: the underlying ``torch.optim.Optimizer`` (LR schedulers attach to it).
        spec: the registry entry.
    """

    def __init__(self, spec: OptimizerSpec, model: nn.Module, optimizer: torch.optim.Optimizer, weight_decay: float):
        self.spec, self.model, self.optimizer = spec, model, optimizer
        self._weight_decay = weight_decay

    def step(self, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Run forward (via ``loss_fn``), whatever gradient machinery the optimizer needs, and the update.

        Arguments:
            loss_fn: no-argument callable running the forward pass on the current batch and
                returning the scalar loss (no backward).

        Returns:
            The loss at the current batch (detached, 0-dim). ``last_grad_evals`` then holds the
            step's cost in gradient evaluations: (forward passes + 2 x backward passes) / 3, a
            backward pass costing about two forward ones.
        """
        forwards = [0]

        def counted() -> torch.Tensor:
            forwards[0] += 1
            return loss_fn()

        loss, backwards = getattr(self, f"_step_{self.spec.kind}")(counted)
        self.last_grad_evals = (forwards[0] + 2 * backwards) / 3.0
        return loss

    def _step_forward_only(self, loss_fn) -> tuple[torch.Tensor, int]:
        return torch.as_tensor(self.optimizer.step(loss_fn)), 0

    def _step_closure(self, loss_fn) -> tuple[torch.Tensor, int]:
        first: list[torch.Tensor] = []

        def closure():
            self._zero_grad()
            with torch.enable_grad():
                loss = loss_fn()
                total = loss
                if self._weight_decay:
                    total = loss + 0.5 * self._weight_decay * sum(p.pow(2).sum() for p in self.model.parameters())
                total.backward()
            first.append(loss.detach())
            return total

        self.optimizer.step(closure)
        return first[0], len(first)  # one backward per loss evaluation of the line search

    def _step_hooks(self, loss_fn) -> tuple[torch.Tensor, int]:
        opt = self.optimizer
        self._zero_grad()
        cap = opt.capture
        cap.enabled = opt.capture_enabled()
        try:
            loss = loss_fn()
        finally:
            cap.enabled = False
        try:
            opt.backward(loss)
        finally:
            cap.clear()
        if hasattr(opt, "observe_loss"):
            opt.observe_loss(loss.detach())
        opt.step()
        return loss.detach(), 1

    def _step_backward(self, loss_fn) -> tuple[torch.Tensor, int]:
        self._zero_grad()
        loss = loss_fn()
        loss.backward()
        self.optimizer.step()
        return loss.detach(), 1

    def _step_create_graph(self, loss_fn) -> tuple[torch.Tensor, int]:
        opt = self.optimizer
        self._zero_grad()
        loss = loss_fn()
        due = self._hessian_due()
        if due:
            # autograd.grad instead of backward(create_graph=True): same graph-carrying gradients
            # for the Hutchinson estimator, without the parameter↔grad reference cycle
            params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = g
        else:
            loss.backward()
        opt.step()
        # drop the graph held by .grad so memory does not grow across steps
        self._zero_grad()
        # a Hessian step adds one Hessian-vector product (a backward through the gradient) per sample
        return loss.detach(), 1 + (int(opt.defaults.get("num_samples", 1)) if due else 0)

    def _hessian_due(self) -> bool:
        """Whether the Hutchinson optimizer estimates the Hessian diagonal in this step.

        On other steps a plain backward suffices and avoids building the double-backward graph.
        An optimizer says so through ``hessian_due()`` (kryflow's AdaHessian); pytorch-optimizer's
        SophiaH estimates when ``param_groups[0]["step"] % update_period == 0`` (default period 10).
        """
        due = getattr(self.optimizer, "hessian_due", None)
        if due is not None:
            return bool(due())
        period = getattr(self.optimizer, "update_period", 1)
        return self.optimizer.param_groups[0].get("step", 0) % period == 0

    def _zero_grad(self) -> None:
        # both: the optimizer may hold views of the model's parameters (Kron)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        """Optimizer state plus the random-number state the step consumes (exact resume)."""
        state = {"optimizer": self.optimizer.state_dict(), "name": self.spec.name}
        gen = getattr(self.optimizer, "generator", None)
        if gen is not None:
            state["generator"] = gen.get_state()
        if self.spec.global_rng:
            state["torch_rng"] = torch.get_rng_state()
            state["numpy_rng"] = np.random.get_state()
            state["python_rng"] = random.getstate()
            if torch.cuda.is_available():
                state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("name", self.spec.name) != self.spec.name:
            raise ValueError(f"state was saved by optimizer {state['name']!r}, not {self.spec.name!r}; "
                             "resume with the same optimizer or start a fresh run")
        self.optimizer.load_state_dict(state["optimizer"])
        if "generator" in state:
            self.optimizer.generator.set_state(state["generator"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
            np.random.set_state(state["numpy_rng"])
            random.setstate(state["python_rng"])
            if "cuda_rng" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])


def build_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float = 0.0, **extras) -> StepRunner:
    """Build a registered optimizer for ``model`` wrapped in its :class:`StepRunner`.

    Raises:
        ValueError: unknown name, unknown extra, or out-of-range value (the message names the key).
    """
    spec = _spec(name)
    merged = _validate(spec, lr, weight_decay, extras)
    opt = spec.factory(model, lr=lr, weight_decay=weight_decay, **merged)
    return StepRunner(spec, model, opt, weight_decay)


def build_scheduler(runner: StepRunner, kind: str = "constant", total_steps: int = 1, warmup_steps: int = 0, **kw):
    """LR schedule on ``runner.optimizer``: linear warm-up then "constant", "cosine" or "step".

    Arguments:
        kind: "constant"; "cosine" (to ``min_factor`` × lr, default 0); "step" (× ``gamma``, default
            0.1, every ``step_size`` steps, default total_steps // 3).
        total_steps: planned number of steps (≥ 1); warmup_steps: 0 ≤ warmup < total_steps.
    """
    if kind not in ("constant", "cosine", "step"):
        raise ValueError(f"unknown schedule {kind!r}; valid: ['constant', 'cosine', 'step']")
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if not isinstance(warmup_steps, int) or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be an integer in [0, total_steps), got {warmup_steps!r}")
    allowed = {"constant": set(), "cosine": {"min_factor"}, "step": {"gamma", "step_size"}}[kind]
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for schedule {kind!r}; valid: {sorted(allowed)}")
    min_factor = kw.get("min_factor", 0.0)
    gamma = kw.get("gamma", 0.1)
    step_size = kw.get("step_size", max(1, total_steps // 3))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if kind == "constant":
            return 1.0
        if kind == "step":
            return gamma ** ((step - warmup_steps) // step_size)
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(runner.optimizer, factor)


def scale_lr(name: str, lr: float, batch_size: int, base_batch_size: int) -> float:
    """Batch-size learning-rate scaling: linear for SGD-like methods, square root for adaptive ones.

    SGD-like: sgd, zo_spsa, and mfac/mkor/mkor_h (their steps are normalised to the gradient
    norm, so they scale like SGD). L-BFGS (line search) is not scaled. The rule of each entry is
    ``OPTIMIZERS[name].lr_scaling``.
    """
    spec = _spec(name)
    if batch_size < 1 or base_batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got batch_size={batch_size}, base_batch_size={base_batch_size}")
    ratio = batch_size / base_batch_size
    return lr * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[spec.lr_scaling]
