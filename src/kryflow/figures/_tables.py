"""Paper tables (LaTeX booktabs and Markdown) with the best value per group in bold.

Best values are chosen on the unrounded numbers within each (dataset, model) group
(solver tables: within each sequence); ties are all bold. Cells whose seeds all diverged
or failed say so instead of showing a number.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kryflow.evaluation import Column, column, numeric_columns
from kryflow.figures._results import aggregate, load_solver_benchmark, read_summary
from kryflow.figures._style import OPTIMIZER_ORDER, optimizer_style, order_optimizers, solver_label

__all__ = ["make_tables"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Column:
    header: str
    value: Callable[[pd.Series], float]  # number the best is chosen on (NaN: none)
    text: Callable[[pd.Series], str]
    best: str | None = None  # "min", "max" or None
    align: str = "r"


@dataclass(frozen=True)
class _Table:
    headers: list[str]
    aligns: list[str]
    rows: list[list[tuple[str, bool]]]  # (text, bold)
    groups: list[int]  # group id per row, for spacing between groups


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def _fmt_int(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.0f}"


def _status_text(row: pd.Series) -> str | None:
    """Replacement text when no seed finished."""
    if row["n_finished"] > 0:
        return None
    parts = []
    if row["n_diverged"]:
        parts.append("diverged")
    if row["n_failed"]:
        parts.append("failed")
    return "/".join(parts) or "–"


def _metric(name: str, with_std: bool = False, integer: bool = False) -> tuple[Callable, Callable]:
    def value(row: pd.Series) -> float:
        return float(row[f"{name}_mean"]) if f"{name}_mean" in row else math.nan

    def text(row: pd.Series) -> str:
        status = _status_text(row)
        if status is not None:
            return status
        mean = value(row)
        body = _fmt_int(mean) if integer else _fmt(mean)
        std = float(row.get(f"{name}_std", math.nan))
        if with_std and math.isfinite(mean) and math.isfinite(std):
            body += f" ± {_fmt(std, 2)}"
        return body

    return value, text


def _seeds_text(row: pd.Series) -> str:
    text = f"{row['n_finished']}/{row['n_seeds']}"
    extra = [f"{row['n_diverged']} div."] if row["n_diverged"] else []
    extra += [f"{row['n_failed']} fail."] if row["n_failed"] else []
    return text + (f" ({', '.join(extra)})" if extra else "")


def _id_columns() -> list[_Column]:
    nan: Callable[[pd.Series], float] = lambda _row: math.nan  # noqa: E731
    return [
        _Column("Dataset", nan, lambda r: str(r["dataset"]), align="l"),
        _Column("Model", nan, lambda r: str(r["model"]), align="l"),
        _Column("Optimizer", nan, lambda r: optimizer_style(r["optimizer"])["label"], align="l"),
        _Column("Seeds", nan, _seeds_text),
    ]


def _schema_column(col: Column, header: str | None = None) -> _Column:
    """A table column for a summary column (its header, best direction and format from the schema)."""
    value, text = _metric(col.name, with_std=col.with_std, integer=col.integer)
    return _Column(header or col.header, value, text, col.best)


#: The cost table's columns, in reading order: step cost, time to target, memory, inference, the
#: solver's steady-state cost per sample and its one-time cost (the speed-up uses the steady state).
COST_TABLE = ("seconds_per_step", "train_seconds", "time_to_target_step", "time_to_target_seconds",
              "peak_memory_mb", "inference_seconds_per_sample", "solver_seconds_per_sample", "solver_one_time_seconds",
              "speedup")


def _build(frame: pd.DataFrame, columns: list[_Column], group_keys: list[str]) -> _Table:
    rows: list[list[tuple[str, bool]]] = []
    groups: list[int] = []
    if frame.empty:
        return _Table([c.header for c in columns], [c.align for c in columns], rows, groups)
    group_ids = frame.groupby(group_keys, sort=False).ngroup().to_numpy()
    values = np.array([[c.value(r) for c in columns] for _, r in frame.iterrows()], dtype=np.float64)
    bold = np.zeros_like(values, dtype=bool)
    for g in np.unique(group_ids):
        sel = group_ids == g
        for j, col in enumerate(columns):
            v = values[sel, j]
            if col.best is None or not np.isfinite(v).any():
                continue
            target = np.nanmin(v) if col.best == "min" else np.nanmax(v)
            bold[sel, j] = v == target
    for i, (_, r) in enumerate(frame.iterrows()):
        rows.append([(c.text(r), bool(bold[i, j])) for j, c in enumerate(columns)])
        groups.append(int(group_ids[i]))
    return _Table([c.header for c in columns], [c.align for c in columns], rows, groups)


_TEX_ESCAPE = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def _tex_cell(text: str, bold: bool) -> str:
    out = "".join(_TEX_ESCAPE.get(ch, ch) for ch in text)
    out = out.replace(" ± ", r" $\pm$ ").replace("–", "--")
    return rf"\textbf{{{out}}}" if bold else out


def _md_cell(text: str, bold: bool) -> str:
    out = text.replace("|", r"\|")
    return f"**{out}**" if bold and out else out


def _write_tex(table: _Table, path: Path, title: str, note: str | None = None) -> Path:
    lines = [f"% {title}", "% generated by kryflow.figures.make_tables; best values in bold", ]
    if note:
        lines.append(f"% {note}")
    lines.append(r"\begin{tabular}{" + "".join(table.aligns) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(_tex_cell(h, False) for h in table.headers) + r" \\")
    lines.append(r"\midrule")
    if not table.rows:
        lines.append(rf"\multicolumn{{{len(table.headers)}}}{{c}}{{{_tex_cell(note or 'no results', False)}}} \\")
    previous = None
    for row, group in zip(table.rows, table.groups, strict=True):
        if previous is not None and group != previous:
            lines.append(r"\addlinespace")
        previous = group
        lines.append(" & ".join(_tex_cell(t, b) for t, b in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    path.write_text("\n".join(lines), encoding="utf-8", newline="\n")
    return path


def _write_md(table: _Table, path: Path, title: str, note: str | None = None) -> Path:
    lines = [f"## {title}", "", "Best value per group in **bold**.", ""]
    if note:
        lines += [f"_{note}_", ""]
    lines.append("| " + " | ".join(table.headers) + " |")
    lines.append("| " + " | ".join(":--" if a == "l" else "--:" for a in table.aligns) + " |")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(t, b) for t, b in row) + " |")
    lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8", newline="\n")
    return path


def _write(table: _Table, out_dir: Path, stem: str, title: str, note: str | None = None) -> list[Path]:
    return [
        _write_tex(table, out_dir / f"{stem}.tex", title, note),
        _write_md(table, out_dir / f"{stem}.md", title, note),
    ]


def _solver_frame(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, list[str]]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for p in paths:
        records, why = load_solver_benchmark(Path(p))
        if records is None:
            notes.append(str(why))
            continue
        for rec in records:
            rows.append(
                {
                    "sequence": str(rec.get("sequence", Path(p).stem)),
                    "label": solver_label(str(rec.get("method", "?")), rec.get("preconditioner"), rec.get("strategy")),
                    "default": bool(rec.get("default", False)),
                    **{k: _num(rec.get(k)) for k in (
                        "n_unknowns", "n_systems", "iterations", "matvecs", "seconds", "max_true_relres")},
                }  # fmt: skip
            )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["seconds_per_system"] = frame["seconds"] / frame["n_systems"].where(frame["n_systems"] > 0)
        frame = frame.sort_values(["sequence", "label"], kind="stable").reset_index(drop=True)
    return frame, notes


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _solver_columns() -> list[_Column]:
    nan: Callable[[pd.Series], float] = lambda _row: math.nan  # noqa: E731

    def col(header: str, key: str, best: str | None, integer: bool = False, positive: bool = False) -> _Column:
        fmt = _fmt_int if integer else _fmt

        def value(r: pd.Series) -> float:
            v = float(r[key])
            # A direct solver reports 0 iterations: "not applicable", not the best Krylov count.
            return math.nan if positive and not v > 0 else v

        return _Column(header, value, lambda r: fmt(value(r)), best)

    return [
        _Column("Sequence", nan, lambda r: str(r["sequence"]), align="l"),
        _Column("Method", nan, lambda r: r["label"] + (" (default)" if r["default"] else ""), align="l"),
        col("Unknowns", "n_unknowns", None, integer=True),
        col("Systems", "n_systems", None, integer=True),
        col("Iterations", "iterations", "min", integer=True, positive=True),
        col("Matvecs", "matvecs", "min", integer=True, positive=True),
        col("Seconds", "seconds", "min"),
        col("s/system", "seconds_per_system", "min"),
        col("Max rel. res.", "max_true_relres", None),
    ]


def _tuning_frame(path: str | Path) -> tuple[pd.DataFrame, str | None]:
    """One row per workload and optimizer of the tuning report; its scores and speed-ups as columns."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return pd.DataFrame(), f"unreadable tuning report ({type(exc).__name__})"
    scores, speed = report.get("scores", {}).get("seconds", {}), report.get("speedup", {}).get("seconds", {})
    rows = []
    for name in sorted(report["workloads"]):
        w = report["workloads"][name]
        for opt, o in w["optimizers"].items():
            t = o["time_to_target"]
            ci = o.get("test_rel_l2_ci95") or [math.nan, math.nan]
            rows.append({"workload": name, "optimizer": opt, "target": w["target_val_rel_l2"],
                         "steps": _num(t["steps"]), "seconds": _num(t["seconds"]), "grad_evals": _num(t["grad_evals"]),
                         "test": _num(o["test_rel_l2_mean"]), "ci_lo": _num(ci[0]), "ci_hi": _num(ci[1]),
                         "failed": o["diverged_or_failed_trials"], "score": _num(scores.get(opt)),
                         "speedup": _num((speed.get(opt) or {}).get("geometric_mean")),
                         "per_step": _num(o.get("seconds_per_step")), "memory": _num(o.get("peak_memory_mb")),
                         "heldout": "missed " + ", ".join(o["heldout_missed"]) if o.get("heldout_missed") else "",
                         "why": o.get("not_reached_because") or "", "vs_ref": o.get("test_vs_reference") or ""})
    frame = pd.DataFrame(rows)
    if not frame.empty:  # workloads alphabetically, optimizers in registry order
        rank = {o: i for i, o in enumerate(OPTIMIZER_ORDER)}
        frame = (frame.assign(_r=frame["optimizer"].map(lambda o: rank.get(o, len(rank))))
                 .sort_values(["workload", "_r", "optimizer"], kind="stable").drop(columns="_r").reset_index(drop=True))
    return frame, None


