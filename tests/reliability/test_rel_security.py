"""Reliability, security (issue 9): no credentials in the tracking store, loopback by default,
names that cannot escape their folders.

tests/test_tracking.py::test_flatten_nests_and_drops_secrets covers ``flatten`` on keys named like
secrets; the store after a real workflow run with secrets in the environment is grepped in
test_rel_workflow_faults.py (it shares that module's workflow run); the bad-input table (test_rel_bad_inputs.py, ``cfg-*-name-*``) and tests/test_config.py
cover names with '/' or '..' at check_config level. Here: the real store after real jobs, the
server's listening socket, the workflow refusing an escaping name before any job, and a
credential inside a tracking URI.
"""

from __future__ import annotations

import glob
import json
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from conftest import run_snakemake, write_config
from test_rel_workflow_faults import FAULT_CONFIG, SECRET


def test_credentials_in_a_tracking_uri_are_not_echoed():
    from kryflow.tracking import TrackingUnavailable, check_tracking_reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TrackingUnavailable) as err:
        check_tracking_reachable(f"http://alice:{SECRET}@127.0.0.1:{port}", timeout=2)
    assert SECRET not in str(err.value)
    assert "unreachable" in str(err.value)


# ------------------------------------------------------------------ names cannot escape
def test_workflow_refuses_an_escaping_dataset_name_before_any_job(tmp_path):
    cfg = {**FAULT_CONFIG, "datasets": {"../escape": FAULT_CONFIG["datasets"]["keep"]}}
    cfgfile = write_config(tmp_path / "escape.yaml", cfg)
    proc = run_snakemake(tmp_path, cfgfile, "-n", timeout=300)
    assert proc.returncode != 0
    assert "datasets" in proc.stdout + proc.stderr and "../escape" in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()
    assert not (tmp_path.parent / "escape.zarr").exists()


def test_dataset_spec_refuses_unknown_and_escaping_names(tiny_config):
    from kryflow.config import check_config, dataset_spec

    cfg = check_config(tiny_config)
    for name in ("../darcy", "darcy/../../x", "/etc/darcy"):
        with pytest.raises(KeyError, match="neither configured nor a transfer set"):
            dataset_spec(cfg, name)


# ------------------------------------------------------------------ server binds loopback
_HAS_PG = bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or shutil.which("initdb") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _HAS_PG, reason="PostgreSQL server not installed (apt-get install -y postgresql)")
def test_server_helper_listens_on_loopback_only():
    import psutil

    from kryflow.tracking import start_server, stop_server

    state = Path(tempfile.mkdtemp(prefix="kryflow-rel-mlflow-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = start_server(state, port=port)
    try:
        pids = {info["mlflow_pid"], info["postgres_pid"]}
        for root in list(pids):
            try:
                pids |= {c.pid for c in psutil.Process(root).children(recursive=True)}
            except psutil.NoSuchProcess:
                pass
        listening = [c for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in pids]
        addrs = sorted({(c.laddr.ip, c.laddr.port) for c in listening})
        assert ("127.0.0.1", port) in addrs, addrs
        assert ("127.0.0.1", info["pg_port"]) in addrs, addrs
        assert all(ip in ("127.0.0.1", "::1") for ip, _ in addrs), f"listens beyond loopback: {addrs}"
        # the database password lives only in the 0600 credentials file
        cred = state / "credentials"
        assert cred.stat().st_mode & 0o077 == 0
        password = json.loads(cred.read_text())["password"]
        assert password not in json.dumps(info) and password not in (state / "state.json").read_text()
        for pid in pids:
            try:
                assert password not in " ".join(psutil.Process(pid).cmdline())
            except psutil.NoSuchProcess:
                pass
    finally:
        stop_server(state)
        shutil.rmtree(state, ignore_errors=True)


def test_tracking_uri_with_credentials_reaches_a_running_server():
    import http.server
    import threading

    from kryflow.tracking import check_tracking_reachable

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        check_tracking_reachable(f"http://127.0.0.1:{port}", timeout=5)  # the plain URI works
        check_tracking_reachable(f"http://alice:{SECRET}@127.0.0.1:{port}", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
