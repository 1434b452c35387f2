"""Figures and tables: aggregation, styles, reproducibility, files that open, odd inputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from kryflow.figures import (
    OPTIMIZER_ORDER,
    aggregate,
    figure_stems,
    make_figures,
    make_tables,
    optimizer_style,
)

SUMMARY_COLUMNS = [
    "dataset", "model", "optimizer", "seed", "status", "test_rel_l2_mean", "test_rel_l2_median",
    "test_rel_l2_p90", "test_nrmse", "test_max_error", "test_err_low", "test_err_mid",
    "test_err_high", "transfer_rel_l2", "seconds_per_step", "train_seconds", "steps",
    "peak_memory_mb", "inference_seconds_per_sample", "solver_seconds_per_sample", "speedup",
    "time_to_target_step", "time_to_target_seconds", "run_id",
]  # fmt: skip


def _row(dataset: str, model: str, opt: str, seed: int, status: str, err: float, **kw: float) -> dict:
    row = {c: np.nan for c in SUMMARY_COLUMNS}
    row.update(dataset=dataset, model=model, optimizer=opt, seed=seed, status=status, run_id=f"r{seed}")
    if status == "finished":
        row.update(
            test_rel_l2_mean=err, test_rel_l2_median=0.9 * err, test_rel_l2_p90=1.5 * err,
            test_nrmse=0.3 * err, test_max_error=2.0 * err, test_err_low=0.5 * err,
            test_err_mid=0.3 * err, test_err_high=0.1 * err, train_seconds=100.0 + seed,
            steps=50, peak_memory_mb=512.0, inference_seconds_per_sample=1e-3,
            solver_seconds_per_sample=0.1, speedup=100.0, time_to_target_step=20,
            time_to_target_seconds=40.0 + seed,
        )  # fmt: skip
    row["seconds_per_step"] = {"adam": 0.01, "sophiah": 0.03, "kfac": 0.05, "lbfgs": 0.08}.get(opt, 0.02)
    row.update(kw)
    return row


def _history(path: Path, err: float, *, diverge: bool = False, seconds_per_step: float = 0.01) -> None:
    steps = np.arange(0, 50)
    val = np.full(steps.size, np.nan)
    val[::5] = err * (1.0 + 10.0 * np.exp(-steps[::5] / 10.0))
    if diverge:
        val[30:] = np.nan
        val[25] = np.inf
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "step": steps, "epoch": steps // 10, "seconds": (steps + 1) * seconds_per_step,
            "train_loss": 1.0 / (steps + 1), "val_rel_l2": val, "lr": 1e-3,
            "step_seconds": seconds_per_step,
        }  # fmt: skip
    ).to_csv(path, index=False)


def _predictions(path: Path, grid: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(4, 1) + grid)
    np.savez(path, x=rng.normal(size=(4, 2) + grid), y=y, pred=y + 0.1 * rng.normal(size=y.shape))


def _solver_json(path: Path) -> None:
    records = []
    for method, prec, its, default in (
        ("cold", "none", 40, False),
        ("warm", "none", 30, False),
        ("recycled", "amg", 8, True),
        ("direct", None, None, False),
    ):
        per = [
            {"iterations": None if its is None else its - (i % 3), "matvecs": None if its is None else its + 1,
             "rel_residual": 1e-9, "seconds": 0.01 * (its or 5), "recycle_dim": 4 if method == "recycled" else 0}
            for i in range(12)
        ]  # fmt: skip
        records.append(
            {
                "sequence": "darcy", "method": method, "preconditioner": prec, "n_unknowns": 1024,
                "n_systems": 12, "matvecs": sum((p["matvecs"] or 0) for p in per),
                "iterations": sum((p["iterations"] or 0) for p in per),
                "seconds": sum(p["seconds"] for p in per), "max_true_relres": 1e-9,
                "default": default, "per_solve": per,
            }  # fmt: skip
        )
    path.write_text(json.dumps(records), encoding="utf-8")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic 2D results: two models, diverged/failed runs, missing files, NaNs."""
    root = tmp_path_factory.mktemp("results")
    runs = root / "runs"
    rows = []
    errs = {"adam": 0.05, "sophiah": 0.03, "kfac": 0.08, "mkor_h": 0.06}
    for model in ("fno", "unet"):
        for opt, base in errs.items():
            for seed in (0, 1):
                status = "diverged" if (opt == "kfac" and seed == 1) else "finished"
                err = base * (1.0 + 0.1 * seed) * (1.2 if model == "unet" else 1.0)
                rows.append(_row("darcy", model, opt, seed, status, err, transfer_rel_l2=2.0 * err))
                cell = runs / "darcy" / model / opt / str(seed)
                cell.mkdir(parents=True, exist_ok=True)
                if not (opt == "sophiah" and seed == 1):  # a finished run without history
                    _history(cell / "history.csv", err, diverge=status == "diverged")
                if opt == "sophiah" and seed == 0 and model == "fno":
                    continue  # best run's predictions missing: the figure falls back to the next
                _predictions(cell / "predictions.npz", (8, 8), seed)
        for seed in (0, 1):  # every seed of lbfgs diverged or failed
            rows.append(_row("darcy", model, "lbfgs", seed, "diverged" if seed == 0 else "failed", np.nan))
        _history(runs / "darcy" / model / "lbfgs" / "0" / "history.csv", 0.5, diverge=True)
    summary = root / "summary.csv"
    pd.DataFrame(rows, columns=SUMMARY_COLUMNS).to_csv(summary, index=False)
    bench = root / "solvers" / "darcy.json"
    bench.parent.mkdir()
    _solver_json(bench)
    broken = root / "solvers" / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    return {"summary": summary, "runs": runs, "bench": bench, "broken": broken, "root": root}