def _report_rows(path: str | Path, section: str, row: Callable[[str, dict, dict, list], dict]) -> list[dict]:
    """One table row per (workload, optimizer) of ``section`` of the tuning report at ``path``, as
    ``row(workload name, workload, optimizer's record, its 95% CI)`` makes it; none when the report
    or the section is missing."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8")).get(section) or {}
    except (OSError, ValueError):
        return []
    rows = []
    for name in sorted(entries):
        w = entries[name]
        for o in order_optimizers(w["optimizers"]):
            r = w["optimizers"][o]
            rows.append({"optimizer": o, **row(name, w, r, r["test_rel_l2_ci95"] or [math.nan, math.nan])})
    return rows


def _finetune_table(path: str | Path, out_dir: Path) -> list[Path]:
    """``finetune``: per shifted workload, the pretrained error and each optimizer's after fine-tuning."""
    rows = _report_rows(path, "finetune", lambda name, w, r, ci: {
        "workload": name, "before": w["before_test_rel_l2"], "after": _num(r["test_rel_l2_mean"]),
        "lo": _num(ci[0]), "hi": _num(ci[1]), "kind": r["budget_kind"], "reached": r["reached_reference"]})
    if not rows:
        return []
    nan: Callable[[pd.Series], float] = lambda _row: math.nan  # noqa: E731
    columns = [
        _Column("Workload", nan, lambda r: str(r["workload"]), align="l"),
        _Column("Optimizer", nan, lambda r: optimizer_style(r["optimizer"])["label"], align="l"),
        _Column("Before", nan, lambda r: _fmt(float(r["before"]))),
        _Column("After [95% CI]", lambda r: float(r["after"]),
                lambda r: f"{_fmt(r['after'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}]", "min"),
        _Column("Budget", nan, lambda r: str(r["kind"]), align="l"),
        _Column("Reaches reference", nan, lambda r: "yes" if r["reached"] else "no", align="l"),
    ]
    return _write(_build(pd.DataFrame(rows), columns, ["workload"]), out_dir, "finetune",
                  "Fine-tuning a trained model to a shifted dataset (test rel. L2)",
                  "zeroth order on the gradient evaluations the reference's steps cost (budget grad_evals)")


