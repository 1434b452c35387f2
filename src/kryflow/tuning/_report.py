"""Scores of the comparison: time to target, performance profiles (Dolan & Moré; AlgoPerf's
score is the normalised area under the profile on [1, 4]), speed-ups over the reference,
bootstrap intervals, and how much an optimizer depends on its tuning budget."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap_interval", "expected_best_of_k", "geometric_mean_speedup", "performance_profile",
           "profile_score", "time_to_target"]


def time_to_target(history: Any, target: float) -> dict[str, float] | None:
    """First validation at or below ``target``: its step, training seconds and gradient-equivalent
    evaluations (``grad_evals`` column; NaN where the history has none). None when never reached."""
    if history is None or len(history) == 0 or "val_rel_l2" not in history:
        return None
    val = history["val_rel_l2"].to_numpy(dtype=float)
    hit = np.flatnonzero(np.isfinite(val) & (val <= target))
    if hit.size == 0:
        return None
    row = history.iloc[int(hit[0])]
    grad = float(row["grad_evals"]) if "grad_evals" in history else math.nan
    return {"step": int(row["step"]), "seconds": float(row["seconds"]), "grad_evals": grad}


def performance_profile(times: Mapping[str, Mapping[str, float]], taus: Sequence[float]) -> dict[str, np.ndarray]:
    """rho_o(tau): the fraction of workloads on which optimizer o is within a factor tau of the
    fastest optimizer there. ``times[o][w]`` is o's time to target on w (inf: not reached).
    A workload no optimizer solves counts against everyone."""
    workloads = sorted({w for t in times.values() for w in t})
    taus = np.asarray(taus, dtype=float)
    best = {w: min(float(t.get(w, math.inf)) for t in times.values()) for w in workloads}
    out = {}
    for opt, t in times.items():
        ratios = np.array([float(t.get(w, math.inf)) / best[w] if math.isfinite(best[w]) else math.inf
                           for w in workloads])
        out[opt] = (ratios[None, :] <= taus[:, None]).mean(axis=1) if workloads else np.zeros_like(taus)
    return out


def profile_score(rho: np.ndarray, taus: Sequence[float], tau_max: float = 4.0) -> float:
    """The area under a performance profile on [1, ``tau_max``] divided by its length (1: fastest
    on every workload, 0: within ``tau_max`` of the fastest nowhere)."""
    taus = np.asarray(taus, dtype=float)
    keep = (taus >= 1.0) & (taus <= tau_max)
    return float(np.trapezoid(np.asarray(rho)[keep], taus[keep]) / (tau_max - 1.0))


def geometric_mean_speedup(times: Mapping[str, Mapping[str, float]], reference: str) -> dict[str, tuple[float, int]]:
    """Per optimizer: the geometric mean over workloads both solved of reference time / its time,
    and how many workloads that is."""
    ref = times[reference]
    out = {}
    for opt, t in times.items():
        ratios = [ref[w] / t[w] for w in t if w in ref and math.isfinite(t[w]) and math.isfinite(ref[w]) and t[w] > 0]
        out[opt] = (float(np.exp(np.mean(np.log(ratios)))) if ratios else math.nan, len(ratios))
    return out


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (over seeds); NaN without data."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    means = np.random.default_rng(seed).choice(v, size=(resamples, v.size), replace=True).mean(axis=1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def expected_best_of_k(values: Sequence[float]) -> np.ndarray:
    """E[min of k trials drawn without replacement] for k = 1..n, exactly (order statistics):
    how good an optimizer gets with a tuning budget of k trials. inf stays inf."""
    v = np.sort(np.asarray(values, dtype=float))
    n = v.size
    out = np.empty(n)
    for k in range(1, n + 1):
        # P(the i-th smallest is the minimum of a k-subset) = C(n-1-i, k-1) / C(n, k), i 0-based
        w = np.array([math.comb(n - 1 - i, k - 1) for i in range(n)], dtype=float) / math.comb(n, k)
        used = w > 0  # a value no k-subset can have as its minimum does not count (not even as inf)
        out[k - 1] = float(w[used] @ v[used])
    return out