def _generate(results: dict[str, Path], out: Path) -> list[Path]:
    benches = [results["bench"], results["broken"]]
    figures = make_figures(results["summary"], results["runs"], benches, out / "figures")
    tables = make_tables(results["summary"], out / "tables", solver_benchmarks=[results["bench"]])
    return figures + tables


_SUBPROCESS_CODE = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import test_figures as t
from kryflow.figures import optimizer_style
r = {k: Path(v) for k, v in zip(sys.argv[2:-1:2], sys.argv[3:-1:2])}
t._generate(r, Path(sys.argv[-1]))
print(optimizer_style("my_new_opt"))
"""


@pytest.fixture(scope="module")
def generated(
    results: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Path], Path, subprocess.CompletedProcess]:
    """The same inputs rendered twice: here, and at the same time in a fresh process with
    another hash seed (so process-dependent ordering or hashing would show)."""
    out, again = tmp_path_factory.mktemp("gen1"), tmp_path_factory.mktemp("gen2")
    args = [a for k, v in results.items() for a in (k, str(v))]
    env = {**os.environ, "PYTHONHASHSEED": "4242", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SUBPROCESS_CODE, str(Path(__file__).parent), *args, str(again)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    paths = _generate(results, out)
    stdout, stderr = proc.communicate(timeout=300)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out, paths, again, done


# ------------------------------------------------------------------------ styles


def test_optimizer_styles_are_unique_and_greyscale_distinguishable() -> None:
    styles = [optimizer_style(name) for name in OPTIMIZER_ORDER]
    assert len({s["color"] for s in styles}) == len(styles)
    assert len({s["label"] for s in styles}) == len(styles)
    # Without colour, marker and line style still tell every optimizer apart.
    assert len({(s["marker"], s["linestyle"]) for s in styles}) == len(styles)
    assert len({s["marker"] for s in styles}) == len(styles)


def test_optimizer_style_is_stable_and_defensive() -> None:
    first = optimizer_style("adam")
    first["color"] = "red"  # mutating a returned dict must not change the table
    assert optimizer_style("adam")["color"] != "red"
    assert optimizer_style("my_new_opt") == optimizer_style("my_new_opt")
    assert set(optimizer_style("my_new_opt")) == {"color", "marker", "linestyle", "label"}


def test_fallback_style_same_in_another_process(generated: tuple) -> None:
    *_, proc = generated
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(optimizer_style("my_new_opt"))


# --------------------------------------------------------------------- aggregate


def test_aggregate_hand_computed() -> None:
    summary = pd.DataFrame(
        [
            _row("d", "m", "adam", 0, "finished", 0.1),
            _row("d", "m", "adam", 1, "finished", 0.3),
            _row("d", "m", "adam", 2, "diverged", np.nan, test_rel_l2_mean=1e6),
            _row("d", "m", "sgd", 0, "failed", np.nan),
        ],
        columns=SUMMARY_COLUMNS,
    )
    agg = aggregate(summary)
    assert list(agg["optimizer"]) == ["sgd", "adam"]  # registry order, not alphabetical
    adam = agg.set_index("optimizer").loc["adam"]
    assert (adam["n_seeds"], adam["n_finished"], adam["n_diverged"], adam["n_failed"]) == (3, 2, 1, 0)
    # The diverged seed's 1e6 is excluded: mean of 0.1 and 0.3, sample std sqrt(0.02).
    assert adam["test_rel_l2_mean_mean"] == pytest.approx(0.2)
    assert adam["test_rel_l2_mean_std"] == pytest.approx(math.sqrt(0.02))
    assert adam["test_rel_l2_mean_min"] == pytest.approx(0.1)
    assert adam["test_rel_l2_mean_max"] == pytest.approx(0.3)
    assert adam["test_rel_l2_mean_n"] == 2
    assert adam["transfer_rel_l2_n"] == 0 and math.isnan(adam["transfer_rel_l2_mean"])
    sgd = agg.set_index("optimizer").loc["sgd"]
    assert sgd["n_failed"] == 1 and sgd["test_rel_l2_mean_n"] == 0
    assert "seed_mean" not in agg.columns and "run_id_mean" not in agg.columns


# ------------------------------------------------------------ figures and tables


def test_expected_files_written(results: dict[str, Path], generated: tuple) -> None:
    out, paths, *_ = generated
    assert all(p.is_file() for p in paths)
    stems = figure_stems(["darcy"], ["fno", "unet"], [results["bench"], results["broken"]])
    figs = sorted(p.name for p in paths if p.parent.name == "figures")
    assert figs == sorted([f"{s}.{ext}" for s in stems for ext in ("png", "pdf")])
    tables = sorted(p.name for p in paths if p.parent.name == "tables")
    # transfer and rollout are written whether or not such results exist (a note says when none do)
    kinds = ("test_error", "cost", "transfer", "rollout", "solver_times")
    expected = ["aggregate.csv"] + [f"{t}.{e}" for t in kinds for e in ("tex", "md")]
    assert tables == sorted(expected)
    rollout = next(p for p in paths if p.name == "rollout.md").read_text()
    assert "no next-step (rollout) results" in rollout


def test_png_and_pdf_files_open(generated: tuple) -> None:
    _, paths, *_ = generated
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            image = matplotlib.image.imread(p)
            assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        elif p.suffix == ".pdf":
            data = p.read_bytes()
            assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
            assert b"CreationDate" not in data


def test_regeneration_is_byte_identical(generated: tuple) -> None:
    """A second run, in a fresh process with another hash seed, writes the same bytes."""
    first_dir, first, again, proc = generated
    assert proc.returncode == 0, proc.stderr
    for p in first:
        other = again / p.relative_to(first_dir)
        assert other.read_bytes() == p.read_bytes(), f"{p.name} differs on regeneration"
    second = sorted(q.relative_to(again) for q in again.rglob("*") if q.is_file())
    assert second == sorted(p.relative_to(first_dir) for p in first)


def test_tables_mark_best_and_diverged(generated: tuple) -> None:
    out, *_ = generated
    tex = (out / "tables" / "test_error.tex").read_text()
    md = (out / "tables" / "test_error.md").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    # sophiah is best for darcy/fno: 0.03 and 0.033 -> mean 0.0315.
    assert r"\textbf{0.0315 $\pm$ 0.0021}" in tex
    assert "| darcy | fno | Sophia-H | 2/2 | **0.0315 ± 0.0021** |" in md
    assert "| darcy | fno | L-BFGS | 0/2 (1 div., 1 fail.) | diverged/failed |" in md
    assert "| darcy | fno | K-FAC | 1/2 (1 div.) |" in md
    assert "MKOR-H" in tex  # labels, not raw names with unescaped underscores
    solver = (out / "tables" / "solver_times.md").read_text()
    assert "recycled + amg (default)" in solver and "| **84** | **108** |" in solver  # fewest Krylov its
    assert "| darcy | direct | 1024 | 12 | – | – | **0.6** |" in solver  # fastest, no iterations
    cost = (out / "tables" / "cost.tex").read_text()
    assert r"\textbf{0.01}" in cost  # adam has the cheapest step


def test_missing_results_give_note_figures(tmp_path: Path) -> None:
    """No summary, no runs, no benchmarks: configured names still get (note) figures."""
    paths = make_figures(
        tmp_path / "nope.csv", tmp_path / "runs", [tmp_path / "x.json"], tmp_path / "fig",
        datasets=["darcy"], models=["fno"],
    )  # fmt: skip
    assert sorted(p.stem for p in paths if p.suffix == ".png") == sorted(figure_stems(["darcy"], ["fno"], ["x.json"]))
    tables = make_tables(tmp_path / "nope.csv", tmp_path / "tab")
    assert all(p.is_file() for p in paths + tables)
    assert "cannot read" in (tmp_path / "tab" / "test_error.md").read_text()


def test_3d_dataset_without_transfer(tmp_path: Path) -> None:
    """3D predictions (middle z slice), no transfer results, a NaN metric: no crash."""
    runs = tmp_path / "runs"
    rows = [_row("heat3d", "fno", "adam", s, "finished", 0.02 + 0.01 * s, test_nrmse=np.nan) for s in (0, 1)]
    rows.append(_row("darcy", "fno", "adam", 0, "finished", 0.05, transfer_rel_l2=0.1))
    for seed in (0, 1):
        cell = runs / "heat3d" / "fno" / "adam" / str(seed)
        cell.mkdir(parents=True)
        _history(cell / "history.csv", 0.02)
        _predictions(cell / "predictions.npz", (6, 6, 5), seed)
    summary = tmp_path / "summary.csv"
    pd.DataFrame(rows, columns=SUMMARY_COLUMNS).to_csv(summary, index=False)
    paths = make_figures(summary, runs, [], tmp_path / "fig", datasets=["heat3d"])
    assert sorted(p.stem for p in paths if p.suffix == ".png") == sorted(figure_stems(["heat3d"], ["fno"]))
    image = matplotlib.image.imread(tmp_path / "fig" / "predictions_heat3d_fno.png")
    assert image.shape[0] > 100
    tables = make_tables(summary, tmp_path / "tab")
    md = (tmp_path / "tab" / "transfer.md").read_text()
    assert "| darcy | fno | Adam |" in md and "heat3d" not in md  # only datasets with transfer
    assert "| heat3d | fno | Adam | 2/2 | **0.025 ± 0.0071** | **0.0225** | **0.0375** | – |" in (
        tmp_path / "tab" / "test_error.md"
    ).read_text()
    assert all(p.is_file() for p in tables)


def test_solver_variants_get_their_own_rows_and_styles(results: dict[str, Path], tmp_path: Path) -> None:
    # the benchmark runs several strategies per method + preconditioner (cold start, recycle
    # sizes, recycle modes): tables and figures must tell them apart
    per = [{"iterations": 10, "matvecs": 11, "rel_residual": 1e-9, "seconds": 0.01, "recycle_dim": 0}] * 3
    strategies = [("cg", "cg+jacobi-cold"), ("cg", "cg+jacobi"), ("rcg", "rcg+jacobi"),
                  ("rcg", "rcg+jacobi[recycle_dim=64,recycle_mode=spectral]")]
    records = [{"sequence": "darcy", "strategy": s, "method": m, "preconditioner": "jacobi", "n_unknowns": 64,
                "n_systems": 3, "matvecs": 33, "iterations": 30 + i, "seconds": 0.03, "max_true_relres": 1e-9,
                "default": s == "cg+jacobi", "per_solve": per} for i, (m, s) in enumerate(strategies)]
    bench = tmp_path / "variants.json"
    bench.write_text(json.dumps(records), encoding="utf-8")
    make_tables(results["summary"], tmp_path / "tables", solver_benchmarks=[bench])
    table = (tmp_path / "tables" / "solver_times.md").read_text()
    for label in ("cg + jacobi, cold", "cg + jacobi (default)", "rcg + jacobi |",
                  "rcg + jacobi [recycle_dim=64, recycle_mode=spectral]"):
        assert label in table, label
    from kryflow.figures._style import solver_styles

    # 17 strategies as the benchmark runs on an SPD sequence: no two share colour and marker
    many = [("cg", "jacobi", f"cg+jacobi[opt={i}]") for i in range(17)]
    styles = list(solver_styles(many + [(m, "jacobi", s) for m, s in strategies]).values())
    assert len(styles) == 21 and len({(s["color"], s["marker"]) for s in styles}) == 21
    made = make_figures(results["summary"], results["runs"], [bench], tmp_path / "figures")
    assert any(p.name == "solver_variants.png" for p in made)
