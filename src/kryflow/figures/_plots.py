"""Paper figures from summary.csv, per-run history/predictions and solver benchmarks.

Every figure is written as PNG and PDF under a stable name (see :func:`figure_stems`).
Missing files, NaN metrics and diverged runs never abort a figure: runs that diverged or
failed are drawn with an × (or +) in the optimizer's colour and counted in the legend,
and whatever could not be drawn is named in a note on the figure.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from kryflow._registry import Registry
from kryflow.figures._results import (
    load_history,
    load_predictions,
    load_solver_benchmark,
    read_summary,
    run_dir,
)
from kryflow.figures._style import (
    DIVERGED_STYLE,
    FAILED_STYLE,
    deterministic_style,
    new_figure,
    optimizer_style,
    order_optimizers,
    save_figure,
    solver_label,
    solver_styles,
)

__all__ = ["FILE_SCOPES", "FIGURES", "FigureInputs", "FigureInstance", "FigureSpec", "figure_instances", "figure_stems",
           "make_figures", "register_figure", "safe_name"]

log = logging.getLogger(__name__)

_ERR = "test_rel_l2_mean"
_PRED_SAMPLES = 3


def safe_name(name: str) -> str:
    """A file-name-safe version of a dataset/model/sequence name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-") or "unnamed"


