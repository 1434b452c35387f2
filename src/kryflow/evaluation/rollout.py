"""Autoregressive rollouts of next-step surrogates, written once and used for every model.

A next-step model maps the static inputs and k states to the next h states
(:class:`~kryflow.data.TrajectoryLayout`). Its rollout starts from the first k true states of a
trajectory and feeds its own predictions back, h states per call, until the trajectory's end
(as pdearena's ``rollout.py``). It is judged against the true states of the rolled-out steps:

* relative L2 per rolled-out step (over all state channels and the grid, per trajectory);
* the Pearson correlation per step (channels centred separately, then pooled), and the time until
  it first falls below a threshold (0.8; the time of the last step above it, measured from the
  last given state);
* the errors at fixed horizons (:data:`ROLLOUT_HORIZONS` rolled-out steps, and the last step).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = ["CORRELATION_THRESHOLD", "ROLLOUT_HORIZONS", "correlation", "correlation_time", "rollout",
           "rollout_errors", "rollout_split", "rollout_summary"]

#: Rolled-out steps (saved states after the history) at which the summary reports the error.
ROLLOUT_HORIZONS = (1, 4, 8)
#: The correlation below which a rollout is taken to have lost the trajectory.
CORRELATION_THRESHOLD = 0.8


@torch.no_grad()
def rollout(surrogate, layout, static: torch.Tensor, history: torch.Tensor, steps: int) -> torch.Tensor:
    """Roll ``surrogate`` out for ``steps`` states from ``history``.

    **Arguments:**
    - surrogate: maps ``x`` (B, S + k·C, *grid) to ``y`` (B, h·C, *grid), physical units.
    - layout: the :class:`~kryflow.data.TrajectoryLayout` it was trained with.
    - static: (B, S, *grid) inputs that stay fixed.
    - history: (B, k, C, *grid) the first k true states.
    - steps: states to predict after them.

    **Returns:** (B, steps, C, *grid): the predicted states, each call's h states fed back.
    """
    k = layout.task.history
    window, out, made = history, [], 0
    while made < steps:
        y = layout.split_output(surrogate(layout.model_input(static, window)))  # (B, h, C, *grid)
        out.append(y)
        made += y.shape[1]
        window = torch.cat([window, y], 1)[:, -k:]
    return torch.cat(out, 1)[:, :steps]


def _as_float64(a) -> torch.Tensor:
    return torch.as_tensor(a).to(torch.float64)


def correlation(pred, true) -> np.ndarray:
    """Pearson correlation per trajectory and step: pred, true (B, T, C, *grid) -> (B, T).

    Each channel is centred by its own mean over the grid (a velocity component's offset is not
    skill), then the channels are pooled. A constant field on both sides counts as 1."""
    p, t = _as_float64(pred), _as_float64(true)
    p = (p - p.flatten(3).mean(3).reshape(*p.shape[:3], *[1] * (p.ndim - 3))).flatten(2)
    t = (t - t.flatten(3).mean(3).reshape(*t.shape[:3], *[1] * (t.ndim - 3))).flatten(2)
    num = (p * t).sum(2)
    den = p.norm(dim=2) * t.norm(dim=2)
    out = torch.where(den > 0, num / den.clamp_min(1e-300), torch.where((p == t).all(2), 1.0, 0.0))
    return out.cpu().numpy()


def rollout_errors(pred, true) -> np.ndarray:
    """Relative L2 per trajectory and step: pred, true (B, T, C, *grid) -> (B, T)."""
    p, t = _as_float64(pred), _as_float64(true)
    err = (p - t).flatten(2).norm(dim=2)
    ref = t.flatten(2).norm(dim=2)
    out = torch.where((err == 0) & (ref == 0), torch.zeros_like(err), err / ref)
    return out.cpu().numpy()


def correlation_time(corr: np.ndarray, times: Sequence[float],
                     threshold: float = CORRELATION_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How long each rollout stays correlated with its truth.

    **Arguments:**
    - corr: (B, T) correlation per trajectory and rolled-out step.
    - times: (T,) time of each rolled-out step after the last given state.
    - threshold: the correlation that counts as lost.

    **Returns:** ``(steps, time, censored)``, each (B,): the rolled-out steps before the first one
    below the threshold, the time of the last of them (0 when the first step is below), and
    whether the rollout never fell below it (then the whole rollout's length and time, a lower bound).
    A NaN correlation (a diverged model) counts as below.
    """
    corr = np.asarray(corr, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    below = ~(corr >= threshold)
    censored = ~below.any(axis=1)
    steps = np.where(censored, corr.shape[1], below.argmax(axis=1))
    time = np.where(steps > 0, times[np.maximum(steps - 1, 0)], 0.0)
    return steps, time, censored


def rollout_split(surrogate, loader, device) -> dict[str, np.ndarray]:
    """Roll out every trajectory a trajectory reader yields, from its first k states.

    **Arguments:**
    - surrogate: a next-step surrogate with its ``task`` (the layout's dict).
    - loader: an iterable of ``(static (n, S, *grid), states (n, L, C, *grid))`` blocks, e.g. a
      :class:`~kryflow.data.ChunkReader` of the test split with the model's task.
    - device: where the rollout runs.

    **Returns:** ``{"pred", "true"}`` (N, L-k, C, *grid) float32 on the CPU, ``"static"``,
    ``"history"``, and ``"seconds"`` (rollout wall time of all trajectories, batched per block).
    """
    import time

    from kryflow.data import TrajectoryLayout

    layout = TrajectoryLayout.from_dict(surrogate.task)
    k = layout.task.history
    preds, trues, statics, hists, seconds = [], [], [], [], 0.0
    for static, states in loader:
        static, states = static.to(device), states.to(device)
        t0 = time.perf_counter()
        pred = rollout(surrogate, layout, static, states[:, :k], states.shape[1] - k)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - t0
        preds.append(pred.cpu())
        trues.append(states[:, k:].cpu())
        statics.append(static.cpu())
        hists.append(states[:, :k].cpu())
    return {"pred": torch.cat(preds), "true": torch.cat(trues), "static": torch.cat(statics),
            "history": torch.cat(hists), "seconds": seconds}


def rollout_summary(pred, true, times: Sequence[float], horizons: Iterable[int] = ROLLOUT_HORIZONS) -> dict:
    """The rollout's scores: per-step curves (mean over trajectories) and the summary's columns.

    **Arguments:**
    - pred, true: (B, T, C, *grid) rolled-out and true states.
    - times: (T,) time of each rolled-out step after the last given state.
    - horizons: rolled-out steps reported as ``rollout_rel_l2_step<j>`` (NaN beyond the rollout).

    **Returns:** ``rollout_rel_l2`` and ``rollout_corr`` (lists of T, mean over trajectories),
    ``rollout_times``, ``rollout_rel_l2_step<j>``, ``rollout_rel_l2_last``, ``rollout_corr_steps`` and
    ``rollout_corr_time`` (means over trajectories), ``rollout_corr_censored`` (fraction of
    trajectories that never fell below the threshold). A non-finite prediction makes every value NaN.
    """
    err, corr = rollout_errors(pred, true), correlation(pred, true)
    steps, ctime, censored = correlation_time(corr, times)
    finite = bool(torch.isfinite(torch.as_tensor(pred)).all())
    nan = math.nan
    curve = err.mean(0) if finite else np.full(err.shape[1], nan)
    out = {"rollout_rel_l2": [float(v) for v in curve],
           "rollout_corr": [float(v) for v in (corr.mean(0) if finite else np.full(corr.shape[1], nan))],
           "rollout_times": [float(t) for t in times]}
    for j in horizons:
        out[f"rollout_rel_l2_step{j}"] = float(curve[j - 1]) if j <= curve.size else nan
    out["rollout_rel_l2_last"] = float(curve[-1])
    out["rollout_corr_steps"] = float(steps.mean()) if finite else nan
    out["rollout_corr_time"] = float(ctime.mean()) if finite else nan
    out["rollout_corr_censored"] = float(censored.mean()) if finite else nan
    return out