def _tuning_columns() -> list[_Column]:
    nan: Callable[[pd.Series], float] = lambda _row: math.nan  # noqa: E731

    def col(header: str, key: str, best: str | None, integer: bool = False) -> _Column:
        fmt = _fmt_int if integer else _fmt
        return _Column(header, lambda r: float(r[key]), lambda r: fmt(float(r[key])) if math.isfinite(r[key])
                       else "not reached", best)

    return [
        _Column("Workload", nan, lambda r: str(r["workload"]), align="l"),
        _Column("Optimizer", nan, lambda r: optimizer_style(r["optimizer"])["label"], align="l"),
        _Column("Target", nan, lambda r: _fmt(float(r["target"]))),
        col("Steps to target", "steps", "min", integer=True),
        col("s to target", "seconds", "min"),
        col("Grad. evals to target", "grad_evals", "min", integer=True),
        _Column("Test rel. L2 [95% CI]", lambda r: float(r["test"]),
                lambda r: f"{_fmt(r['test'])} [{_fmt(r['ci_lo'])}, {_fmt(r['ci_hi'])}]", "min"),
        _Column("vs. reference (95% CIs)", nan, lambda r: str(r.get("vs_ref", "")), align="l"),
        _Column("Failed trials", nan, lambda r: _fmt_int(float(r["failed"]))),
        _Column("Score", nan, lambda r: _fmt(float(r["score"]))),
        _Column("Speed-up vs ref.", nan, lambda r: _fmt(float(r["speedup"]))),
        col("s/step", "per_step", "min"),
        col("Peak MB", "memory", "min"),
        _Column("Held-out", nan, lambda r: str(r["heldout"]), align="l"),
        _Column("Not reached because", nan, lambda r: str(r.get("why", "")), align="l"),
    ]


