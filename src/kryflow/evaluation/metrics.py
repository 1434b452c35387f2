"""Error metrics for neural surrogates, scored on physical (de-normalised) fields.

Every per-sample metric takes ``pred`` and ``true`` of shape ``(B, C, *grid)`` (torch
tensors on any device, or numpy arrays), computes in float64 on the input's device and
returns a numpy ``float64`` array of shape ``(B,)``. Only the ``(B,)`` result is moved to
the host, so evaluation on a GPU does not copy whole fields back.

Scoring must happen in physical units: a model trained on normalised targets is decoded
with :class:`Normalizer` (train-split statistics only) before any metric is computed.
Normalisation rescales channels differently, so a relative error measured in normalised
space is a different number (see ``tests/test_metrics.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

import numpy as np
import pandas as pd
import torch

from kryflow._registry import Registry

__all__ = [
    "DEFAULT_BANDS",
    "METRICS",
    "Column",
    "Metric",
    "Normalizer",
    "band_errors",
    "max_error",
    "nrmse",
    "relative_l2",
    "register_metric",
    "summarize",
    "score_test_split",
    "time_to_target",
]

ArrayLike = torch.Tensor | np.ndarray

#: Radial frequency bands as (name, low, high) with |k| normalised by the Nyquist
#: wavenumber of each axis; the last band also holds the corner modes with |k| > 1.
DEFAULT_BANDS: tuple[tuple[str, float, float], ...] = (
    ("low", 0.0, 1.0 / 3.0),
    ("mid", 1.0 / 3.0, 2.0 / 3.0),
    ("high", 2.0 / 3.0, 1.0),
)


def _as_pair(pred: ArrayLike, true: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Both arrays as float64 tensors on one device, shape-checked as ``(B, C, *grid)``."""
    true_t = torch.as_tensor(true)
    device = true_t.device
    pred_t = torch.as_tensor(pred, device=device)
    if pred_t.shape != true_t.shape:
        raise ValueError(f"pred shape {tuple(pred_t.shape)} != true shape {tuple(true_t.shape)}")
    if true_t.ndim < 3:
        raise ValueError(f"expected arrays of shape (B, C, *grid), got {tuple(true_t.shape)}")
    return pred_t.to(torch.float64), true_t.to(torch.float64)


def _to_numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().to("cpu", torch.float64).numpy().copy()


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with 0/0 -> 0 (a perfect prediction of a zero field) and x/0 -> inf."""
    out = num / den
    return torch.where((num == 0) & (den == 0), torch.zeros_like(out), out)


def relative_l2(pred: ArrayLike, true: ArrayLike) -> np.ndarray:
    """Per-sample relative L2 error ``||pred - true||_2 / ||true||_2``.

    Arguments:
        pred, true: shape ``(B, C, *grid)``, physical units. The norm runs over all
            channels and grid points of a sample.

    Returns:
        float64 array of shape ``(B,)``.
    """
    p, t = _as_pair(pred, true)
    err = (p - t).flatten(1).norm(dim=1)
    ref = t.flatten(1).norm(dim=1)
    return _to_numpy(_safe_ratio(err, ref))


def nrmse(pred: ArrayLike, true: ArrayLike) -> np.ndarray:
    """Per-sample range-normalised RMSE, averaged over channels.

    For each channel ``c``: ``RMSE_c / (max(true_c) - min(true_c))`` over the grid of that
    sample; the channels' values are averaged. Normalising per channel keeps channels with
    different physical units comparable, unlike :func:`relative_l2`, which pools them.

    Arguments:
        pred, true: shape ``(B, C, *grid)``, physical units.

    Returns:
        float64 array of shape ``(B,)``.
    """
    p, t = _as_pair(pred, true)
    diff = (p - t).flatten(2)
    rmse = diff.pow(2).mean(dim=2).sqrt()  # (B, C)
    flat_t = t.flatten(2)
    value_range = flat_t.amax(dim=2) - flat_t.amin(dim=2)
    return _to_numpy(_safe_ratio(rmse, value_range).mean(dim=1))


def max_error(pred: ArrayLike, true: ArrayLike) -> np.ndarray:
    """Per-sample maximum absolute error over channels and grid, in physical units.

    Returns:
        float64 array of shape ``(B,)``.
    """
    p, t = _as_pair(pred, true)
    return _to_numpy((p - t).abs().flatten(1).amax(dim=1))


def _normalised_wavenumber(grid: Sequence[int], device: torch.device) -> torch.Tensor:
    """|k| on the FFT grid, each axis's wavenumber divided by its Nyquist ``N/2``."""
    axes = [torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=device) / (n / 2.0) for n in grid]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.sqrt(sum(m.pow(2) for m in mesh))


