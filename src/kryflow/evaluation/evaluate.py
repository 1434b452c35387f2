"""Per-cell evaluation: test-split metrics on physical fields, resolution transfer, timing,
surrogate speed-up over the solver. Writes ``metrics.json`` and ``predictions.npz``.

A next-step model (its saved ``task``) is judged by autoregressive rollout from the first k states
of every test trajectory (:mod:`kryflow.evaluation.rollout`): the registered metrics score the
rolled-out states of all steps and trajectories pooled, the rollout columns add the error per step,
at fixed horizons and the correlation time, and ``onestep_rel_l2`` the teacher-forced one-step error."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._summary import summary_columns

__all__ = ["evaluate_cell", "SUMMARY_COLUMNS"]

#: The columns of ``results/summary.csv`` (see :mod:`kryflow.evaluation._summary`).
SUMMARY_COLUMNS = summary_columns()


@torch.no_grad()
def _predict(surrogate, loader, device, keep: int):
    preds, trues, xs = [], [], []
    for x, y in loader:
        x = x.to(device)
        preds.append(surrogate(x).cpu())
        trues.append(y.cpu())
        if sum(len(a) for a in xs) < keep:
            xs.append(x.cpu())
    pred = torch.cat(preds) if preds else torch.empty(0)
    true = torch.cat(trues) if trues else torch.empty(0)
    xin = torch.cat(xs)[:keep] if xs else torch.empty(0)
    return xin, pred, true


@torch.no_grad()
def _inference_seconds(surrogate, x: torch.Tensor, device, repeats: int = 3) -> float:
    """Seconds per sample of a batched forward pass (after one warm-up pass); ``surrogate`` may be
    any callable of the batch (a next-step model's whole rollout: seconds per trajectory)."""
    x = x.to(device)
    surrogate(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        surrogate(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best / x.shape[0]


def _solver_costs(dataset_path) -> tuple[float | None, float | None]:
    """``(steady-state solver seconds per sample, one-time seconds)`` of the dataset's generation.

    Steady state: each solve's seconds without its one-time set-up (``solver_setup_seconds``:
    symbolic analyses and set-ups reused by later solves), summed over a sample's solves and
    averaged over samples. One-time: the store's ``solver_one_time_seconds`` (the compiled
    kernels' first load, those set-ups, the solve-order computation), for the whole dataset.
    """
    from kryflow.data import open_dataset

    ds = open_dataset(dataset_path)
    try:
        if "solver_seconds" not in ds:
            return None, None
        sec = ds["solver_seconds"]
        if "solver_setup_seconds" in ds:
            sec = sec - ds["solver_setup_seconds"]
        if "solve" in sec.dims:
            sec = sec.sum("solve")
        one_time = ds.attrs.get("solver_one_time_seconds")
        return float(sec.mean()), (None if one_time is None else float(one_time))
    finally:
        ds.close()


def _check_compatible(surrogate, dataset_path, run_dir) -> None:
    """The model's spatial dimension and channels must match the dataset it is scored on."""
    from kryflow.data import TrajectoryLayout, grid_shape, open_dataset, trajectory_layout
    from kryflow.data._schema import ATTR_INPUTS, ATTR_TARGETS

    if surrogate.task is not None and surrogate.task.get("kind") == "next_step":
        want = TrajectoryLayout.from_dict(surrogate.task)
        try:
            got = trajectory_layout(dataset_path, want.task)
        except ValueError as exc:
            raise ValueError(f"model {run_dir / 'model.pt'} is a next-step model, but {exc}") from None
        if (got.static, got.states) != (want.static, want.states) or len(grid_shape(dataset_path)) != surrogate.dim:
            raise ValueError(f"model {run_dir / 'model.pt'} rolls out states {list(want.states)} with static inputs "
                             f"{list(want.static)}, but dataset {dataset_path} has {list(got.states)} and "
                             f"{list(got.static)}; evaluate it on data of the family it was trained on")
        return
    ds = open_dataset(dataset_path)
    try:
        n_in = len(ds.attrs.get(ATTR_INPUTS, []))
        n_out = len(ds.attrs.get(ATTR_TARGETS, []))
    finally:
        ds.close()
    dim = len(grid_shape(dataset_path))
    want_in, want_out = surrogate.x_mean.shape[1], surrogate.y_mean.shape[1]
    if dim != surrogate.dim or (n_in and n_in != want_in) or (n_out and n_out != want_out):
        raise ValueError(
            f"model {run_dir / 'model.pt'} is {surrogate.dim}-D with {want_in} input and {want_out} "
            f"output channels, but dataset {dataset_path} is {dim}-D with {n_in} inputs and {n_out} "
            "targets; evaluate the model on data of the family and dimension it was trained on"
        )


def _rollout_of(surrogate, dataset_path, device) -> tuple[dict, list[float]]:
    """Every test trajectory rolled out (:func:`~kryflow.evaluation.rollout.rollout_split`) and the
    times of its rolled-out steps after the last given state."""
    from kryflow.data import ChunkReader, Task
    from kryflow.evaluation.rollout import rollout_split

    reader = ChunkReader(dataset_path, "test", Task.from_config(
        {k: surrogate.task[k] for k in ("kind", "history", "horizon")}))
    k, times = reader.layout.task.history, reader.layout.times
    return rollout_split(surrogate, (reader[i] for i in range(len(reader))), device), \
        [t - times[k - 1] for t in times[k:]]


def _transfer_rel_l2(surrogate, transfer_path, device) -> float | None:
    """Mean relative L2 on the finer-grid test set (NaN when the prediction is not finite); a
    next-step model's over its rollouts' steps."""
    from kryflow.data import make_loader
    from kryflow.evaluation.metrics import relative_l2

    if transfer_path is None:
        return None
    if surrogate.task is not None and surrogate.task.get("kind") == "next_step":
        r, _ = _rollout_of(surrogate, transfer_path, device)
        pred, true = r["pred"].flatten(0, 1), r["true"].flatten(0, 1)
        ok = pred.numel() and bool(torch.isfinite(pred).all())
        return float(np.mean(np.asarray(relative_l2(pred, true)))) if ok else float("nan")
    loader = make_loader(transfer_path, "test", batch_size=8, shuffle=False, device=device)
    _, pred, true = _predict(surrogate, loader, device, keep=0)
    if pred.numel() and bool(torch.isfinite(pred).all()):
        return float(np.mean(np.asarray(relative_l2(pred, true))))
    return float("nan")


def _costs(train_info: Mapping, inference_seconds: float, dataset_path) -> dict[str, Any]:
    out = {k: train_info.get(k) for k in ("seconds_per_step", "train_seconds", "steps", "peak_memory_mb")}
    out["inference_seconds_per_sample"] = inference_seconds
    solver_s, one_time = _solver_costs(dataset_path)
    out["solver_seconds_per_sample"] = solver_s
    out["solver_one_time_seconds"] = one_time
    # the surrogate against the solver's steady-state cost; the one-time cost is stated beside it
    out["speedup"] = (solver_s / out["inference_seconds_per_sample"]) if solver_s else None
    return out


def _time_to_target(history_csv: Path, targets: Sequence[float]) -> dict[str, Any]:
    """Time to every target, and the summary's single column for the tightest one."""
    import pandas as pd

    from kryflow.evaluation.metrics import time_to_target

    history = pd.read_csv(history_csv) if history_csv.exists() else pd.DataFrame()
    ttt = time_to_target(history, list(targets)) if len(history) else {}
    # the summary's single time-to-target column uses the tightest target that any run can reach
    tight = min(targets) if targets else None
    hit = ttt.get(tight) if tight is not None else None
    return {"time_to_target": {str(k): v for k, v in ttt.items()},
            "time_to_target_step": hit["step"] if hit else None,
            "time_to_target_seconds": hit["seconds"] if hit else None,
            "time_to_target_value": tight}


#: Rolled-out steps kept in predictions.npz for the figures (evenly spaced, the last included).
_KEPT_STEPS = 5


def _score_rollout(surrogate, dataset_path, device, num_predictions: int,
                   metrics: dict) -> tuple[float, dict[str, np.ndarray]]:
    """A next-step model's test scores into ``metrics``; returns the seconds one trajectory's
    rollout takes (batched) and the arrays of predictions.npz."""
    from kryflow.data import TrajectoryLayout, make_loader
    from kryflow.evaluation.metrics import relative_l2, score_test_split
    from kryflow.evaluation.rollout import rollout, rollout_errors, rollout_summary

    layout = TrajectoryLayout.from_dict(surrogate.task)
    r, times = _rollout_of(surrogate, dataset_path, device)
    pred, true = r["pred"], r["true"]  # (N, T, C, *grid)
    metrics.update(score_test_split(pred.flatten(0, 1), true.flatten(0, 1)))
    metrics.update(rollout_summary(pred, true, times))
    # the trivial forecast beside it: the last given state held (a model must beat this to be useful)
    held = r["history"][:, -1:].expand_as(true)
    metrics["rollout_persistence_rel_l2"] = [float(v) for v in rollout_errors(held, true).mean(0)]
    # teacher-forced one step: what training minimises, beside what the rollout accumulates
    loader = make_loader(dataset_path, "test", batch_size=32, shuffle=False, device=device,
                         task=layout.task.teacher_forced())
    _, p1, t1 = _predict(surrogate, loader, device, keep=0)
    ok = p1.numel() and bool(torch.isfinite(p1).all())
    metrics["onestep_rel_l2"] = float(np.mean(np.asarray(relative_l2(p1, t1)))) if ok else float("nan")
    # inference: one rollout of a block of trajectories (after a warm-up call), per trajectory
    n = min(8, pred.shape[0])
    static, history = r["static"][:n].to(device), r["history"][:n].to(device)
    seconds = _inference_seconds(lambda _x: rollout(surrogate, layout, static, history, pred.shape[1]), static,
                                 device)
    k = min(num_predictions, pred.shape[0])
    steps = np.unique(np.linspace(0, pred.shape[1] - 1, min(_KEPT_STEPS, pred.shape[1])).round().astype(int))
    arrays = {"x": layout.model_input(r["static"][:k], r["history"][:k]).numpy(),
              "y": true[:k, -1].numpy(), "pred": pred[:k, -1].numpy(),
              "x_names": np.asarray(layout.input_names()),
              "y_names": np.asarray([f"{s}[end]" for s in layout.states]),
              "state_names": np.asarray(layout.states), "rollout_steps": steps + 1,
              "rollout_true": true[:k, steps].numpy(), "rollout_pred": pred[:k, steps].numpy(),
              "rollout_times": np.asarray(times), "rollout_rel_l2": np.asarray(metrics["rollout_rel_l2"]),
              "rollout_corr": np.asarray(metrics["rollout_corr"]),
              "rollout_persistence_rel_l2": np.asarray(metrics["rollout_persistence_rel_l2"])}
    return seconds, arrays


def evaluate_cell(
    dataset_path: str | Path,
    run_dir: str | Path,
    *,
    cell: Mapping[str, Any],
    transfer_path: str | Path | None = None,
    targets: Sequence[float] = (0.5, 0.2),
    num_predictions: int = 4,
    device: str = "auto",
    tracker=None,
) -> dict:
    """Score the trained surrogate in ``run_dir`` on the test split; write metrics.json.

    Reads ``model.pt``, ``train.json`` and ``history.csv`` of ``run_dir``. ``cell`` carries
    dataset/model/optimizer/seed (and run_id) for the summary row; the metric columns are those of
    the registered metrics (:data:`kryflow.evaluation.metrics.METRICS`).
    """
    from kryflow.data import make_loader
    from kryflow.evaluation.metrics import score_test_split
    from kryflow.training import load_surrogate, select_device

    run_dir = Path(run_dir)
    dev = select_device(device)
    surrogate = load_surrogate(run_dir / "model.pt").to(dev).eval()
    train_info = json.loads((run_dir / "train.json").read_text())
    for path in [dataset_path] + ([transfer_path] if transfer_path is not None else []):
        _check_compatible(surrogate, path, run_dir)

    metrics: dict[str, Any] = {k: cell.get(k) for k in ("dataset", "model", "optimizer", "seed", "run_id")}
    metrics["status"] = train_info["status"]
    if surrogate.task is not None and surrogate.task.get("kind") == "next_step":
        inference, arrays = _score_rollout(surrogate, dataset_path, dev, num_predictions, metrics)
    else:
        loader = make_loader(dataset_path, "test", batch_size=32, shuffle=False, device=dev)
        xin, pred, true = _predict(surrogate, loader, dev, keep=max(num_predictions, 1))
        metrics.update(score_test_split(pred, true))
        inference = _inference_seconds(surrogate, next(iter(loader))[0], dev)
        k = min(num_predictions, len(xin))
        arrays = {"x": xin[:k].numpy(), "y": true[:k].numpy(), "pred": pred[:k].numpy(),
                  "x_names": np.asarray(loader.inputs), "y_names": np.asarray(loader.targets)}
    metrics["transfer_rel_l2"] = _transfer_rel_l2(surrogate, transfer_path, dev)
    metrics.update(_costs(train_info, inference, dataset_path))
    metrics.update(_time_to_target(run_dir / "history.csv", targets))

    np.savez_compressed(run_dir / "predictions.npz", **arrays)
    with open(run_dir / "metrics.json", "w") as fh:
        json.dump(metrics, fh, indent=2, sort_keys=True, default=float)

    if tracker is not None:
        tracker.log_metrics({kk: v for kk, v in metrics.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool) and kk not in ("seed",)})
        for series in ("rollout_rel_l2", "rollout_corr"):  # per rolled-out step, the step its index + 1
            if series in metrics:
                tracker.log_metric_series(series, metrics[series], start_step=1)
        tracker.log_artifact(run_dir / "metrics.json", "evaluation")
        tracker.log_artifact(run_dir / "predictions.npz", "evaluation")
    return metrics
