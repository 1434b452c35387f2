"""The tiny workflow against a real `mlflow server` on PostgreSQL, over HTTP on loopback."""

from __future__ import annotations

import glob
import json
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from conftest import run_snakemake, write_config

pytestmark = pytest.mark.skipif(
    not glob.glob("/usr/lib/postgresql/*/bin/initdb") and shutil.which("initdb") is None,
    reason="PostgreSQL server not installed (apt-get install -y postgresql; .ci/run does it)",
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    from kryflow.tracking import start_server, stop_server

    state = Path(tempfile.mkdtemp(prefix="kryflow-mlflow-"))
    info = start_server(state, port=_port())
    try:
        yield info
    finally:
        stop_server(state)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
def test_tiny_workflow_logs_to_server_over_http(server, tmp_path, tiny_config):
    from mlflow.tracking import MlflowClient

    # server binds loopback only, credentials stay out of the state a user would share
    assert server["uri"].startswith("http://127.0.0.1:")
    assert "password" not in json.dumps(server)
    tiny_config["datasets"] = {"darcy": tiny_config["datasets"]["darcy"]}
    tiny_config["datasets"]["darcy"].pop("transfer")
    tiny_config["models"] = {"fno": tiny_config["models"]["fno"]}
    tiny_config["optimizers"] = {"adam": tiny_config["optimizers"]["adam"]}
    tiny_config["seeds"] = [0, 1]
    cfg = write_config(tmp_path / "tiny.yaml", tiny_config)
    proc = run_snakemake(tmp_path, cfg, env={"MLFLOW_TRACKING_URI": server["uri"]})
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to a local sqlite store
    client = MlflowClient(tracking_uri=server["uri"])
    exp = client.get_experiment_by_name(tiny_config["experiment"])
    runs = client.search_runs([exp.experiment_id], max_results=100)
    keys = sorted(r.data.tags["kryflow.key"] for r in runs)
    assert keys.count("train/darcy/fno/adam/0") == 1 and keys.count("train/darcy/fno/adam/1") == 1
    assert "generate/darcy" in keys and "solver_benchmark/darcy" in keys
    for r in runs:
        assert r.info.status == "FINISHED"
    train = next(r for r in runs if r.data.tags["kryflow.key"] == "train/darcy/fno/adam/0")
    assert "test_rel_l2_mean" in train.data.metrics
    # the model artifact went through the server's artifact proxy
    arts = [a.path for a in client.list_artifacts(train.info.run_id)]
    assert "history.csv" in arts


def _log_same_dataset(uri: str, i: int, path: str) -> None:
    from kryflow.tracking import Tracker

    t = Tracker(uri, "race", key=f"race/{i}", run_name=f"race-{i}", tags={})
    t.log_dataset("shared/test", path, "abc123", context="evaluation")
    t.finish("finished")


@pytest.mark.slow
def test_jobs_registering_one_dataset_at_once_all_succeed(server, tmp_path):
    """Found by the SLURM test: the server's dataset get-or-create is not atomic on PostgreSQL."""
    import multiprocessing as mp

    from mlflow.tracking import MlflowClient

    from kryflow.tracking import ensure_experiment

    exp = ensure_experiment(server["uri"], "race")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_log_same_dataset, args=(server["uri"], i, str(tmp_path))) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * 6
    runs = MlflowClient(tracking_uri=server["uri"]).search_runs([exp])
    assert len(runs) == 6 and all(len(r.inputs.dataset_inputs) == 1 for r in runs)


def _batch_job(uri: str, tracking_json: str, data: str, out: str, job: int) -> None:
    """One tuning batch job (3 trials) of its own (dataset, model, optimizer), as the workflow runs it."""
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri
    from kryflow.pipeline import run_trial_batch

    cell = {"dataset": f"syn{job}", "model": "fno", "optimizer": "adam"}
    spec = {"model": {"name": "fno", "width": 4, "modes": 2, "layers": 1}, "optimizer": {"name": "adam", "lr": 3e-3}}
    training = {"batch_size": 4, "max_steps": 12, "eval_every": 1, "checkpoint_every": 12, "device": "cpu"}
    tuning = {"trials": 3, "studies": 1, "batch": 3, "concurrent": 1, "seed": 0, "reference": "adam"}
    run_trial_batch(cell, 0, spec, training, tuning, data, out, tracking_json)


@pytest.mark.slow
def test_eight_concurrent_batch_jobs_lose_nothing_on_the_server(server, tmp_path):
    """8 batch jobs at once against the MLflow server on PostgreSQL: every trial's run, every
    metric row and every artifact arrives (24 trials of 12 validated steps each)."""
    import multiprocessing as mp

    import pandas as pd
    from mlflow.tracking import MlflowClient

    from kryflow.data import write_synthetic_dataset
    from kryflow.pipeline import init_tracking

    uri = server["uri"]
    data = write_synthetic_dataset(tmp_path / "syn.zarr", num_samples=24, grid=(8, 8), chunk_samples=8)
    parents = []
    for j in range(8):
        parents += [(f"workload/syn{j}/fno", "w", None), (f"tune/syn{j}/fno/adam", "o", f"workload/syn{j}/fno"),
                    (f"tune/syn{j}/fno/adam/study0", "s", f"tune/syn{j}/fno/adam")]
    init_tracking("batches", {"uri": uri}, tmp_path / "tracking.json", tmp_path, parents=parents)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_batch_job, args=(uri, str(tmp_path / "tracking.json"), str(data),
                                                  str(tmp_path / f"job{j}" / "batch0.json"), j)) for j in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    assert [p.exitcode for p in procs] == [0] * 8
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("batches")
    runs = client.search_runs([exp.experiment_id], "tags.rule = 'tune_batch'", max_results=100)
    keys = sorted(r.data.tags["kryflow.key"] for r in runs)
    assert keys == sorted(f"tune/syn{j}/fno/adam/trial{t}" for j in range(8) for t in range(3))
    for r in runs:
        j, t = r.data.tags["dataset"][3:], r.data.tags["trial"]
        history = pd.read_csv(tmp_path / f"job{j}" / f"trial{t}" / "history.csv")
        assert r.info.status == "FINISHED" and r.data.tags["status"] == "finished"
        for metric in ("val_rel_l2", "train_loss", "seconds", "lr", "grad_evals"):
            got = client.get_metric_history(r.info.run_id, metric)
            assert sorted(m.step for m in got) == list(history["step"]), (r.data.tags["kryflow.key"], metric)
        assert r.data.metrics["best_val_rel_l2"] == pytest.approx(history["val_rel_l2"].min())
        assert "history.csv" in [a.path for a in client.list_artifacts(r.info.run_id)]