def band_errors(
    pred: ArrayLike,
    true: ArrayLike,
    bands: Sequence[tuple[str, float, float]] = DEFAULT_BANDS,
) -> dict[str, np.ndarray]:
    """Relative error in radial frequency bands of the spatial grid (1D, 2D or 3D).

    The error spectrum ``|FFT(pred - true)|^2`` is summed over the modes of a band and
    divided by the total spectral energy of ``true`` over all modes:

        err_band = sqrt( sum_{k in band} |ê(k)|^2 / sum_k |t̂(k)|^2 )

    Dividing by the *total* energy (not the band's own) keeps the value finite for smooth
    fields with no high-frequency content, and by Parseval the squared band errors of a
    partition of the spectrum add up to ``relative_l2**2``. A mode belongs to a band when
    ``low <= |k| < high``; the band with the largest ``high`` also takes ``|k| >= high``
    (the Nyquist mode itself and the corners of the square/cube where |k| reaches sqrt(d)).

    Arguments:
        pred, true: shape ``(B, C, *grid)``, physical units; channels are pooled.
        bands: ``(name, low, high)`` with ``|k|`` normalised by each axis's Nyquist.

    Returns:
        dict band name -> float64 array of shape ``(B,)``.
    """
    p, t = _as_pair(pred, true)
    grid = tuple(t.shape[2:])
    dims = tuple(range(2, t.ndim))
    err_energy = torch.fft.fftn(p - t, dim=dims).abs().pow(2).sum(dim=1)  # (B, *grid)
    ref_energy = torch.fft.fftn(t, dim=dims).abs().pow(2).flatten(1).sum(dim=1)  # (B,)
    k = _normalised_wavenumber(grid, t.device)
    top = max(high for _, _, high in bands) if bands else math.inf
    out: dict[str, np.ndarray] = {}
    for name, low, high in bands:
        mask = (k >= low) & ((k < high) | (high >= top))
        band = (err_energy * mask).flatten(1).sum(dim=1)
        out[name] = _to_numpy(_safe_ratio(band, ref_energy).sqrt())
    return out


def summarize(per_sample: ArrayLike | Sequence[float]) -> dict[str, float]:
    """Mean, median, 90th percentile and maximum of per-sample values.

    NaN is not dropped: a NaN sample (a diverged model) makes every statistic NaN, so a
    broken run cannot pass for a good one. An empty input gives NaN everywhere.

    Returns:
        ``{"mean", "median", "p90", "max"}`` as Python floats.
    """
    if isinstance(per_sample, torch.Tensor):
        values = _to_numpy(per_sample).ravel()
    else:
        values = np.asarray(per_sample, dtype=np.float64).ravel()
    if values.size == 0 or np.isnan(values).any():
        return {"mean": math.nan, "median": math.nan, "p90": math.nan, "max": math.nan}
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90.0)),
        "max": float(np.max(values)),
    }


def time_to_target(
    history: Sequence[Mapping[str, Any]] | pd.DataFrame,
    targets: Sequence[float],
) -> dict[float, dict[str, int | float | None]]:
    """First training step and wall-clock second at which validation error reaches targets.

    Arguments:
        history: rows with ``step``, ``seconds`` (cumulative wall clock) and ``val_rel_l2``
            (NaN on steps without validation), as a list of dicts or a DataFrame.
        targets: validation relative-L2 thresholds; reached when ``val_rel_l2 <= target``.

    Returns:
        ``{target: {"step": int | None, "seconds": float | None}}``; ``None`` when never reached.
    """
    frame = history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    out: dict[float, dict[str, int | float | None]] = {}
    if frame.empty or not {"step", "seconds", "val_rel_l2"} <= set(frame.columns):
        return {float(tg): {"step": None, "seconds": None} for tg in targets}
    val = pd.to_numeric(frame["val_rel_l2"], errors="coerce").to_numpy(dtype=np.float64)
    step = pd.to_numeric(frame["step"], errors="coerce").to_numpy(dtype=np.float64)
    seconds = pd.to_numeric(frame["seconds"], errors="coerce").to_numpy(dtype=np.float64)
    order = np.argsort(step, kind="stable")
    val, step, seconds = val[order], step[order], seconds[order]
    for target in targets:
        hit = np.flatnonzero(np.isfinite(val) & (val <= target))
        if hit.size == 0:
            out[float(target)] = {"step": None, "seconds": None}
        else:
            i = int(hit[0])
            out[float(target)] = {"step": int(step[i]), "seconds": float(seconds[i])}
    return out


