"""Paper figures and tables from ``results/summary.csv``, run histories and solver benchmarks.

Public API:
    FIGURES, register_figure                 the figure registry (one draw function per figure)
    figure_instances(datasets, models, solver_benchmarks) -> list[FigureInstance]
    figure_stems(datasets, models, solver_benchmarks) -> list[str]   names make_figures writes
    make_figures(summary_csv, runs_root, solver_benchmarks, out_dir) -> list[Path]
    make_tables(summary_csv, out_dir, solver_benchmarks=()) -> list[Path]
    aggregate(summary) -> DataFrame          statistics over seeds per (dataset, model, optimizer)
    optimizer_style(name) -> dict            colour, marker, line style, label from the optimizer registry

All output is byte-identical when regenerated from the same inputs (Agg backend, bundled
DejaVu Sans, no dates or version strings in file metadata, sorted ordering).
"""

from kryflow.figures._plots import FIGURES, figure_instances, figure_stems, make_figures, register_figure
from kryflow.figures._results import aggregate
from kryflow.figures._style import OPTIMIZER_ORDER, optimizer_style
from kryflow.figures._tables import make_tables

__all__ = [
    "FIGURES",
    "OPTIMIZER_ORDER",
    "aggregate",
    "figure_instances",
    "figure_stems",
    "make_figures",
    "make_tables",
    "optimizer_style",
    "register_figure",
]