@dataclass(frozen=True)
class FigureInputs:
    """What every figure draws from: the summary, the run folders' root."""

    summary: pd.DataFrame
    runs_root: Path


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: ``draw(inputs, **scope) -> Figure`` once per value of its scope.

    ``scope`` is what one file is about, in stem order: ``("dataset", "model")``, ``("dataset",)``,
    or one input file: ``("solver_benchmark",)`` (a benchmark JSON path; its stem names the file)
    or ``("tuning",)`` (the tuning protocol's report; one figure). ``rollout``: drawn only for the
    datasets whose models are judged by rollout (next-step tasks).
    """

    name: str
    scope: tuple[str, ...]
    draw: Callable[..., Figure]
    rollout: bool = False


#: Scopes that are one input file each, and what of the file's path goes into the stem.
FILE_SCOPES = {"solver_benchmark": lambda path: Path(path).stem, "tuning": lambda path: ""}

#: Every paper figure; the workflow's declared outputs, :func:`make_figures` and the figures
#: attached to MLflow runs all come from here. A new figure is one decorated draw function.
FIGURES: Registry[FigureSpec] = Registry("figure", package="kryflow.figures")


def register_figure(name: str, *scope: str, rollout: bool = False) -> Callable:
    """Decorator: register ``draw(inputs, **scope)`` as figure ``name`` (``rollout``: only for the
    datasets judged by rollout, a ``dataset`` scope)."""
    unknown = set(scope) - {"dataset", "model", *FILE_SCOPES}
    if unknown:
        raise ValueError(f"figure {name!r}: unknown scope {sorted(unknown)}")
    if rollout and scope[:1] != ("dataset",):
        raise ValueError(f"figure {name!r}: a rollout figure is about a dataset (scope starts with 'dataset')")

    def register(draw: Callable[..., Figure]) -> Callable[..., Figure]:
        FIGURES.register(name, FigureSpec(name, tuple(scope), draw, rollout))
        return draw

    return register


@dataclass(frozen=True)
class FigureInstance:
    """One file of a registered figure: the figure and the values of its scope."""

    spec: FigureSpec
    values: tuple[tuple[str, str], ...]

    @property
    def stem(self) -> str:
        parts = [FILE_SCOPES[k](v) if k in FILE_SCOPES else v for k, v in self.values]
        return "_".join([self.spec.name, *(safe_name(p) for p in parts if p)])

    def concerns(self, *, dataset: str, model: str) -> bool:
        """Whether this file is about ``dataset`` (and ``model``, where the figure is per model)."""
        ids = {"dataset": str(dataset), "model": str(model)}
        return all(k in ids and ids[k] == v for k, v in self.values)

    def draw(self, inputs: FigureInputs) -> Figure:
        return self.spec.draw(inputs, **dict(self.values))


def figure_instances(
    datasets: Iterable[str], models: Iterable[str], solver_benchmarks: Iterable[str | Path] = (),
    tuning_reports: Iterable[str | Path] = (), rollout_datasets: Iterable[str] = (),
) -> list[FigureInstance]:
    """Every file :func:`make_figures` writes for these names and input files, in a stable order;
    the rollout figures for those of ``datasets`` in ``rollout_datasets``."""
    ds = sorted({str(d) for d in datasets})
    ms = sorted({str(m) for m in models})
    rolled = {str(d) for d in rollout_datasets}
    out: list[FigureInstance] = []
    for d in ds:
        for spec in (f for f in FIGURES.values() if f.scope[:1] == ("dataset",) and (not f.rollout or d in rolled)):
            for m in (ms if "model" in spec.scope else [None]):
                out.append(FigureInstance(spec, (("dataset", d),) + ((("model", m),) if m is not None else ())))
    files = {"solver_benchmark": list(solver_benchmarks), "tuning": list(tuning_reports)}
    for spec in (f for f in FIGURES.values() if len(f.scope) == 1 and f.scope[0] in FILE_SCOPES):
        out += [FigureInstance(spec, ((spec.scope[0], str(p)),)) for p in files[spec.scope[0]]]
    return out


def figure_stems(
    datasets: Iterable[str], models: Iterable[str], solver_benchmarks: Iterable[str | Path] = (),
    tuning_reports: Iterable[str | Path] = (), rollout_datasets: Iterable[str] = (),
) -> list[str]:
    """File stems :func:`make_figures` writes (each as ``.png`` and ``.pdf``).

    Lets a workflow declare the outputs before any result exists.
    """
    return [inst.stem for inst in figure_instances(datasets, models, solver_benchmarks, tuning_reports,
                                                   rollout_datasets)]


# ---------------------------------------------------------------------------- helpers


def _note(ax: Axes, text: str, *, blank: bool = False) -> None:
    """A note centred in an axes that has no data; ``blank`` also hides the axes."""
    if blank:
        ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True, fontsize=8)


def _finish(fig: Figure, handles: Sequence[Line2D], notes: Sequence[str] = ()) -> None:
    """Legend right of the axes; notes (what could not be drawn) below them."""
    if handles:
        fig.legend(handles=list(handles), loc="outside right upper")
    if notes:
        lines = list(notes[:8]) + ([f"… and {len(notes) - 8} more"] if len(notes) > 8 else [])
        note_handles = [Line2D([], [], linestyle="none", label=f"note: {n}") for n in lines]
        fig.legend(handles=note_handles, loc="outside lower left", handlelength=0, handletextpad=0,
                   frameon=False, fontsize=6.5, ncols=1 if len(lines) < 4 else 2)  # fmt: skip


def _note_figure(title: str, text: str) -> Figure:
    fig = new_figure(5.0, 2.5)
    ax = fig.add_subplot()
    ax.set_title(title)
    _note(ax, text, blank=True)
    return fig


def _legend_handle(opt: str, label: str | None = None) -> Line2D:
    style = optimizer_style(opt)
    return Line2D(
        [], [], color=style["color"], marker=style["marker"], linestyle=style["linestyle"],
        label=label or style["label"],
    )  # fmt: skip


def _spread_handles() -> list[Line2D]:
    return [
        Line2D([], [], color="0.3", marker="o", markersize=7, linestyle="-", label="mean over seeds, min–max"),
        Line2D([], [], color="0.3", marker="o", markersize=4, markerfacecolor="none", linestyle="none",
               label="single seed"),
    ]  # fmt: skip


def _status_handles(diverged: bool, failed: bool) -> list[Line2D]:
    out = []
    if diverged:
        out.append(Line2D([], [], linestyle="none", **DIVERGED_STYLE, label="diverged (count beside)"))
    if failed:
        out.append(Line2D([], [], linestyle="none", **FAILED_STYLE, label="failed (count beside)"))
    return out


def _positive(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr) & (arr > 0)]


def _log_if_positive(ax: Axes, values: Sequence[float], axis: str = "y") -> None:
    """Log scale when the positive values span more than a factor 5, plain numbers as labels."""
    v = _positive(values)
    if v.size == 0 or v.max() / v.min() <= 5.0:
        return
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    # Labels at 1, 2, 5 x 10^k as plain numbers; the default labels minor ticks of short
    # ranges and they overlap.
    target.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())


def _cells(summary: pd.DataFrame, dataset: str, model: str | None = None) -> pd.DataFrame:
    mask = summary["dataset"] == dataset
    if model is not None:
        mask &= summary["model"] == model
    return summary[mask]


def _short_list(items: Sequence[str], limit: int = 6) -> str:
    items = list(items)
    extra = f" … (+{len(items) - limit})" if len(items) > limit else ""
    return "; ".join(items[:limit]) + extra


# ------------------------------------------------------- 1: validation error curves


def _dedupe(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing x (mean of y over repeated x), as np.interp requires."""
    ux, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=y, minlength=ux.size)
    counts = np.bincount(inverse, minlength=ux.size)
    return ux, sums / counts


