"""MLflow tracking: the one package of kryflow that talks to MLflow.

Where runs go (:func:`resolve_tracking_uri`): an embedded sqlite store ``<workdir>/mlflow.db`` by
default, or the ``mlflow server`` named by ``MLFLOW_TRACKING_URI`` / ``tracking.uri``. One
:class:`Tracker` per workflow job, keyed so that a rerun reopens its run. :func:`start_server`
runs an MLflow server on PostgreSQL for a cluster.
"""

from ._server import ServerError, start_server, stop_server
from ._tracker import (
    EXPERIMENT_TAGS, SECRET_MARKERS, Tracker, ensure_experiment, ensure_parent_runs, flatten, git_commit,
    quiet_mlflow_environment,
)
from ._uri import (
    TrackingUnavailable,
    artifact_root_uri,
    check_tracking_reachable,
    redact,
    resolve_tracking_uri,
    scoped_tracking_uri,
    ui_command,
    ui_url,
)

__all__ = [
    "EXPERIMENT_TAGS",
    "SECRET_MARKERS",
    "ServerError",
    "Tracker",
    "TrackingUnavailable",
    "artifact_root_uri",
    "check_tracking_reachable",
    "ensure_experiment",
    "ensure_parent_runs",
    "flatten",
    "git_commit",
    "quiet_mlflow_environment",
    "redact",
    "resolve_tracking_uri",
    "scoped_tracking_uri",
    "start_server",
    "stop_server",
    "ui_command",
    "ui_url",
]