@final
class Normalizer:
    """Per-channel affine normalisation with train-split statistics.

    Arguments:
        stats: ``{"x_mean", "x_std", "y_mean", "y_std"}``, each array-like of shape ``(C,)``
            (``C_in`` for x, ``C_out`` for y), computed on the training split only.
        eps: standard deviations below ``eps`` (a constant channel) are replaced by 1, so a
            constant channel is shifted but never divided by zero.

    ``encode_x``/``encode_y`` map physical -> normalised, ``decode_y`` maps a model output
    back to physical units; all take and return tensors of shape ``(B, C, *grid)`` and keep
    the input's dtype and device.
    """

    _KEYS = ("x_mean", "x_std", "y_mean", "y_std")

    def __init__(self, stats: Mapping[str, Any], eps: float = 1e-12) -> None:
        missing = [k for k in self._KEYS if k not in stats]
        if missing:
            raise KeyError(f"normaliser stats lack {missing}")
        arrays = {k: np.asarray(stats[k], dtype=np.float64).reshape(-1) for k in self._KEYS}
        for side in ("x", "y"):
            if arrays[f"{side}_mean"].shape != arrays[f"{side}_std"].shape:
                raise ValueError(f"{side}_mean and {side}_std differ in shape")
            std = arrays[f"{side}_std"]
            arrays[f"{side}_std"] = np.where(np.abs(std) < eps, 1.0, std)
        self._stats = arrays

    @classmethod
    def fit(cls, x: ArrayLike, y: ArrayLike) -> Normalizer:
        """Statistics per channel over samples and grid of training arrays ``(B, C, *grid)``."""
        stats: dict[str, np.ndarray] = {}
        for side, arr in (("x", x), ("y", y)):
            t = torch.as_tensor(arr).to(torch.float64)
            flat = t.transpose(0, 1).flatten(1)  # (C, B*grid)
            stats[f"{side}_mean"] = _to_numpy(flat.mean(dim=1))
            stats[f"{side}_std"] = _to_numpy(flat.std(dim=1, correction=0))
        return cls(stats)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready statistics (after the zero-std guard)."""
        return {k: [float(v) for v in self._stats[k]] for k in self._KEYS}

    def _param(self, key: str, ref: torch.Tensor) -> torch.Tensor:
        values = self._stats[key]
        if ref.ndim < 2 or ref.shape[1] != values.shape[0]:
            raise ValueError(f"{key} has {values.shape[0]} channels, tensor shape is {tuple(ref.shape)}")
        dtype = ref.dtype if ref.is_floating_point() else torch.float64
        view = (1, values.shape[0]) + (1,) * (ref.ndim - 2)
        return torch.as_tensor(values, dtype=dtype, device=ref.device).reshape(view)

    def encode_x(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._param("x_mean", x)) / self._param("x_std", x)

    def encode_y(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self._param("y_mean", y)) / self._param("y_std", y)

    def decode_y(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._param("y_std", y) + self._param("y_mean", y)


# --------------------------------------------------------------------- the metric registry


@dataclass(frozen=True)
class Column:
    """One numeric column of ``results/summary.csv`` and how the paper tables show it.

    **Attributes:**
        name: the column name.
        header: the table header ("" when no table shows it).
        table: the table that lists it (``"test_error"``, ``"cost"``, ``"transfer"``) or None.
        best: which value is bold in a table group: ``"min"``, ``"max"`` or None.
        with_std: tables print ``mean ± std`` over seeds.
        integer: tables print the mean without decimals.
    """

    name: str
    header: str = ""
    table: str | None = None
    best: str | None = "min"
    with_std: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Metric:
    """A registered test-split metric: ``score(pred, true) -> {column name: value}`` over the
    whole test split, pred and true ``(B, C, *grid)`` in physical units."""

    name: str
    columns: tuple[Column, ...]
    score: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]


#: Test-split metrics, in summary and table order. Each adds its columns to ``results/summary.csv``,
#: the across-seed aggregates and (with a ``table``) the test-error table.
METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str, *columns: Column) -> Callable:
    """Decorator: register ``score(pred, true) -> dict`` as metric ``name`` producing ``columns``."""

    def register(score: Callable) -> Callable:
        METRICS.register(name, Metric(name, tuple(columns), score))
        return score

    return register


def score_test_split(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Every registered metric on the test split; NaN in every column when a prediction is not finite."""
    columns = [c.name for m in METRICS.values() for c in m.columns]
    if pred.numel() == 0 or not bool(torch.isfinite(pred).all()):
        return {c: math.nan for c in columns}
    out: dict[str, float] = {}
    for m in METRICS.values():
        out.update(m.score(pred, true))
    return out


@register_metric(
    "relative_l2",
    Column("test_rel_l2_mean", "Rel. L2", "test_error", with_std=True),
    Column("test_rel_l2_median", "Median", "test_error"),
    Column("test_rel_l2_p90", "P90", "test_error"),
)
def _relative_l2_score(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    s = summarize(np.asarray(relative_l2(pred, true), dtype=float))
    return {"test_rel_l2_mean": s["mean"], "test_rel_l2_median": s["median"], "test_rel_l2_p90": s["p90"]}


@register_metric("nrmse", Column("test_nrmse", "nRMSE", "test_error"))
def _nrmse_score(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    return {"test_nrmse": float(np.mean(np.asarray(nrmse(pred, true))))}


@register_metric("max_error", Column("test_max_error", "Max err.", "test_error"))
def _max_error_score(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    return {"test_max_error": float(np.max(np.asarray(max_error(pred, true))))}


@register_metric("band_errors", *(Column(f"test_err_{name}", name.capitalize(), "test_error")
                                  for name, _, _ in DEFAULT_BANDS))
def _band_scores(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    return {f"test_err_{name}": float(np.mean(np.asarray(v))) for name, v in band_errors(pred, true).items()}
