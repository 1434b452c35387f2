"""Summary statistics the benchmark scripts share (scripts import it from their own folder)."""

from __future__ import annotations

import math

import numpy as np


def interval(values) -> dict:
    """Mean, sample std and the 95% t-interval of the mean of the finite ``values`` (NaN where fewer
    than two)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": math.nan, "std": math.nan, "ci95": [math.nan, math.nan], "n": 0}
    mean = float(v.mean())
    if v.size < 2:
        return {"mean": mean, "std": math.nan, "ci95": [math.nan, math.nan], "n": 1}
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, v.size - 1) * std / math.sqrt(v.size))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": int(v.size)}
