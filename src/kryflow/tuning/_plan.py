"""Which trials a workload and optimizer get: known from the config alone, before any job runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TrialPlan", "trial_plan", "study_batches"]


@dataclass(frozen=True)
class TrialPlan:
    """The trials of one (dataset, model, optimizer).

    **Attributes:**
        settings: one point of the optimizer's search space per trial, in trial order.
        studies: how many studies the trials split into (trial t belongs to study
            ``t // trials_per_study``).
        seed: the training seed every trial uses (the tuning seed).
    """

    settings: tuple[dict[str, Any], ...]
    studies: int
    seed: int

    @property
    def trials_per_study(self) -> int:
        return len(self.settings) // self.studies

    def study_of(self, trial: int) -> int:
        return trial // self.trials_per_study

    def batches(self, size: int) -> tuple[tuple[int, ...], ...]:
        """The trials in batches of at most ``size`` (:func:`study_batches`)."""
        return study_batches(len(self.settings), self.studies, size)


def study_batches(trials: int, studies: int, size: int) -> tuple[tuple[int, ...], ...]:
    """Trial indices in batches of at most ``size``, in trial order, a batch never spanning two
    studies (so a study's trials can be rerun, or moved to other hardware, batch by batch).

    **Arguments:**
        trials: trials per (dataset, model, optimizer); studies: consecutive groups of equal size.
        size: ``tuning.batch``.

    **Returns:** one tuple of trial indices per batch; batch ``b`` is the ``b``-th tuple.
    """
    if size < 1:
        raise ValueError(f"a batch holds at least one trial, got {size}")
    per = trials // studies
    out = []
    for s in range(studies):
        first, last = s * per, (s + 1) * per
        out += [tuple(range(t, min(t + size, last))) for t in range(first, last, size)]
    return tuple(out)


def trial_plan(config: Mapping, dataset: str, model: str, optimizer: str) -> TrialPlan:
    """The trials of ``optimizer`` (a config label) on the workload ``(dataset, model)``.

    The sequence is scrambled with a seed from ``tuning.seed`` and the three names, so the same
    config and seed give the same settings on any machine and in any job.
    """
    name = config["optimizers"][optimizer].get("name", optimizer)
    return _plan_of(config["tuning"], name, optimizer, dataset, model)


def _plan_of(tuning: Mapping, name: str, label: str, dataset: str, model: str) -> TrialPlan:
    """:func:`trial_plan` from the ``tuning`` section alone (what a trial job is handed)."""
    from kryflow.optim import OPTIMIZERS, draw_settings, space_from_config

    space = space_from_config(OPTIMIZERS[name], (tuning.get("space") or {}).get(label))
    settings = draw_settings(space, int(tuning["trials"]), int(tuning.get("seed", 0)), f"{dataset}/{model}/{label}")
    return TrialPlan(tuple(settings), int(tuning.get("studies", 1)), int(tuning.get("seed", 0)))
