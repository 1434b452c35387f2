"""Reading results (summary.csv, per-run history and predictions, solver benchmarks) and
aggregating over seeds.

Readers never raise on missing or malformed files: they return ``None`` (or an empty
frame) plus a reason, and the figure shows that reason instead of the plot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kryflow import layout
from kryflow.evaluation import ID_COLUMNS, numeric_columns
from kryflow.figures._style import OPTIMIZER_ORDER

__all__ = [
    "ID_COLUMNS",
    "METRIC_COLUMNS",
    "aggregate",
    "load_history",
    "load_predictions",
    "load_solver_benchmark",
    "read_summary",
    "sort_cells",
]

#: The numeric columns of the summary schema that evaluation owns (``ID_COLUMNS`` come from there too).
METRIC_COLUMNS = tuple(c.name for c in numeric_columns())
STATUSES = ("finished", "diverged", "failed")


def _optimizer_rank(name: str) -> int:
    return OPTIMIZER_ORDER.index(name) if name in OPTIMIZER_ORDER else len(OPTIMIZER_ORDER)


def sort_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by dataset, model (alphabetical), optimizer (registry order), seed."""
    if frame.empty:
        return frame.reset_index(drop=True)
    keys = pd.DataFrame(
        {
            "_d": frame["dataset"].astype(str),
            "_m": frame["model"].astype(str),
            "_r": frame["optimizer"].astype(str).map(_optimizer_rank),
            "_o": frame["optimizer"].astype(str),
        },
        index=frame.index,
    )
    if "seed" in frame.columns:
        keys["_s"] = pd.to_numeric(frame["seed"], errors="coerce")
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def normalise_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed copy: id columns as str, metrics numeric (empty -> NaN), status defaulted."""
    frame = frame.copy()
    for col in ("dataset", "model", "optimizer"):
        if col not in frame.columns:
            frame[col] = "unknown"
        frame[col] = frame[col].astype(str)
    if "seed" not in frame.columns:
        frame["seed"] = 0
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").fillna(-1).astype(np.int64)
    if "status" not in frame.columns:
        frame["status"] = "finished"
    frame["status"] = frame["status"].fillna("finished").astype(str).str.strip().str.lower()
    if "run_id" in frame.columns:
        frame["run_id"] = frame["run_id"].fillna("").astype(str)
    for col in frame.columns:
        if col not in ID_COLUMNS:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
    for col in METRIC_COLUMNS:
        if col not in frame.columns:
            frame[col] = np.nan
    return sort_cells(frame)


def read_summary(path: str | Path) -> tuple[pd.DataFrame, str | None]:
    """summary.csv as a typed frame, or an empty frame and the reason it could not be read."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in ID_COLUMNS})
        return normalise_summary(empty), f"cannot read {path.name}: {type(exc).__name__}"
    return normalise_summary(frame), None


def aggregate(summary: pd.DataFrame) -> pd.DataFrame:
    """Statistics over seeds per (dataset, model, optimizer).

    Metric statistics use finished runs only: a diverged run's numbers (if any) would
    otherwise dominate a mean. How many seeds ended in each status is kept alongside, so
    diverged and failed runs stay visible.

    Arguments:
        summary: one row per cell and seed, columns as in ``results/summary.csv``.

    Returns:
        one row per cell, sorted (dataset, model, optimizer in registry order), columns
        ``dataset, model, optimizer, n_seeds, n_finished, n_diverged, n_failed`` and, for
        every numeric metric ``m``: ``m_mean, m_std`` (sample std, ddof 1), ``m_min,
        m_max, m_n`` (number of finite values).
    """
    frame = normalise_summary(summary)
    metrics = [c for c in frame.columns if c not in ID_COLUMNS]
    rows: list[dict[str, Any]] = []
    for (dataset, model, optimizer), group in frame.groupby(
        ["dataset", "model", "optimizer"], sort=False
    ):
        row: dict[str, Any] = {"dataset": dataset, "model": model, "optimizer": optimizer}
        row["n_seeds"] = int(len(group))
        for status in STATUSES:
            row[f"n_{status}"] = int((group["status"] == status).sum())
        done = group[group["status"] == "finished"]
        for m in metrics:
            values = done[m].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            n = int(values.size)
            row[f"{m}_mean"] = float(values.mean()) if n else math.nan
            row[f"{m}_std"] = float(values.std(ddof=1)) if n > 1 else math.nan
            row[f"{m}_min"] = float(values.min()) if n else math.nan
            row[f"{m}_max"] = float(values.max()) if n else math.nan
            row[f"{m}_n"] = n
        rows.append(row)
    columns = ["dataset", "model", "optimizer", "n_seeds"] + [f"n_{s}" for s in STATUSES]
    columns += [f"{m}_{s}" for m in metrics for s in ("mean", "std", "min", "max", "n")]
    out = pd.DataFrame(rows, columns=columns)
    return sort_cells(out) if not out.empty else out


def run_dir(runs_root: Path, dataset: str, model: str, optimizer: str, seed: int) -> Path:
    return layout.run_dir(dataset, model, optimizer, seed, runs_root=runs_root)


def load_history(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """history.csv with numeric columns, rows sorted by step; ``None`` and a reason if unusable."""
    if not path.is_file():
        return None, "missing history.csv"
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        return None, f"unreadable history.csv ({type(exc).__name__})"
    if "step" not in frame.columns or "val_rel_l2" not in frame.columns:
        return None, "history.csv lacks step/val_rel_l2"
    for col in frame.columns:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64)
    if "seconds" not in frame.columns:
        frame["seconds"] = np.nan
    return frame.sort_values("step", kind="stable").reset_index(drop=True), None


#: Optional arrays of predictions.npz: channel names, and a next-step model's rollout (the states
#: at a few rolled-out steps, the per-step error and correlation curves).
_NAMES = ("x_names", "y_names", "state_names")
_ROLLOUT = ("rollout_steps", "rollout_times", "rollout_true", "rollout_pred", "rollout_rel_l2", "rollout_corr",
            "rollout_persistence_rel_l2")


def load_predictions(path: Path) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """x, y, pred arrays from predictions.npz (and, where saved, the channel names ``x_names``,
    ``y_names`` and a rollout's arrays); ``None`` and a reason if unusable."""
    if not path.is_file():
        return None, "missing predictions.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k], dtype=np.float64) for k in ("x", "y", "pred")}
            arrays.update({k: np.asarray(npz[k]).astype(str) for k in _NAMES if k in npz.files})
            arrays.update({k: np.asarray(npz[k], dtype=np.float64) for k in _ROLLOUT if k in npz.files})
    except (OSError, ValueError, KeyError) as exc:
        return None, f"unreadable predictions.npz ({type(exc).__name__})"
    if arrays["y"].shape != arrays["pred"].shape or arrays["y"].ndim < 3:
        return None, "predictions.npz: y and pred shapes disagree"
    if arrays["y"].shape[0] == 0 or arrays["x"].ndim < 3 or arrays["x"].shape[0] < arrays["y"].shape[0]:
        return None, "predictions.npz: no samples or x does not match y"
    return arrays, None


def load_solver_benchmark(path: Path) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Solver benchmark records; ``None`` and a reason if unusable."""
    path = Path(path)
    if not path.is_file():
        return None, f"missing {path.name}"
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"unreadable {path.name} ({type(exc).__name__})"
    if isinstance(records, dict):  # tolerate {"records": [...]} or a single record
        records = records.get("records", [records])
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        return None, f"{path.name} is not a list of records"
    return records, None


def finite(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64)
    return arr[np.isfinite(arr)]