def _seed_band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Geometric mean and min-max over seeds on the union of x, each seed only in its range."""
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    logs = np.full((len(curves), grid.size), np.nan)
    for i, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        logs[i, inside] = np.interp(grid[inside], x, np.log(y))
    present = ~np.isnan(logs)
    count = present.sum(axis=0)
    keep = count > 0
    logs, present, count, grid = logs[:, keep], present[:, keep], count[keep], grid[keep]
    center = np.exp(np.where(present, logs, 0.0).sum(axis=0) / count)
    lo = np.exp(np.where(present, logs, np.inf).min(axis=0))
    hi = np.exp(np.where(present, logs, -np.inf).max(axis=0))
    return grid, center, lo, hi


def _val_curves(hist: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    val = hist["val_rel_l2"].to_numpy()
    ok = np.isfinite(val) & (val > 0)
    out = {}
    for key in ("step", "seconds"):
        x = hist[key].to_numpy()
        sel = ok & np.isfinite(x)
        if sel.any():
            out[key] = _dedupe(x[sel], val[sel])
    return out


@register_figure("val_error", "dataset", "model")
def _val_error_figure(inp: FigureInputs, dataset: str, model: str) -> Figure:
    """Validation error against step and wall clock, per optimizer (seed band)."""
    summary, runs_root = inp.summary, inp.runs_root
    cells = _cells(summary, dataset, model)
    title = f"{dataset} / {model}"
    if cells.empty:
        return _note_figure(title, "no runs in summary.csv")
    fig = new_figure(8.5, 3.4)
    axes = dict(zip(("step", "seconds"), fig.subplots(1, 2, sharey=True), strict=True))
    handles: list[Line2D] = []
    notes: list[str] = []
    plotted: list[float] = []
    seen_div = seen_fail = False
    for opt in order_optimizers(cells["optimizer"]):
        style = optimizer_style(opt)
        good: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        bad: list[tuple[dict[str, tuple[np.ndarray, np.ndarray]], str, int]] = []
        for row in cells[cells["optimizer"] == opt].itertuples(index=False):
            hist, why = load_history(run_dir(runs_root, dataset, model, opt, row.seed) / "history.csv")
            curves = _val_curves(hist) if hist is not None else {}
            if row.status == "finished":
                if curves:
                    good.append(curves)
                else:
                    notes.append(f"{style['label']} seed {row.seed}: {why or 'no finite validation error'}")
            else:
                seen_div |= row.status == "diverged"
                seen_fail |= row.status != "diverged"
                bad.append((curves, row.status, row.seed))
                if not curves:
                    notes.append(f"{style['label']} seed {row.seed}: {row.status}, no curve")
        for key, ax in axes.items():
            seeds = [c[key] for c in good if key in c]
            if seeds:
                grid, center, lo, hi = _seed_band(seeds)
                ax.fill_between(grid, lo, hi, color=style["color"], alpha=0.18, linewidth=0)
                ax.plot(
                    grid, center, color=style["color"], linestyle=style["linestyle"],
                    marker=style["marker"], markevery=max(1, grid.size // 8),
                )  # fmt: skip
                plotted += list(lo) + list(hi)
            for curves, status, _seed in bad:
                if key not in curves:
                    continue
                x, y = curves[key]
                ax.plot(x, y, color=style["color"], linestyle=style["linestyle"], linewidth=0.8, alpha=0.7)
                mark = DIVERGED_STYLE if status == "diverged" else FAILED_STYLE
                ax.plot([x[-1]], [y[-1]], linestyle="none", **{**mark, "color": style["color"]})
                plotted += list(y)
        n_good, n_bad = len(good), len(bad)
        extra = f", {n_bad} div./failed" if n_bad else ""
        handles.append(_legend_handle(opt, f"{style['label']} (n={n_good}{extra})"))
    for key, ax in axes.items():
        _log_if_positive(ax, plotted)
        ax.set_xlabel("training step" if key == "step" else "wall-clock seconds")
    axes["step"].set_ylabel("validation relative L2")
    axes["step"].set_title(f"{title}: vs step")
    axes["seconds"].set_title(f"{title}: vs wall clock")
    if not plotted:
        notes.insert(0, "no finite validation error in any run")
    _finish(fig, handles + _status_handles(seen_div, seen_fail), notes)
    return fig


# ------------------------------------------------ 2: final test error, seed spread


def _slots(n: int) -> np.ndarray:
    width = 0.8
    return (np.arange(n) - (n - 1) / 2.0) * (width / max(n, 1))


def _mark_unfinished(ax: Axes, x: float, rows: pd.DataFrame, color: str) -> tuple[bool, bool]:
    """× / + at the top of the axes for diverged / failed seeds, with their count."""
    flags = []
    for status, style, y in (("diverged", DIVERGED_STYLE, 0.96), ("failed", FAILED_STYLE, 0.88)):
        if status == "failed":
            n = int((~rows["status"].isin(["finished", "diverged"])).sum())
        else:
            n = int((rows["status"] == status).sum())
        if n:
            ax.plot([x], [y], linestyle="none", transform=ax.get_xaxis_transform(), clip_on=False,
                    **{**style, "color": color})  # fmt: skip
            ax.annotate(str(n), (x, y), xycoords=ax.get_xaxis_transform(), xytext=(5, 0),
                        textcoords="offset points", ha="left", va="center", fontsize=6)  # fmt: skip
        flags.append(n > 0)
    return flags[0], flags[1]


def _dataset_cells(summary: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """A dataset's rows, its models (sorted) and its optimizers (registry order)."""
    cells = _cells(summary, dataset)
    return cells, sorted(cells["model"].unique()), order_optimizers(cells["optimizer"])


