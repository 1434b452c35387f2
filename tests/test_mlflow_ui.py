"""A person opens the MLflow UI on the tiny workflow's store and finds the experiment and runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import BIN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium; make test does it as root)"
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,900", "--virtual-time-budget=20000"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(workdir):
    """``mlflow ui`` on a workflow's store, on a free port; yields its URL and tracking.json."""
    info = json.loads((workdir / "results" / "tracking.json").read_text())
    port = _port()
    proc = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", info["uri"],
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not start within 60 s")
        yield url, info
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _dom(page: str, profile) -> str:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page],
                          capture_output=True, text=True, timeout=180).stdout


@pytest.fixture
def mlflow_ui(tiny_run):
    with _serve(tiny_run[0]) as served:
        yield served


@pytest.mark.slow
def test_ui_shows_experiment_and_runs(mlflow_ui, tiny_run, tmp_path):
    url, info = mlflow_ui
    _, cfg, _ = tiny_run
    page = f"{url}/#/experiments/{info['experiment_id']}/runs"
    profile = tmp_path / "chromium-profile"
    dom = _dom(page, profile)
    assert cfg["experiment"] in dom
    for name in ("darcy-fno-adam-s0", "generate-darcy"):
        assert name in dom, f"{name} not on the runs page"
    shot = tmp_path / "mlflow-ui.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", page],
                   capture_output=True, timeout=180)
    assert shot.exists() and shot.stat().st_size > 20_000


@pytest.mark.slow
def test_ui_page_groups_a_tuning_study_under_its_workload(tuning_run, tmp_path):
    """The page tracking.json names (``ui_page``, printed by ``kryflow where``) opens the runs
    table, where a tuning study is one workload row: trials and studies nest under it instead of
    crowding the top level."""
    workdir, cfg, _ = tuning_run
    with _serve(workdir) as (url, info):
        assert info["ui_page"].startswith("http://127.0.0.1:5000/#/experiments/")
        page = info["ui_page"].replace("http://127.0.0.1:5000", url)
        dom = _dom(page, tmp_path / "chromium-profile")
    assert cfg["experiment"] in dom
    assert "darcy-fno" in dom, "the workload's parent run is not on the runs page"
    for nested in ("darcy-fno-adamw-trial0", "darcy-fno-sgdwild-study0"):
        assert nested not in dom, f"{nested} is listed at the top level instead of under its parent"
    assert "generate-darcy" in dom
