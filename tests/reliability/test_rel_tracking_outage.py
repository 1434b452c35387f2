"""Reliability: the MLflow tracking server goes away between jobs and comes back (issue 9).

A real ``mlflow server`` (sqlite backend, loopback only) serves the tiny workflow. It is stopped
after the data are generated: the training jobs must fail fast with a message naming the server,
before training anything. It is started again on the same port and store: the rerun completes and
the store holds exactly one run per job (the generation run is not duplicated, no half-made run
from the failed attempt is left behind).

The server-down-at-the-very-start case (no server ever) is in test_rel_workflow_faults.py.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_snakemake, write_config
from test_rel_workflow_faults import FAULT_CONFIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    def __init__(self, state: Path, port: int):
        self.state, self.port, self.proc = state, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 90.0) -> None:
        exe = Path(sys.executable).with_name("mlflow")
        cmd = [str(exe), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.state / 'server.db'}",
               "--artifacts-destination", (self.state / "artifacts").as_uri()]
        log = open(self.state / "server.log", "ab")
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
            if self.proc.poll() is not None:
                break
        self.stop()
        pytest.fail(f"mlflow server did not start:\n{(self.state / 'server.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


@pytest.mark.slow
def test_server_outage_between_jobs_fails_fast_then_rerun_completes_without_duplicates(tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = copy.deepcopy(FAULT_CONFIG)
    cfg["datasets"] = {"keep": cfg["datasets"]["keep"]}
    cfg["optimizers"] = {"adam": cfg["optimizers"]["adam"]}
    cfg["training"].update({"max_steps": 4, "eval_every": 2, "checkpoint_every": 2})
    wd = tmp_path / "wd"
    wd.mkdir()
    state = tmp_path / "server"
    state.mkdir()
    cfgfile = write_config(wd / "outage.yaml", cfg)
    server = MlflowServer(state, _free_port())
    env = {"MLFLOW_TRACKING_URI": server.uri}
    try:
        server.start()
        first = run_snakemake(wd, cfgfile, "data/keep.zarr", timeout=300, env=env)
        assert first.returncode == 0, first.stderr[-4000:]
        server.stop()

        t0 = time.perf_counter()
        down = run_snakemake(wd, cfgfile, timeout=300, env=env)
        seconds = time.perf_counter() - t0
        print(f"\nworkflow with the server gone failed after {seconds:.1f} s (rc {down.returncode})")
        assert down.returncode != 0
        logs = "".join(p.read_text() for p in (wd / "logs" / "train").rglob("*.log"))
        assert "unreachable" in logs and server.uri in logs, logs[-3000:]
        assert not list(wd.rglob("model.pt")) and not list(wd.rglob("checkpoint.pt")), "trained with no tracking"
        assert seconds < 90, f"took {seconds:.1f} s to fail"

        server.start()
        again = run_snakemake(wd, cfgfile, timeout=600, env=env)
        assert again.returncode == 0, again.stderr[-4000:]
        assert not (wd / "mlflow.db").exists()
        client = MlflowClient(tracking_uri=server.uri)
        exp = client.get_experiment_by_name(cfg["experiment"])
        runs = client.search_runs([exp.experiment_id], max_results=100)
        keys = sorted(r.data.tags.get("kryflow.key") for r in runs)
        assert len(keys) == len(set(keys)), f"duplicate runs: {keys}"
        assert {"generate/keep", "train/keep/fno/adam/0"} <= set(keys), keys
        assert all(r.info.status == "FINISHED" for r in runs), [(r.data.tags.get("kryflow.key"), r.info.status) for r in runs]
    finally:
        server.stop()
