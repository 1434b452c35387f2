"""Trial outcomes on the validation split, the selection of a setting, and a workload's target
and budget from the reference's reruns. Nothing here reads a test split."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._report import time_to_target

__all__ = ["budget_kind", "budgeted_training", "select_trials", "trial_record", "tuned_cell", "workload_budget"]


def _history(path: Path):
    import pandas as pd

    return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()


def trial_record(run_dir: str | Path, target: float | None = None) -> dict[str, Any]:
    """What a finished (or failed) trial or rerun reached, from its ``history.csv`` and ``train.json``.

    **Returns:** ``status``, ``best_val_rel_l2`` (lowest validation error seen; inf when the run
    diverged, failed or never validated), ``steps``, ``train_seconds`` and, with ``target``, its
    ``time_to_target`` (``{"step", "seconds", "grad_evals"}`` or None when not reached).
    """
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "train.json").read_text()) if (run_dir / "train.json").exists() else {}
    status = info.get("status", "failed")
    hist = _history(run_dir / "history.csv")
    val = hist["val_rel_l2"].to_numpy(dtype=float) if "val_rel_l2" in hist else np.array([])
    val = val[np.isfinite(val)]
    best = float(val.min()) if val.size and status == "finished" else math.inf
    rec = {"status": status, "best_val_rel_l2": best, "steps": info.get("steps"), "train_seconds": info.get("train_seconds")}
    if target is not None:
        rec["time_to_target"] = time_to_target(hist, target) if status == "finished" else None
    return rec


def select_trials(records: Sequence[Mapping[str, Any]], studies: int) -> dict[str, Any]:
    """The best trial of every study and of all trials, by best validation error.

    **Arguments:**
        records: :func:`trial_record` of every trial, in trial order.
        studies: consecutive groups of equal size the trials form.

    **Returns:** ``{"selected": trial index, "studies": [{"study", "trial", "best_val_rel_l2"}]}``;
    ties go to the lower trial index, a trial that diverged or failed never wins unless all did.
    """
    best = [float(r["best_val_rel_l2"]) for r in records]
    per = len(records) // studies
    out = []
    for s in range(studies):
        idx = range(s * per, (s + 1) * per)
        t = min(idx, key=lambda i: (best[i], i))
        out.append({"study": s, "trial": t, "best_val_rel_l2": best[t]})
    return {"selected": min(range(len(best)), key=lambda i: (best[i], i)), "studies": out}


def reference_target(best: Sequence[float]) -> float | None:
    """A workload's target error from the reference's reruns' best validation errors: their
    median, the upper one for an even count (with 2 seeds the worse of the two), so that at least
    half the reruns reach it and the median time to it is finite (numpy's mean of the middle two
    would be reached by one of 2 seeds only). None when no rerun finished."""
    ordered = sorted(best)  # unfinished reruns (inf) sort last
    if not ordered or not math.isfinite(ordered[len(ordered) // 2]):
        return None
    return float(ordered[len(ordered) // 2])


def workload_budget(reference_runs: Sequence[str | Path], max_steps: int, factor: float) -> dict[str, Any]:
    """A workload's target and budget from the reference optimizer's reruns (one per seed).

    Target: the median over reruns of the best validation error (:func:`reference_target`). Wall budget: ``factor`` x the
    median over reruns of the seconds to reach that target (a rerun that never does counts as
    infinitely slow). The step budget is ``max_steps`` for every optimizer.
    """
    best = [trial_record(r)["best_val_rel_l2"] for r in reference_runs]
    target = reference_target(best)
    if target is None:
        raise ValueError(f"no reference rerun finished ({[str(r) for r in reference_runs]}) or fewer than half did: "
                         "no target can be set; check the reference optimizer's search space and budget")
    times = []
    for r in reference_runs:
        hit = trial_record(r, target)["time_to_target"]
        times.append(hit["seconds"] if hit else math.inf)
    reached = float(np.median(times))
    per_step = []
    for r in reference_runs:
        info = json.loads((Path(r) / "train.json").read_text())
        if info.get("steps") and info.get("grad_evals"):
            per_step.append(info["grad_evals"] / info["steps"])
    return {"target_val_rel_l2": target, "reference_best_val_rel_l2": best, "reference_seconds_to_target": times,
            "max_steps": int(max_steps), "max_seconds": factor * reached if math.isfinite(reached) else None,
            "max_grad_evals": float(np.median(per_step)) * max_steps if per_step else None,
            "budget_factor": factor, "kind": "steps+seconds" if math.isfinite(reached) else "steps"}


def budgeted_training(training: Mapping[str, Any], budget: Mapping[str, Any] | None,
                      zeroth_order: bool = False) -> dict[str, Any]:
    """``training`` under a workload budget: its steps, and its wall seconds where the budget has
    them. A zeroth-order optimizer is judged where it can work: on the budget's gradient-equivalent
    evaluations (what the reference spends in its step budget), with as many steps as that buys."""
    train = dict(training)
    if not budget:
        return train
    if zeroth_order and budget.get("max_grad_evals"):
        train["max_grad_evals"] = float(budget["max_grad_evals"])
        train["max_steps"] = int(math.ceil(1.5 * budget["max_grad_evals"]))  # two forward passes a step: 2/3 each
        train["max_seconds"] = None
        return train
    train["max_steps"] = int(budget["max_steps"])
    if budget.get("max_seconds"):
        train["max_seconds"] = float(budget["max_seconds"])
    return train


def budget_kind(budget: Mapping[str, Any] | None, zeroth_order: bool = False) -> str:
    """What a run's budget limits: ``steps``, ``steps+seconds`` or (zeroth order) ``grad_evals``."""
    if not budget:
        return "steps"
    return "grad_evals" if zeroth_order and budget.get("max_grad_evals") else budget["kind"]


def tuned_cell(spec: Mapping[str, Any], training: Mapping[str, Any], selected: Mapping[str, Any],
               budget: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A rerun of the selected setting: ``(cell spec, training)`` with the selected trial's
    hyperparameters and schedule, under the workload budget (None for the reference itself)."""
    from kryflow.optim import OPTIMIZERS

    opt = {"name": spec["optimizer"]["name"], **selected["hyperparameters"]}
    train = {**training, "scheduler": dict(selected["training"].get("scheduler") or training.get("scheduler") or {})}
    zeroth = OPTIMIZERS[opt["name"]].family == "zeroth_order"
    return {**spec, "optimizer": opt}, budgeted_training(train, budget, zeroth)