def _model_slots(cells: pd.DataFrame, models: Sequence[str], opts: Sequence[str]):
    """``(x, model, rows, style)`` for every (model, optimizer) with runs: models along the x axis,
    optimizers side by side within a model's slot."""
    offsets = _slots(len(opts))
    for i, model in enumerate(models):
        for j, opt in enumerate(opts):
            rows = cells[(cells["model"] == model) & (cells["optimizer"] == opt)]
            if not rows.empty:
                yield i + offsets[j], model, rows, optimizer_style(opt)


def _model_axis(ax: Axes, models: Sequence[str], values: Sequence[float], ylabel: str, title: str) -> None:
    ax.set_xticks(range(len(models)), models)
    ax.set_xlim(-0.6, len(models) - 0.4)
    _log_if_positive(ax, values)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


@register_figure("test_error", "dataset")
def _test_error_figure(inp: FigureInputs, dataset: str) -> Figure:
    """Final test error per model and optimizer, every seed shown."""
    cells, models, opts = _dataset_cells(inp.summary, dataset)
    if cells.empty:
        return _note_figure(dataset, "no runs in summary.csv")
    fig = new_figure(max(4.5, 1.1 + 0.35 * len(opts) * len(models)), 3.4)
    ax = fig.add_subplot()
    seen_div = seen_fail = False
    values: list[float] = []
    missing: list[str] = []
    for x, model, rows, style in _model_slots(cells, models, opts):
        done = rows[rows["status"] == "finished"][_ERR].to_numpy()
        fin = _positive(done)
        if fin.size:
            ax.plot(np.full(fin.size, x), fin, linestyle="none", marker=style["marker"],
                    color=style["color"], markerfacecolor="none", markersize=4, alpha=0.8)  # fmt: skip
            mean = float(fin.mean())
            ax.errorbar(
                [x], [mean], yerr=[[mean - fin.min()], [fin.max() - mean]], color=style["color"],
                marker=style["marker"], markersize=7, capsize=2.5, linestyle="none",
            )  # fmt: skip
            values += list(fin)
        if fin.size < done.size:
            missing.append(f"{model}/{style['label']}: {done.size - fin.size} finished without error")
        div, fail = _mark_unfinished(ax, x, rows, style["color"])
        seen_div |= div
        seen_fail |= fail
    _model_axis(ax, models, values, "test relative L2 (mean over samples)", f"{dataset}: final test error")
    if not values:
        _note(ax, "no finished run with a finite test error")
    handles = [_legend_handle(o) for o in opts] + _spread_handles() + _status_handles(seen_div, seen_fail)
    _finish(fig, handles, missing)
    return fig


# ------------------------------------------------------------ 3: cost vs accuracy


@register_figure("cost_accuracy", "dataset")
def _cost_accuracy_figure(inp: FigureInputs, dataset: str) -> Figure:
    """Test error against cost per step and against time to target."""
    cells, models, opts = _dataset_cells(inp.summary, dataset)
    if cells.empty:
        return _note_figure(dataset, "no runs in summary.csv")
    xcols = (("seconds_per_step", "optimizer seconds per step"), ("time_to_target_seconds", "seconds to target"))
    fig = new_figure(max(4.5, 1.5 + 3.0 * len(models)), 5.6)
    grid = fig.subplots(2, len(models), squeeze=False, sharey=True)
    seen_div = seen_fail = False
    all_notes: list[str] = []
    for r, (xcol, xlabel) in enumerate(xcols):
        for c, model in enumerate(models):
            ax = grid[r, c]
            xs: list[float] = []
            ys: list[float] = []
            notes: list[str] = []
            for opt in opts:
                rows = cells[(cells["model"] == model) & (cells["optimizer"] == opt)]
                if rows.empty:
                    continue
                style = optimizer_style(opt)
                done = rows[rows["status"] == "finished"]
                x = done[xcol].to_numpy()
                y = done[_ERR].to_numpy()
                ok = np.isfinite(x) & (x > 0) & np.isfinite(y) & (y > 0)
                if ok.any():
                    mx, my = float(x[ok].mean()), float(y[ok].mean())
                    ax.errorbar(
                        [mx], [my],
                        xerr=[[mx - x[ok].min()], [x[ok].max() - mx]],
                        yerr=[[my - y[ok].min()], [y[ok].max() - my]],
                        color=style["color"], marker=style["marker"], markersize=7,
                        capsize=2, linestyle="none",
                    )  # fmt: skip
                    xs += list(x[ok])
                    ys += list(y[ok])
                elif len(done):
                    why = "target not reached" if xcol == "time_to_target_seconds" else "no value"
                    notes.append(f"{style['label']}: {why}")
                unfinished = rows[rows["status"] != "finished"]
                ux = _positive(unfinished[xcol].to_numpy())
                if len(unfinished):
                    div = bool((unfinished["status"] == "diverged").any())
                    seen_div |= div
                    seen_fail |= not bool((unfinished["status"] == "diverged").all())
                    mark = DIVERGED_STYLE if div else FAILED_STYLE
                    if ux.size:
                        ax.plot([float(ux.mean())], [0.96], linestyle="none", clip_on=False,
                                transform=ax.get_xaxis_transform(), **{**mark, "color": style["color"]})  # fmt: skip
                        xs += list(ux)
                    else:
                        notes.append(f"{style['label']}: {len(unfinished)} diverged/failed")
            _log_if_positive(ax, xs, axis="x")
            _log_if_positive(ax, ys)
            ax.set_xlabel(xlabel)
            if c == 0:
                ax.set_ylabel("test relative L2")
            ax.set_title(f"{dataset} / {model}")
            if not xs:
                _note(ax, "no data")
            all_notes += [f"{model}, {xlabel}: {n}" for n in notes]
    handles = [_legend_handle(o) for o in opts] + _status_handles(seen_div, seen_fail)
    _finish(fig, handles, all_notes)
    return fig


