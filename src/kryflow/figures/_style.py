"""Stable visual identity per optimizer and solver, and byte-reproducible figure output.

An optimizer's label and style live on its registry entry (``kryflow.optim.OPTIMIZERS``):
colours from colour-blind-safe palettes (Okabe-Ito, Paul Tol), marker and line style unique per
entry so greyscale prints tell them apart. Styles are looked up, never assigned in order of
appearance, so an optimizer looks the same in every figure whatever subset a figure shows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib

# Figures are built on matplotlib.figure.Figure with an explicit Agg canvas, never through
# pyplot, so output does not depend on the session's backend and no global state is touched.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kryflow.optim import OPTIMIZERS

__all__ = [
    "OPTIMIZER_ORDER",
    "DIVERGED_STYLE",
    "FAILED_STYLE",
    "deterministic_style",
    "new_figure",
    "optimizer_style",
    "order_optimizers",
    "save_figure",
    "solver_label",
    "solver_styles",
]

#: Optimizers in registry order: figures and tables list them this way (``kryflow.optim.OPTIMIZERS``).
OPTIMIZER_ORDER: tuple[str, ...] = tuple(OPTIMIZERS)

_FALLBACK_COLORS = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")
_FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "p", "h", "*", "P", "X")
_FALLBACK_LINESTYLES = ("-", "--", "-.", ":")

#: How runs without a final test error are drawn, in every figure.
DIVERGED_STYLE = {"marker": "x", "color": "#000000", "markersize": 9, "markeredgewidth": 2.0}
FAILED_STYLE = {"marker": "+", "color": "#000000", "markersize": 10, "markeredgewidth": 2.0}


def _digest(name: str) -> int:
    # hashlib, not hash(): Python's str hash is salted per process.
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def _hashed_style(name: str) -> dict[str, str]:
    h = _digest(name)
    return {
        "color": _FALLBACK_COLORS[h % len(_FALLBACK_COLORS)],
        "marker": _FALLBACK_MARKERS[(h // 7) % len(_FALLBACK_MARKERS)],
        "linestyle": _FALLBACK_LINESTYLES[(h // 70) % len(_FALLBACK_LINESTYLES)],
    }


def optimizer_style(name: str) -> dict[str, str]:
    """Colour, marker, line style and display label of an optimizer.

    Arguments:
        name: optimizer registry name (e.g. ``"adam"``, ``"mkor_h"``).

    Returns:
        a new dict ``{"color", "marker", "linestyle", "label"}``, usable as ``**kwargs`` of
        ``Axes.plot``. Names outside the registry get a style derived from a hash of the
        name, the same in every process.
    """
    key = str(name)
    if key in OPTIMIZERS:
        spec = OPTIMIZERS[key]
        color, marker, linestyle = spec.style
        return {"color": color, "marker": marker, "linestyle": linestyle, "label": spec.label or key}
    return {**_hashed_style(key), "label": key}


def solver_styles(entries: Iterable[tuple[str, str | None, str | None]]) -> dict[str, dict[str, str]]:
    """Styles for all ``(method, preconditioner, strategy)`` entries of one figure, by label.

    Assigned in sorted label order (colour i mod 7, marker i mod 10, line style i mod 4), so up
    to 70 strategies in one figure never share colour and marker, whatever their names hash to.
    """
    labels = sorted({solver_label(m, p, s) for m, p, s in entries})
    return {
        lab: {"color": _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)], "marker": _FALLBACK_MARKERS[i % len(_FALLBACK_MARKERS)],
              "linestyle": _FALLBACK_LINESTYLES[i % len(_FALLBACK_LINESTYLES)], "label": lab}
        for i, lab in enumerate(labels)
    }  # fmt: skip


def solver_label(method: str, preconditioner: str | None = None, strategy: str | None = None) -> str:
    """``"rcg + jacobi"``; with a benchmark ``strategy`` label, its cold start and options too:
    ``"cg + jacobi, cold"``, ``"rcg + jacobi [recycle_dim=64, recycle_mode=spectral]"``."""
    prec = "" if preconditioner in (None, "", "none", "None") else str(preconditioner)
    label = f"{method} + {prec}" if prec else str(method)
    if strategy:
        base, _, opts = str(strategy).partition("[")
        if base.endswith("-cold"):
            label += ", cold"
        if opts.rstrip("]"):
            label += " [" + ", ".join(opts.rstrip("]").split(",")) + "]"
    return label


def order_optimizers(names: Iterable[str]) -> list[str]:
    """Unique names in registry order; unknown names after them, alphabetically."""
    unique = {str(n) for n in names}
    known = [n for n in OPTIMIZER_ORDER if n in unique]
    return known + sorted(unique - set(OPTIMIZER_ORDER))


# rcParams that make output independent of the machine's fonts, the process and the date.
_RC = {
    "font.family": "DejaVu Sans",  # shipped with matplotlib: no system font lookup
    "mathtext.fontset": "dejavusans",
    "font.size": 9.0,
    "axes.titlesize": 9.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.hashsalt": "kryflow",
    "svg.fonttype": "path",
    "image.interpolation": "nearest",
    "savefig.dpi": 150,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "hatch.linewidth": 0.8,
    "lines.linewidth": 1.4,
    "lines.markersize": 5.0,
}


@contextmanager
def deterministic_style() -> Iterator[None]:
    """rcParams for reproducible figures, scoped so the caller's settings are untouched."""
    with matplotlib.rc_context(_RC):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A figure detached from pyplot (no global figure registry, nothing to close)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``{stem}.png`` and ``{stem}.pdf`` without dates or version strings.

    Returns:
        the two paths, PNG first.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    pdf = out_dir / f"{stem}.pdf"
    fig.savefig(png, format="png", metadata={"Software": None})
    # Freeze the constrained layout found for the PNG: the PDF reuses it instead of
    # solving it again (the slowest part of saving), so both files share one layout.
    if fig.get_layout_engine() is not None:
        fig.set_layout_engine("none")
    fig.savefig(
        pdf,
        format="pdf",
        metadata={"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None},
    )
    return [png, pdf]