def _heldout_table(path: str | Path, out_dir: Path) -> list[Path]:
    """``heldout``: per held-out variant, its target and each optimizer's time to it and test error."""
    rows = _report_rows(path, "heldout", lambda name, w, r, ci: {
        "workload": f"{name} (of {w['source']})", "target": _num(w["target_val_rel_l2"]),
        "steps": _num(r["time_to_target"]["steps"]), "seconds": _num(r["time_to_target"]["seconds"]),
        "test": _num(r["test_rel_l2_mean"]), "ci_lo": _num(ci[0]), "ci_hi": _num(ci[1]), "reached": r["reached"]})
    if not rows:
        return []
    by_key = {c.header: c for c in _tuning_columns()}
    nan: Callable[[pd.Series], float] = lambda _row: math.nan  # noqa: E731
    columns = [by_key[h] for h in ("Workload", "Optimizer", "Target", "Steps to target", "s to target",
                                   "Test rel. L2 [95% CI]")]
    columns.append(_Column("Reached", nan, lambda r: "yes" if r["reached"] else "no", align="l"))
    return _write(_build(pd.DataFrame(rows), columns, ["workload"]), out_dir, "heldout",
                  "Held-out variants: the setting selected on the base workload, trained on the variant",
                  "an optimizer that misses a variant's target scores as never reaching its base workload's")


