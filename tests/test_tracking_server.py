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
