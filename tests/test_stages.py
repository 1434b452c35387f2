"""Every workflow stage through the stage kernel, on a real sqlite MLflow store: an exception in
any stage leaves its run FAILED with the reason, never RUNNING."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kryflow.pipeline import (
    init_tracking,
    run_evaluate,
    run_figures,
    run_generate,
    run_import,
    run_solver_benchmark,
    run_train,
)

TRAIN = {"batch_size": 4, "max_steps": 2, "eval_every": 2, "checkpoint_every": 2, "device": "cpu"}
SPEC = {"model": {"name": "fno", "width": 4, "modes": 2, "layers": 1}, "optimizer": {"name": "adam", "lr": 1e-3}}
CELL = {"dataset": "syn", "model": "fno", "optimizer": "adam", "seed": 0}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh sqlite store and its tracking.json; returns (tracking_json, MlflowClient)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    info = init_tracking("stages", {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, tmp_path / "tracking.json",
                         tmp_path)
    return tmp_path / "tracking.json", MlflowClient(tracking_uri=info["uri"])


def _run(client, key):
    exp = client.get_experiment_by_name("stages")
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`kryflow.key` = '{key}'")
    return run


def _assert_failed(client, key, reason):
    run = _run(client, key)
    assert run.info.status == "FAILED", (key, run.info.status)
    assert run.data.tags["status"] == "failed"
    assert run.data.tags["status_reason"].startswith(reason), run.data.tags["status_reason"]


def _dataset(tmp_path):
    from kryflow.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path / "syn.zarr", num_samples=24, grid=(8, 8), chunk_samples=8)


def test_generate_that_misses_its_tolerance_fails_its_run(store, tmp_path):
    tracking, client = store
    spec = {"family": "darcy", "params": {"n": 8}, "num_samples": 4, "seed": 0, "chunk_samples": 2,
            "splits": [0.5, 0.25, 0.25], "solver": {"method": "cg", "preconditioner": "none", "maxiter": 2}}
    with pytest.raises(Exception, match="maxiter=2"):
        run_generate("bad", spec, "stages", tmp_path / "bad.zarr", tracking)
    _assert_failed(client, "generate/bad", "SolverDidNotConverge")
    assert not (tmp_path / "bad.zarr").exists()


def test_import_of_missing_files_fails_its_run(store, tmp_path):
    tracking, client = store
    source = {"kind": "neuraloperator_darcy", "train": str(tmp_path / "nope.pt"), "test": str(tmp_path / "nope.pt"),
              "test_hi": str(tmp_path / "nope.pt")}
    with pytest.raises(Exception):
        run_import("ext", source, tmp_path / "ext.zarr", tracking, transfer_out=tmp_path / "ext__hi.zarr")
    run = _run(client, "generate/ext")
    assert run.info.status == "FAILED" and "nope.pt" in run.data.tags["status_reason"]


def test_solver_benchmark_with_bad_family_fails_its_run(store, tmp_path):
    tracking, client = store
    spec = {"family": "darcy", "params": {"n": 2}, "num_samples": 3, "seed": 0}
    with pytest.raises(ValueError, match="n must be"):
        run_solver_benchmark("tiny", spec, {"num_samples": 2}, tmp_path / "tiny.json", tracking)
    _assert_failed(client, "solver_benchmark/tiny", "ParameterError: n must be")


def test_train_with_bad_hyperparameter_fails_its_run(store, tmp_path):
    tracking, client = store
    spec = {**SPEC, "optimizer": {"name": "adam", "lr": -1.0}}
    with pytest.raises(ValueError, match="lr must be"):
        run_train(CELL, spec, TRAIN, _dataset(tmp_path), tmp_path / "run", tracking, progress=False)
    _assert_failed(client, "train/syn/fno/adam/0", "ParameterError: lr must be")


def test_evaluate_of_a_broken_model_fails_the_cell_run(store, tmp_path):
    tracking, client = store
    data, out = _dataset(tmp_path), tmp_path / "run"
    info = run_train(CELL, SPEC, TRAIN, data, out, tracking, progress=False)
    assert client.get_run(info["run_id"]).info.status == "FINISHED"
    (out / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):
        run_evaluate(CELL, {"targets": [0.5]}, "cpu", data, out, tracking)
    run = client.get_run(info["run_id"])
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert run.data.tags["status_reason"]


def test_figures_with_an_unknown_cell_run_fail_the_report_run(store, tmp_path):
    import pandas as pd

    from kryflow.evaluation import summary_columns

    tracking, client = store
    row = {c: None for c in summary_columns()}
    row.update(dataset="syn", model="fno", optimizer="adam", seed=0, status="finished", run_id="deadbeef" * 4)
    pd.DataFrame([row]).to_csv(tmp_path / "summary.csv", index=False)
    with pytest.raises(Exception):
        run_figures(tmp_path / "summary.csv", tmp_path / "runs", [], tmp_path / "figures", tmp_path / "tables",
                    tracking, datasets=["syn"], models=["fno"])
    run = _run(client, "report")
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert "deadbeef" * 4 in run.data.tags["status_reason"]


def test_a_stage_that_succeeds_finishes_its_run(store, tmp_path):
    tracking, client = store
    spec = {"family": "darcy", "params": {"n": 8}, "num_samples": 4, "seed": 0}
    records = run_solver_benchmark("ok", spec, {"num_samples": 2, "repeats": 1}, tmp_path / "ok.json", tracking)
    assert records and json.loads(Path(tmp_path / "ok.json").read_text())
    run = _run(client, "solver_benchmark/ok")
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