def make_tables(
    summary_csv: str | Path,
    out_dir: str | Path,
    solver_benchmarks: Sequence[str | Path] = (),
    tuning_report: str | Path | None = None,
) -> list[Path]:
    """Write the paper tables; byte-identical when rerun on the same inputs.

    Files (each ``.tex`` with booktabs rules and ``.md``): ``test_error`` (accuracy per
    cell, mean ± std over finished seeds), ``cost`` (time, memory, speed-up),
    ``transfer`` (resolution transfer; a note when there are no results), ``rollout`` (next-step
    models' rollouts; a note when there are none) and, when
    ``solver_benchmarks`` is given, ``solver_times`` (the benchmark's time table); with a
    ``tuning_report``, ``tuning`` (the tuned comparison per workload and optimizer), ``finetune`` and ``heldout`` where
    those workloads are configured. Also
    ``aggregate.csv``: the full output of :func:`kryflow.figures.aggregate`.

    Returns:
        paths written, in a stable order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, why = read_summary(summary_csv)
    note = why
    if why:
        log.warning("tables: %s", why)
    agg = aggregate(summary)
    paths: list[Path] = []

    csv_path = out_dir / "aggregate.csv"
    agg.to_csv(csv_path, index=False, lineterminator="\n", float_format="%.10g")
    paths.append(csv_path)

    group = ["dataset", "model"]
    accuracy = _id_columns() + [_schema_column(c) for c in numeric_columns() if c.table == "test_error"]
    paths += _write(_build(agg, accuracy, group), out_dir, "test_error",
                    "Test error over seeds (physical units)", note)  # fmt: skip

    cost = _id_columns() + [_schema_column(column(name)) for name in COST_TABLE]
    paths += _write(_build(agg, cost, group), out_dir, "cost", "Training and inference cost", note)

    has_transfer = not agg.empty and bool(agg["transfer_rel_l2_n"].sum() > 0)
    transfer = _id_columns() + [_schema_column(column("test_rel_l2_mean"), header="Test rel. L2")] + [
        _schema_column(c) for c in numeric_columns() if c.table == "transfer"]
    # Only datasets with transfer results (the others have no finer grid configured).
    with_transfer = agg.groupby("dataset", sort=False)["transfer_rel_l2_n"].transform("sum") > 0 if has_transfer else None
    frame = agg[with_transfer] if has_transfer else agg.iloc[0:0]
    paths += _write(_build(frame, transfer, group), out_dir, "transfer", "Resolution transfer",
                    note if has_transfer else "no resolution-transfer results")  # fmt: skip

    # next-step models: their rollouts (only datasets with rollout results)
    has_rollout = not agg.empty and bool(agg["onestep_rel_l2_n"].sum() > 0)
    rolled = _id_columns() + [_schema_column(c) for c in numeric_columns() if c.table == "rollout"]
    with_rollout = agg.groupby("dataset", sort=False)["onestep_rel_l2_n"].transform("sum") > 0 if has_rollout else None
    # bold marks the best model and optimizer per dataset: next-step models are compared with each other
    paths += _write(_build(agg[with_rollout] if has_rollout else agg.iloc[0:0], rolled, ["dataset"]), out_dir, "rollout",
                    "Rollouts from the first k states of every test trajectory: rel. L2 at rolled-out steps; steps and time "
                    "with correlation >= 0.8",
                    note if has_rollout else "no next-step (rollout) results")

    if solver_benchmarks:
        solver, notes = _solver_frame(solver_benchmarks)
        table = _build(solver, _solver_columns(), ["sequence"])
        paths += _write(table, out_dir, "solver_times", "Solver benchmark",
                        "; ".join(notes) if notes else None)  # fmt: skip
    if tuning_report is not None:
        paths += _finetune_table(tuning_report, out_dir)
        paths += _heldout_table(tuning_report, out_dir)
        frame, why = _tuning_frame(tuning_report)
        paths += _write(_build(frame, _tuning_columns(), ["workload"]), out_dir, "tuning",
                        "Tuned comparison: time to target (median over studies), test error of the reruns",
                        why or "score: area under the wall-clock performance profile on [1, 4] / 3; speed-up: "
                        "geometric mean over workloads of reference time / time")  # fmt: skip
    return paths
