"""Where the workflow's files live: the one place the data and results layout is written.

Used by the Snakemake rules (``workflow/rules/common.smk``), the command line, the stages
(:mod:`kryflow.pipeline`) and the figures. Every pattern is relative to the workflow's working
directory and doubles as a Snakemake wildcard pattern (``{dataset}``, ``{model}``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DATA_DIR", "RESULTS_DIR", "RUNS_DIR", "FIGURES_DIR", "TABLES_DIR", "TRACKING_JSON", "SUMMARY_CSV",
    "SUMMARY_AGGREGATE_CSV", "DATASET", "IMPORTED_HI", "CELL", "RUN_DIR", "SOLVER_BENCHMARK",
    "dataset_path", "rule_benchmark", "rule_log", "run_dir", "run_file", "runs_root_of", "solver_benchmark_path",
]

DATA_DIR = "data"
RESULTS_DIR = "results"
RUNS_DIR = f"{RESULTS_DIR}/runs"
FIGURES_DIR = f"{RESULTS_DIR}/figures"
TABLES_DIR = f"{RESULTS_DIR}/tables"
TRACKING_JSON = f"{RESULTS_DIR}/tracking.json"
SUMMARY_CSV = f"{RESULTS_DIR}/summary.csv"
SUMMARY_AGGREGATE_CSV = f"{RESULTS_DIR}/summary_aggregate.csv"

#: One dataset store, and the finer-grid test set of an imported dataset (``<name>__hi``).
DATASET = f"{DATA_DIR}/{{dataset}}.zarr"
IMPORTED_HI = f"{DATA_DIR}/{{dataset}}__hi.zarr"
#: One training cell's folder (``model.pt``, ``history.csv``, ``train.json``, ``metrics.json``, ...).
CELL = "{dataset}/{model}/{optimizer}/{seed}"
RUN_DIR = f"{RUNS_DIR}/{CELL}"
#: One dataset's solver benchmark.
SOLVER_BENCHMARK = f"{RESULTS_DIR}/solvers/{{dataset}}.json"

Root = str | os.PathLike


def dataset_path(name: str, root: Root = ".") -> Path:
    """``data/<name>.zarr`` under ``root``."""
    return Path(root) / DATASET.format(dataset=name)


def run_dir(dataset: str, model: str, optimizer: str, seed: int | str, runs_root: Root = RUNS_DIR) -> Path:
    """A training cell's folder under ``runs_root`` (default ``results/runs``)."""
    return Path(runs_root) / CELL.format(dataset=dataset, model=model, optimizer=optimizer, seed=seed)


def run_file(cell, filename: str, runs_root: Root = RUNS_DIR) -> Path:
    """``filename`` in the folder of ``cell`` (``(dataset, model, optimizer, seed)``)."""
    return run_dir(*cell, runs_root=runs_root) / filename


def runs_root_of(run_file: Root) -> Path:
    """The runs root of a file inside a cell's folder (the inverse of :func:`run_file`)."""
    return Path(run_file).parents[CELL.count("/") + 1]


def solver_benchmark_path(name: str, root: Root = ".") -> Path:
    """``results/solvers/<name>.json`` under ``root``."""
    return Path(root) / SOLVER_BENCHMARK.format(dataset=name)


def rule_log(rule: str, job: str | None = None) -> str:
    """A rule's log file; ``job`` is its wildcards as a pattern (e.g. :data:`CELL`), None for a single job."""
    return f"logs/{rule}/{job}.log" if job else f"logs/{rule}.log"


def rule_benchmark(rule: str, job: str | None = None) -> str:
    """A rule's Snakemake benchmark file (per-job time and memory), like :func:`rule_log`."""
    base = f"{RESULTS_DIR}/benchmarks/rules/{rule}"
    return f"{base}/{job}.tsv" if job else f"{base}.tsv"
