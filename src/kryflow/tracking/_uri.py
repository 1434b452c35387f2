"""Where runs go: the tracking URI, its check before any work starts, and how it is shown.

- default: an embedded sqlite store ``<workdir>/mlflow.db`` with artifacts under
  ``<workdir>/mlartifacts``;
- cluster: ``MLFLOW_TRACKING_URI`` (environment) or ``tracking.uri`` (config) naming an
  ``mlflow server``; the environment wins so one config serves both.
"""

from __future__ import annotations

import base64
import contextlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "KNOWN_SCHEMES", "TrackingUnavailable", "artifact_root_uri", "check_tracking_reachable", "redact",
    "resolve_tracking_uri", "scoped_tracking_uri", "ui_command", "ui_url",
]


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached; raised before any work starts."""


def resolve_tracking_uri(tracking_cfg: Mapping | None, workdir: str | os.PathLike = ".") -> str:
    """The tracking URI for this job: environment, then config, then embedded sqlite."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    uri = (tracking_cfg or {}).get("uri")
    if uri:
        return str(uri)
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


@contextlib.contextmanager
def scoped_tracking_uri(uri: str | None):
    """MLflow's fluent API (``mlflow.start_run``, ``log_model``) on store ``uri`` inside the block,
    and the process as it was afterwards. ``mlflow.set_tracking_uri`` also exports
    ``MLFLOW_TRACKING_URI`` (for subprocesses); left set, every later :func:`resolve_tracking_uri`
    in the process would follow it instead of its own config (None: leave MLflow's choice)."""
    if not uri:
        yield
        return
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before_env, before_global = os.environ.get("MLFLOW_TRACKING_URI"), getattr(utils, "_tracking_uri", None)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if hasattr(utils, "_tracking_uri"):
            utils._tracking_uri = before_global
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env


def artifact_root_uri(tracking_cfg: Mapping | None, workdir: str | os.PathLike = ".") -> str | None:
    """Artifact location for a new experiment on the embedded store (None: server decides)."""
    uri = resolve_tracking_uri(tracking_cfg, workdir)
    if not uri.startswith("sqlite:"):
        return None
    root = (tracking_cfg or {}).get("artifact_root") or "mlartifacts"
    return (Path(workdir).resolve() / root).as_uri()


def redact(uri: str) -> str:
    """The URI with any password replaced by '***' (for messages, logs and files)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


KNOWN_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "file", "databricks")


def check_tracking_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with a message that says what to do, when the store cannot be reached."""
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme not in KNOWN_SCHEMES or (scheme in ("http", "https") and not parts.hostname):
        raise TrackingUnavailable(
            f"tracking URI '{redact(uri)}' is not a tracking store URI (from MLFLOW_TRACKING_URI "
            "or tracking.uri): use http://host:port for a server or sqlite:///abs/path/mlflow.db"
        )
    if scheme in ("http", "https"):
        url = urllib.parse.urlunsplit(
            parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
        ).rstrip("/") + "/health"
        request = urllib.request.Request(url)
        if parts.username:
            token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (URI from config)
                if resp.status != 200:
                    raise TrackingUnavailable(
                        f"MLflow server at {redact(uri)} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingUnavailable(
                f"MLflow tracking server {redact(uri)} is unreachable ({type(exc).__name__}). Start it "
                "(scripts/mlflow_server.sh) or point MLFLOW_TRACKING_URI / tracking.uri at a "
                "running server; nothing was trained, so nothing is lost."
            ) from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.parent.is_dir():
            raise TrackingUnavailable(
                f"sqlite tracking store {db}: folder {db.parent} does not exist; "
                "create it or set tracking.uri"
            )


def ui_command(uri: str, port: int = 5000) -> str:
    """The one command that opens the MLflow UI on a store."""
    import shutil
    import sys

    exe = Path(sys.executable).with_name("mlflow")
    mlflow_cmd = str(exe) if exe.exists() else (shutil.which("mlflow") or "mlflow")
    return f"{mlflow_cmd} ui --backend-store-uri {redact(uri)} --host 127.0.0.1 --port {port}"


def ui_url(experiment_id: str, port: int = 5000) -> str:
    """The page to open in the UI that :func:`ui_command` starts: the experiment's runs in the
    model-training view (MLflow 3's UI otherwise opens every experiment on its GenAI overview)."""
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