# ------------------------------------------------------------- 4: solver sequence


@register_figure("solver", "solver_benchmark")
def _solver_figure(inp: FigureInputs, solver_benchmark: str) -> Figure:
    """Iterations per system and cumulative solve time along each benchmarked sequence."""
    path = Path(solver_benchmark)
    records, why = load_solver_benchmark(path)
    if records is None or not records:
        return _note_figure(f"solver benchmark {path.stem}", why or "no records")
    by_seq: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_seq.setdefault(str(rec.get("sequence", path.stem)), []).append(rec)
    seqs = sorted(by_seq)
    styles = solver_styles((str(d.get("method", "?")), d.get("preconditioner"), d.get("strategy")) for d in records)
    fig = new_figure(8.5, 3.0 * len(seqs) + 0.4)
    grid = fig.subplots(len(seqs), 2, squeeze=False)
    handles: dict[str, Line2D] = {}
    notes: list[str] = []
    for r, seq in enumerate(seqs):
        ax_it, ax_t = grid[r]
        recs = sorted(
            by_seq[seq],
            key=lambda d: (str(d.get("method", "")), str(d.get("preconditioner", ""))),
        )
        for rec in recs:
            style = styles[solver_label(str(rec.get("method", "?")), rec.get("preconditioner"), rec.get("strategy"))]
            default = bool(rec.get("default", False))
            label = style["label"] + (" (default)" if default else "")
            per = rec.get("per_solve") or []
            its = np.array([_num(p.get("iterations")) for p in per], dtype=np.float64)
            secs = np.array([_num(p.get("seconds")) for p in per], dtype=np.float64)
            kw = {"color": style["color"], "linestyle": style["linestyle"], "marker": style["marker"],
                  "linewidth": 2.4 if default else 1.2, "markersize": 4}  # fmt: skip
            idx = np.arange(len(per))
            drew = False
            if np.isfinite(its).any():
                ok = np.isfinite(its)
                ax_it.plot(idx[ok], its[ok], markevery=max(1, int(ok.sum()) // 10), **kw)
                drew = True
            else:
                notes.append(f"{seq}, {label}: no iteration counts")
            if np.isfinite(secs).any():
                ax_t.plot(idx, np.nancumsum(secs), markevery=max(1, len(per) // 10), **kw)
                drew = True
            if drew:
                handles.setdefault(label, Line2D([], [], label=label, **kw))
            else:
                notes.append(f"{seq}, {label}: no per-solve data")
        ax_it.set_title(f"{seq}\niterations per system")
        ax_it.set_xlabel("system index in sequence")
        ax_it.set_ylabel("Krylov iterations")
        ax_t.set_title(f"{seq}\ncumulative solve time")
        ax_t.set_xlabel("system index in sequence")
        ax_t.set_ylabel("seconds")
    _finish(fig, [handles[k] for k in sorted(handles)], notes)
    return fig


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


# --------------------------------------------------------------- 5: predictions


def _field(arr: np.ndarray, sample: int, channel: int = 0) -> np.ndarray:
    """One channel of one sample; for 3D the middle z slice; transposed so x runs right."""
    f = arr[sample, channel]
    if f.ndim == 3:
        f = f[:, :, f.shape[2] // 2]
    return f.T if f.ndim == 2 else f


def _limits(values: np.ndarray) -> tuple[float, float]:
    """Colour limits over finite values (a diverged model predicts NaN/inf)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _best_predictions(summary: pd.DataFrame, runs_root: Path, dataset: str, model: str, need: str = "y"):
    """``(row, arrays)`` of the best finished run (lowest test error) whose predictions.npz has
    ``need``; ``(None, reasons)`` when none has."""
    cells = _cells(summary, dataset, model)
    ranked = cells.assign(
        _fin=(cells["status"] != "finished").astype(int),
        _err=cells[_ERR].fillna(np.inf),
        _row=np.arange(len(cells)),
    ).sort_values(["_fin", "_err", "_row"], kind="stable")
    reasons: list[str] = []
    for row in ranked.itertuples(index=False):
        arrays, why = load_predictions(run_dir(runs_root, dataset, model, row.optimizer, row.seed) / "predictions.npz")
        if arrays is not None and need in arrays:
            return row, arrays
        reasons.append(f"{row.optimizer} seed {row.seed}: {why or f'no {need}'}")
    return None, reasons


def _names(arrays: dict, key: str, fallback: str) -> list[str]:
    n = arrays[key].shape[1]
    names = list(arrays.get(f"{key}_names", []))
    return names if len(names) == n else [f"{fallback} {c}" if n > 1 else fallback for c in range(n)]


def _image(fig: Figure, axes, fields: np.ndarray, limits: tuple[float, float], cmap: str, colorbar: bool = True):
    """One column of fields (one per row of ``axes``) on one colour scale."""
    image = None
    for ax, field in zip(axes, fields):
        if field.ndim == 2:
            image = ax.imshow(field, origin="lower", cmap=cmap, vmin=limits[0], vmax=limits[1])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        else:
            ax.plot(field, color="black")
            ax.set_ylim(*limits)
    if image is not None and colorbar:
        fig.colorbar(image, ax=list(axes), shrink=0.9, location="bottom", aspect=25)
    return image


@register_figure("predictions", "dataset", "model")
def _predictions_figure(inp: FigureInputs, dataset: str, model: str) -> Figure:
    """Every input channel, and truth, prediction and error of every target channel, for test
    samples of the best finished run (a next-step model: its first window and the rollout's last
    state)."""
    title = f"{dataset} / {model}"
    if _cells(inp.summary, dataset, model).empty:
        return _note_figure(title, "no runs in summary.csv")
    row, arrays = _best_predictions(inp.summary, inp.runs_root, dataset, model)
    if row is None:
        return _note_figure(title, "no predictions:\n" + _short_list(arrays, 4))
    style = optimizer_style(row.optimizer)
    n = min(_PRED_SAMPLES, arrays["y"].shape[0])
    x_names, y_names = _names(arrays, "x", "input"), _names(arrays, "y", "target")
    columns: list[tuple[str, np.ndarray, tuple[float, float], str, bool]] = []
    for c, name in enumerate(x_names):  # every input on its own scale
        f = np.stack([_field(arrays["x"], s, c) for s in range(n)])
        columns.append((name, f, _limits(f), "viridis", True))
    for c, name in enumerate(y_names):  # truth and prediction of a target share one scale
        y = np.stack([_field(arrays["y"], s, c) for s in range(n)])
        p = np.stack([_field(arrays["pred"], s, c) for s in range(n)])
        both = _limits(np.concatenate([y.ravel(), p.ravel()]))
        err = np.abs(p - y)
        columns += [(f"{name}: truth", y, both, "viridis", False), (f"{name}: prediction", p, both, "viridis", True),
                    (f"{name}: |error|", err, (0.0, _limits(err)[1]), "magma", True)]
    fig = new_figure(max(6.0, 1.9 * len(columns) + 0.6), 2.0 * n + 1.2)
    grid = fig.subplots(n, len(columns), squeeze=False)
    for c, (name, fields, limits, cmap, bar) in enumerate(columns):
        _image(fig, grid[:, c], fields, limits, cmap, colorbar=bar and (not name.endswith("prediction")))
        if name.endswith("prediction"):  # the truth's and the prediction's common bar under both
            image = grid[0, c].images[0] if grid[0, c].images else None
            if image is not None:
                fig.colorbar(image, ax=list(grid[:, c - 1]) + list(grid[:, c]), shrink=0.9, location="bottom",
                             aspect=50)
        grid[0, c].set_title(name, fontsize=8)
    for s in range(n):
        grid[s, 0].set_ylabel(f"sample {s}")
    fig.suptitle(f"{title}: {style['label']}, seed {row.seed}, test rel. L2 {getattr(row, _ERR):.3g}")
    return fig


# ------------------------------------------------------------------- rollouts


@register_figure("rollout_error", "dataset", rollout=True)
def _rollout_error_figure(inp: FigureInputs, dataset: str) -> Figure:
    """A next-step model's rollout: rel. L2 and correlation against rollout time, per model and
    optimizer (mean over test trajectories; over seeds the mean with the min-max band)."""
    cells, models, opts = _dataset_cells(inp.summary, dataset)
    if cells.empty:
        return _note_figure(f"{dataset}: rollout", "no runs in summary.csv")
    fig = new_figure(max(4.8, 1.6 + 3.2 * len(models)), 5.8)
    grid = fig.subplots(2, len(models), squeeze=False, sharex=True)
    notes: list[str] = []
    seen_div = seen_fail = False
    persistence = False
    for c, model in enumerate(models):
        ax_err, ax_corr = grid[0, c], grid[1, c]
        values: list[float] = []
        for opt in opts:
            rows = cells[(cells["model"] == model) & (cells["optimizer"] == opt)]
            if rows.empty:
                continue
            style = optimizer_style(opt)
            curves = []
            for row in rows.itertuples(index=False):
                if row.status != "finished":
                    seen_div |= row.status == "diverged"
                    seen_fail |= row.status != "diverged"
                    notes.append(f"{model}/{style['label']} seed {row.seed}: {row.status}")
                    continue
                arrays, why = load_predictions(run_dir(inp.runs_root, dataset, model, opt, row.seed)
                                               / "predictions.npz")
                if arrays is None or "rollout_rel_l2" not in arrays:
                    notes.append(f"{model}/{style['label']} seed {row.seed}: {why or 'no rollout'}")
                    continue
                curves.append(arrays)
            if not curves:
                continue
            t = curves[0]["rollout_times"]
            same = [a for a in curves if a["rollout_times"].shape == t.shape]
            kw = {"color": style["color"], "linestyle": style["linestyle"], "marker": style["marker"],
                  "markevery": max(1, t.size // 8), "markersize": 4}
            for ax, key in ((ax_err, "rollout_rel_l2"), (ax_corr, "rollout_corr")):
                v = np.stack([a[key] for a in same])
                ax.plot(t, v.mean(0), **kw)
                if len(same) > 1:
                    ax.fill_between(t, v.min(0), v.max(0), color=style["color"], alpha=0.18, linewidth=0)
                if key == "rollout_rel_l2":
                    values += list(v.ravel())
            if "rollout_persistence_rel_l2" in same[0]:
                # the same for every model: the last given state held (the trivial forecast)
                ax_err.plot(t, same[0]["rollout_persistence_rel_l2"], color="0.35", linestyle=":", linewidth=1.2)
                values += list(same[0]["rollout_persistence_rel_l2"])
                persistence = True
        _log_if_positive(ax_err, values)
        ax_err.set_title(f"{dataset} / {model}")
        ax_corr.axhline(0.8, color="0.5", linewidth=0.8, linestyle="--")
        ax_corr.set_xlabel("rollout time (after the last given state)")
        if c == 0:
            ax_err.set_ylabel("relative L2 per step")
            ax_corr.set_ylabel("correlation with truth")
        if not values:
            _note(ax_err, "no rollout results")
    handles = [_legend_handle(o) for o in opts] + _status_handles(seen_div, seen_fail)
    if persistence:
        handles.append(Line2D([], [], color="0.35", linestyle=":", label="persistence (last state held)"))
    handles.append(Line2D([], [], color="0.5", linestyle="--", label="correlation 0.8"))
    _finish(fig, handles, notes)
    return fig


@register_figure("rollout_fields", "dataset", "model", rollout=True)
def _rollout_fields_figure(inp: FigureInputs, dataset: str, model: str) -> Figure:
    """Predicted against true states at a few rollout times, one test trajectory of the best run:
    a row per time; truth, prediction and error of every state channel."""
    title = f"{dataset} / {model}: rollout"
    if _cells(inp.summary, dataset, model).empty:
        return _note_figure(title, "no runs in summary.csv")
    row, arrays = _best_predictions(inp.summary, inp.runs_root, dataset, model, need="rollout_true")
    if row is None:
        return _note_figure(title, "no rollout predictions:\n" + _short_list(arrays, 4))
    true, pred = arrays["rollout_true"][0], arrays["rollout_pred"][0]  # (steps kept, C, *grid)
    steps = arrays["rollout_steps"].astype(int)
    times = arrays["rollout_times"]
    names = list(arrays.get("state_names", [f"state {c}" for c in range(true.shape[1])]))
    rows = true.shape[0]
    columns = []
    for c, name in enumerate(names):
        t = np.stack([_field(true, r, c) for r in range(rows)])
        p = np.stack([_field(pred, r, c) for r in range(rows)])
        both = _limits(np.concatenate([t.ravel(), p.ravel()]))
        err = np.abs(p - t)
        columns += [(f"{name}: truth", t, both, "viridis", False), (f"{name}: prediction", p, both, "viridis", False),
                    (f"{name}: |error|", err, (0.0, _limits(err)[1]), "magma", True)]
    fig = new_figure(max(6.0, 1.9 * len(columns) + 0.6), 1.9 * rows + 1.2)
    grid = fig.subplots(rows, len(columns), squeeze=False)
    for c, (name, fields, limits, cmap, bar) in enumerate(columns):
        _image(fig, grid[:, c], fields, limits, cmap, colorbar=bar)
        if name.endswith("prediction") and grid[0, c].images:
            fig.colorbar(grid[0, c].images[0], ax=list(grid[:, c - 1]) + list(grid[:, c]), shrink=0.9,
                         location="bottom", aspect=50)
        grid[0, c].set_title(name, fontsize=8)
    for r in range(rows):
        j = int(steps[r])
        grid[r, 0].set_ylabel(f"step {j}, t = {times[j - 1]:.3g}", fontsize=8)
    style = optimizer_style(row.optimizer)
    fig.suptitle(f"{title}, {style['label']}, seed {row.seed}, test trajectory 0")
    return fig


# --------------------------------------------------------- 6: resolution transfer


@register_figure("transfer", "dataset")
def _transfer_figure(inp: FigureInputs, dataset: str) -> Figure:
    """Error on the finer grid beside the training grid's."""
    cells, models, opts = _dataset_cells(inp.summary, dataset)
    if cells.empty or not np.isfinite(cells["transfer_rel_l2"].to_numpy()).any():
        return _note_figure(f"{dataset}: resolution transfer", "no resolution-transfer results")
    fig = new_figure(max(4.5, 1.1 + 0.35 * len(opts) * len(models)), 3.4)
    ax = fig.add_subplot()
    values: list[float] = []
    seen_div = seen_fail = False
    for x, _model, rows, style in _model_slots(cells, models, opts):
        done = rows[rows["status"] == "finished"]
        for col, filled in (("transfer_rel_l2", True), (_ERR, False)):
            v = _positive(done[col].to_numpy())
            if v.size:
                m = float(v.mean())
                ax.errorbar(
                    [x], [m], yerr=[[m - v.min()], [v.max() - m]], color=style["color"],
                    marker=style["marker"], markerfacecolor=style["color"] if filled else "none",
                    markersize=7 if filled else 5, capsize=2, linestyle="none",
                )  # fmt: skip
                values += list(v)
        div, fail = _mark_unfinished(ax, x, rows, style["color"])
        seen_div |= div
        seen_fail |= fail
    _model_axis(ax, models, values, "relative L2", f"{dataset}: resolution transfer")
    handles = [_legend_handle(o) for o in opts] + [
        Line2D([], [], color="0.3", marker="o", linestyle="none", label="finer grid (transfer)"),
        Line2D([], [], color="0.3", marker="o", markerfacecolor="none", linestyle="none",
               markersize=5, label="training grid"),
    ]  # fmt: skip
    _finish(fig, handles + _status_handles(seen_div, seen_fail))
    return fig


# --------------------------------------------------------------------- entry point


def make_figures(
    summary_csv: str | Path,
    runs_root: str | Path,
    solver_benchmarks: Sequence[str | Path],
    out_dir: str | Path,
    *,
    datasets: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    tuning_reports: Sequence[str | Path] = (),
    rollout_datasets: Sequence[str] | None = None,
) -> list[Path]:
    """Write every paper figure as PNG and PDF; byte-identical when rerun on the same inputs.

    Arguments:
        summary_csv: ``results/summary.csv`` (one row per cell and seed).
        runs_root: root of ``{dataset}/{model}/{optimizer}/{seed}/`` run directories with
            ``history.csv`` and ``predictions.npz``.
        solver_benchmarks: solver benchmark JSON files (one figure per file).
        out_dir: output folder, created if missing.
        tuning_reports: the tuning protocol's ``report.json`` (its figures), if it ran.
        datasets, models: names to draw; default those in the summary. Passing the
            configured names guarantees every file in :func:`figure_stems` is written,
            with a note where there are no results yet.
        rollout_datasets: the datasets judged by rollout (next-step tasks), which get the
            rollout figures; default those with rollout results in the summary.

    Returns:
        paths written, in a stable order (PNG before PDF of each figure).
    """
    out_dir = Path(out_dir)
    runs_root = Path(runs_root)
    summary, why = read_summary(summary_csv)
    if why:
        log.warning("figures: %s", why)
    ds = sorted({str(d) for d in datasets}) if datasets is not None else sorted(summary["dataset"].unique())
    ms = sorted({str(m) for m in models}) if models is not None else sorted(summary["model"].unique())
    if rollout_datasets is None:
        rollout_datasets = sorted(summary.loc[np.isfinite(summary["onestep_rel_l2"]), "dataset"].unique())
    inputs = FigureInputs(summary, runs_root)
    paths: list[Path] = []
    with deterministic_style():
        for inst in figure_instances(ds, ms, solver_benchmarks, tuning_reports, rollout_datasets):
            paths += save_figure(inst.draw(inputs), out_dir, inst.stem)
    return paths
