"""An MLflow tracking server backed by PostgreSQL, for clusters (and for tests on loopback).

``start_server(state_dir)`` initialises a PostgreSQL cluster under ``state_dir/pgdata``
(Debian's ``postgresql`` package), starts it on 127.0.0.1, creates the ``mlflow`` database and
role with a random password (kept in ``state_dir/credentials``, mode 600, never on a command
line or in MLflow), and starts ``mlflow server`` bound to 127.0.0.1 unless told otherwise.
Artifacts are served by the server from ``state_dir/artifacts`` so that nodes need no shared
artifact path. ``stop_server(state_dir)`` stops both by the pids it recorded.

For cluster nodes, bind to an address they can reach: ``host="0.0.0.0"`` (and, for the MLflow
host-header check, ``allowed_hosts="<login-node-name>:*"``), then point jobs at it with
``MLFLOW_TRACKING_URI=http://<login-node-name>:<port>``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from glob import glob
from pathlib import Path

from ._tracker import quiet_mlflow_environment

__all__ = ["start_server", "stop_server", "ServerError"]


class ServerError(RuntimeError):
    """The tracking server could not be started; the message says what to install or change."""


def _pg_bin(name: str) -> str:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path:
        return path
    raise ServerError(
        f"PostgreSQL's '{name}' was not found. Install Debian's server package: "
        "apt-get install -y postgresql"
    )


def _as_postgres(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: run its tools as the 'postgres' user then."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
                if r.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise ServerError(f"{url} did not answer within {timeout:.0f} s ({last})")


def start_server(state_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 5000,
                 pg_port: int | None = None, allowed_hosts: str | None = None,
                 timeout: float = 120.0) -> dict:
    """Start PostgreSQL and ``mlflow server``; returns {"uri", "pids", ...} (also in state.json)."""
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    pgdata, logs = state / "pgdata", state / "logs"
    logs.mkdir(exist_ok=True)
    (state / "artifacts").mkdir(exist_ok=True)
    pg_port = pg_port or _free_port()
    sock_dir = state / "sock"
    sock_dir.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        # the postgres user must reach its folders (tests live under a root-only tmp dir)
        for p in (state, *state.parents):
            if p == Path("/"):
                break
            os.chmod(p, os.stat(p).st_mode | 0o011)
        pgdata.mkdir(exist_ok=True)
        shutil.chown(pgdata, "postgres", "postgres")
        shutil.chown(sock_dir, "postgres", "postgres")
        os.chmod(sock_dir, 0o700)
        shutil.chown(logs, "postgres", "postgres")
        os.chmod(pgdata, 0o700)

    cred_file = state / "credentials"
    if not (pgdata / "PG_VERSION").exists():
        # TCP logins need the password; the socket lives in a folder only postgres can use
        res = _as_postgres([_pg_bin("initdb"), "-D", str(pgdata), "-U", "postgres",
                            "--auth-host=scram-sha-256", "--auth-local=trust"])
        if res.returncode != 0:
            raise ServerError(f"initdb failed: {res.stderr.strip()}")
    res = _as_postgres([_pg_bin("pg_ctl"), "-D", str(pgdata), "-l", str(logs / "postgres.log"), "-w",
                        "-o", f"-c listen_addresses=127.0.0.1 -p {pg_port} -k {sock_dir}", "start"])
    if res.returncode != 0:
        raise ServerError(f"PostgreSQL did not start: {res.stderr.strip() or res.stdout.strip()}")

    if cred_file.exists():
        password = json.loads(cred_file.read_text())["password"]
    else:
        password = secrets.token_urlsafe(18)
        cred_file.touch(mode=0o600)
        cred_file.write_text(json.dumps({"user": "mlflow", "password": password}))
        psql = [_pg_bin("psql"), "-h", str(sock_dir), "-p", str(pg_port), "-U", "postgres", "-v",
                "ON_ERROR_STOP=1", "-d", "postgres"]
        sql = (f"CREATE ROLE mlflow LOGIN PASSWORD '{password}';\n"
               "CREATE DATABASE mlflow OWNER mlflow;\n")
        res = _as_postgres(psql, input=sql)
        if res.returncode != 0:
            raise ServerError(f"creating the mlflow database failed: {res.stderr.strip()}")

    backend = f"postgresql://mlflow:{password}@127.0.0.1:{pg_port}/mlflow"
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_exe) if mlflow_exe.exists() else "mlflow", "server", "--host", host,
           "--port", str(port), "--artifacts-destination", (state / "artifacts").as_uri(),
           "--workers", "2"]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    quiet_mlflow_environment()
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend}  # not on the command line
    log = open(logs / "mlflow.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    pg_pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    info = {"uri": f"http://{shown_host}:{port}", "host": host, "port": port, "pg_port": pg_port,
            "mlflow_pid": proc.pid, "postgres_pid": pg_pid, "state_dir": str(state)}
    (state / "state.json").write_text(json.dumps(info, indent=2))
    try:
        _wait_http(f"{info['uri']}/health", timeout)
    except ServerError:
        stop_server(state)
        raise ServerError(f"mlflow server did not come up; see {logs / 'mlflow.log'}") from None
    return info


def stop_server(state_dir: str | os.PathLike) -> None:
    """Stop the mlflow server (its process group) and PostgreSQL, by their recorded pids."""
    state = Path(state_dir).resolve()
    info_path = state / "state.json"
    if not info_path.exists():
        return
    info = json.loads(info_path.read_text())
    pid = info.get("mlflow_pid")
    if pid:
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _as_postgres([_pg_bin("pg_ctl"), "-D", str(state / "pgdata"), "-m", "fast", "-w", "stop"])
    info_path.unlink()
