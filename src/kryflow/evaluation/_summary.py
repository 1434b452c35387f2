"""The summary schema: the columns of ``results/summary.csv``, owned by evaluation and used by
aggregation, the figures and the tables. One row per training cell and seed."""

from __future__ import annotations

from .metrics import METRICS, Column
from .rollout import ROLLOUT_HORIZONS

__all__ = ["COST_COLUMNS", "ID_COLUMNS", "ROLLOUT_COLUMNS", "TRANSFER_COLUMNS", "column", "numeric_columns",
           "summary_columns"]

#: What identifies a row (``run_id``, the MLflow run, comes last in the file).
ID_COLUMNS = ("dataset", "model", "optimizer", "seed", "status", "run_id")

TRANSFER_COLUMNS = (Column("transfer_rel_l2", "Transfer rel. L2", "transfer", with_std=True),)

#: A next-step model's rollout (:mod:`kryflow.evaluation.rollout`; empty for final_state cells):
#: the teacher-forced one-step error, the rollout's error at fixed rolled-out steps and at its
#: last step, and how long its correlation with the truth stays at or above 0.8 (steps, time).
ROLLOUT_COLUMNS = (
    Column("onestep_rel_l2", "One step", "rollout"),
    *(Column(f"rollout_rel_l2_step{j}", f"Step {j}", "rollout", with_std=j == 1) for j in ROLLOUT_HORIZONS),
    Column("rollout_rel_l2_last", "Last step", "rollout", with_std=True),
    Column("rollout_corr_steps", "Corr. steps", "rollout", best="max"),
    Column("rollout_corr_time", "Corr. time", "rollout", best="max", with_std=True),
)

#: Training and inference cost; ``steps`` is the budget used, not a table column.
COST_COLUMNS = (
    Column("seconds_per_step", "s/step", "cost"),
    Column("train_seconds", "Train s", "cost"),
    Column("steps"),
    Column("peak_memory_mb", "Peak MB", "cost"),
    Column("inference_seconds_per_sample", "Inference s/sample", "cost"),
    Column("solver_seconds_per_sample", "Solver s/sample", "cost", best=None),
    Column("solver_one_time_seconds", "Solver one-time s", "cost", best=None),
    Column("speedup", "Speed-up", "cost", best="max"),
    Column("time_to_target_step", "Steps to target", "cost", integer=True),
    Column("time_to_target_seconds", "s to target", "cost"),
)


def numeric_columns() -> list[Column]:
    """Every numeric summary column: the registered metrics' (test split), transfer, rollout, cost."""
    return ([c for m in METRICS.values() for c in m.columns] + list(TRANSFER_COLUMNS) + list(ROLLOUT_COLUMNS)
            + list(COST_COLUMNS))


def summary_columns() -> list[str]:
    """The column names of ``results/summary.csv``, in file order."""
    return list(ID_COLUMNS[:-1]) + [c.name for c in numeric_columns()] + [ID_COLUMNS[-1]]


def column(name: str) -> Column:
    """The declared column ``name`` (KeyError if it is not a summary column)."""
    for c in numeric_columns():
        if c.name == name:
            return c
    raise KeyError(f"{name!r} is not a summary column; known: {[c.name for c in numeric_columns()]}")
