"""Search spaces: what is tuned for an optimizer, over which range, and how a point of the space
becomes hyperparameters. Each registry entry declares its own space (``OptimizerSpec.space``);
the tuning protocol draws every optimizer's trials from its space with the same quasi-random
sequence and the same number of trials."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kryflow._registry import ParameterError

__all__ = ["Dim", "SHARED_SPACE", "apply_setting", "check_space", "draw_settings", "space_from_config"]


@dataclass(frozen=True)
class Dim:
    """One tuned hyperparameter: the interval ``[low, high]``, searched on a log scale when
    ``log`` (then ``low > 0``), rounded to integers when ``integer``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def at(self, u: float) -> float | int:
        """The value at ``u`` in ``[0, 1)`` of the unit interval mapped onto the range."""
        if self.log:
            value = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + u * (self.high - self.low)
        if self.integer:
            return int(min(max(round(value), math.ceil(self.low)), math.floor(self.high)))
        return float(value)

    def check(self, name: str) -> None:
        """Raise :class:`ParameterError` (param ``name``) for an empty, inverted or log range through zero."""
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
                raise ParameterError(f"{name}: range bounds must be finite numbers, got [{self.low}, {self.high}]", name)
        if self.high < self.low:
            raise ParameterError(f"{name}: inverted range [{self.low}, {self.high}] (low must not exceed high)", name)
        if self.log and self.low <= 0:
            raise ParameterError(f"{name}: a log-scaled range must stay above zero, got [{self.low}, {self.high}]; "
                                 "set log: false or a positive low", name)
        if self.integer and math.floor(self.high) < math.ceil(self.low):
            raise ParameterError(f"{name}: no integer in [{self.low}, {self.high}]", name)


#: Tuned for every optimizer: the fraction of the step budget spent warming the learning rate up.
SHARED_SPACE: dict[str, Dim] = {"warmup_fraction": Dim(0.0, 0.2)}

# names that are not optimizer keyword arguments: where a sampled value goes
_BETA = {"one_minus_beta1": 0, "one_minus_beta2": 1}


def tunable_names(spec: Any) -> set[str]:
    """What a space of ``spec`` may name: lr, weight decay, its extras, 1-beta_i, the warm-up fraction."""
    names = {"lr", "weight_decay", *spec.defaults, *SHARED_SPACE}
    if "betas" in spec.defaults:
        names |= set(_BETA)
    return names - {"betas", "seed"}


def check_space(spec: Any, space: Mapping[str, Dim]) -> None:
    """An optimizer's space: not empty, every name tunable for ``spec``, every range valid."""
    if not space:
        raise ParameterError(f"the search space of optimizer {spec.name!r} is empty; tune at least lr", None)
    valid = tunable_names(spec)
    for name, dim in space.items():
        if name not in valid:
            raise ParameterError(f"{name!r} is not a hyperparameter of optimizer {spec.name!r}; tunable: "
                                 f"{', '.join(sorted(valid))}", name)
        dim.check(name)


def space_from_config(spec: Any, override: Mapping[str, Any] | None) -> dict[str, Dim]:
    """The optimizer's declared space plus the shared one, with config ``override``
    (``{name: {low, high, log, integer}}``; a name set to null is not tuned)."""
    if override is not None and not override:
        raise ParameterError(f"an empty search space for optimizer {spec.name!r}: give ranges to change, or leave "
                             "the optimizer out of tuning.space to search its declared space", None)
    space = {**spec.space, **SHARED_SPACE}
    for name, value in (override or {}).items():
        if value is None:
            space.pop(name, None)
            continue
        if not isinstance(value, Mapping) or not {"low", "high"} <= set(value):
            raise ParameterError(f"{name}: give {{low, high}} (and optionally log, integer), got {value!r}", name)
        unknown = set(value) - {"low", "high", "log", "integer"}
        if unknown:
            raise ParameterError(f"{name}: unknown range keys {sorted(unknown)}; use low, high, log, integer", name)
        space[name] = Dim(value["low"], value["high"], bool(value.get("log", False)), bool(value.get("integer", False)))
    check_space(spec, space)
    return space


def draw_settings(space: Mapping[str, Dim], trials: int, seed: int, stream: str) -> list[dict[str, Any]]:
    """``trials`` points of ``space`` from a scrambled Halton sequence.

    **Arguments:**
        space: name -> :class:`Dim`, drawn in sorted name order.
        trials: number of points (>= 1).
        seed, stream: the sequence is scrambled with a seed from both (``stream`` names the
            workload and optimizer), so the same config and seed give the same trials anywhere.

    **Returns:** one ``{name: value}`` per trial, in trial order.
    """
    from scipy.stats import qmc

    names = sorted(space)
    digest = hashlib.sha256(f"{int(seed)}/{stream}".encode()).digest()
    points = qmc.Halton(len(names), scramble=True, seed=np.random.default_rng(list(digest[:16]))).random(trials)
    return [{n: space[n].at(float(u)) for n, u in zip(names, row)} for row in points]


def apply_setting(spec: Any, base: Mapping[str, Any], setting: Mapping[str, Any],
                  training: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Hyperparameters and training settings of one trial.

    **Arguments:**
        spec: the optimizer's registry entry. base: its configured hyperparameters (``lr``, extras).
        setting: a point of the space (:func:`draw_settings`). training: the ``training`` section.

    **Returns:** ``(hyperparameters, training)``: ``one_minus_beta{1,2}`` set ``betas``,
    ``warmup_fraction`` sets ``scheduler.warmup_steps`` (a fraction of ``max_steps``), every
    other name is the hyperparameter of that name.
    """
    hp = {k: v for k, v in base.items() if k != "name"}
    train = {**training, "scheduler": dict(training.get("scheduler") or {})}
    betas = list(hp.get("betas", spec.defaults.get("betas", ())))
    for name, value in setting.items():
        if name in _BETA:
            betas[_BETA[name]] = 1.0 - value
            hp["betas"] = list(betas)
        elif name == "warmup_fraction":
            steps = int(train.get("max_steps", 200))
            train["scheduler"]["warmup_steps"] = min(int(round(value * steps)), steps - 1)
        else:
            hp[name] = value
    return hp, train
