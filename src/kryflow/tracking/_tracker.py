"""MLflow runs: one :class:`Tracker` per workflow job, keyed so a rerun reopens its run.

Runs are keyed by a deterministic ``kryflow.key`` tag (e.g. ``train/darcy2d/fno/adam/0``). A job
that is rerun (after a kill, or after its outputs were removed) reopens the run with its key
instead of creating a second one, so a grid never holds duplicate runs for one cell.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kryflow

from ._uri import TrackingUnavailable, check_tracking_reachable, redact, scoped_tracking_uri

log = logging.getLogger(__name__)

__all__ = ["EXPERIMENT_TAGS", "SECRET_MARKERS", "Tracker", "ensure_experiment", "ensure_parent_runs", "flatten",
           "git_commit", "quiet_mlflow_environment"]

SECRET_MARKERS = ("password", "secret", "token", "api_key", "apikey", "credential", "passwd")
#: Tags of every kryflow experiment: MLflow's UI shows a model-development experiment's runs.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def _retry(fn):
    """Retry a store call on transient sqlite lock / network errors (parallel jobs share a store)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        delay = 0.2
        for attempt in range(12):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # MLflow wraps sqlite/HTTP errors in several classes
                text = str(exc).lower()
                # "duplicate key"/"unique constraint": two jobs registering the same dataset at
                # once on a PostgreSQL-backed server; the retry finds the row the other one made
                transient = any(
                    s in text
                    for s in ("database is locked", "busy", "connection", "temporarily", "timed out",
                              "duplicate key", "unique constraint")
                )
                if not transient or attempt == 11:
                    raise
                time.sleep(delay)
                delay = min(delay * 1.7, 5.0)
        return None  # pragma: no cover

    return wrapper


def quiet_mlflow_environment() -> None:
    """No usage telemetry from batch jobs (and no outbound connection attempts on closed clusters).

    Called before MLflow is first used in a process, never at import of kryflow; a value the
    user set in the environment wins."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def _client(uri: str):
    quiet_mlflow_environment()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@_retry
def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """Create the experiment once (before jobs fan out) or return its id."""
    client = _client(uri)
    import mlflow

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        for tag, value in EXPERIMENT_TAGS.items():
            if exp.tags.get(tag) != value:
                client.set_experiment_tag(exp.experiment_id, tag, value)
        return exp.experiment_id
    try:
        # model training, not a GenAI app: the UI opens such an experiment on its runs
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
    except mlflow.exceptions.MlflowException:
        # another process created it in between
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@_retry
def ensure_parent_runs(uri: str, experiment: str, parents: list[tuple[str, str, str | None]]) -> dict[str, str]:
    """Create the runs that group others in the UI (workloads, optimizers, studies), once.

    **Arguments:**
        parents: ``(key, run name, parent key or None)``, a parent before its children.

    **Returns:** key -> run id. Existing runs (a rerun of the workflow) are kept.
    """
    from mlflow.entities import RunTag

    client = _client(uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    found = client.search_runs([exp_id], filter_string="tags.`kryflow.parent` = 'true'", max_results=50_000)
    ids = {r.data.tags["kryflow.key"]: r.info.run_id for r in found}
    for key, name, parent in parents:
        if key in ids:
            continue
        run = client.create_run(exp_id, run_name=name)
        tags = {"kryflow.key": key, "kryflow.parent": "true", "mlflow.runName": name, "status": "finished"}
        if parent is not None:
            tags["mlflow.parentRunId"] = ids[parent]
        client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(run.info.run_id, status="FINISHED")
        ids[key] = run.info.run_id
    return ids


@functools.lru_cache(maxsize=8)
def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The current git commit (with '-dirty' if the tree has changes), or 'unknown'; asked once
    per process (a batch job opens a run per trial)."""
    try:
        cwd = cwd or Path(__file__).resolve().parent
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(cfg: Mapping, prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into MLflow params ('a.b.c' -> value), dropping secrets."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        if any(m in str(key).lower() for m in SECRET_MARKERS):
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, full + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            out[full] = text[:6000]
    return out


class Tracker:
    """One MLflow run, opened by key (reused on rerun), with kryflow's standard tags.

    Arguments:
        uri: tracking URI.
        experiment: experiment name (created by ``ensure_experiment`` beforehand).
        key: deterministic identity of the job, e.g. ``train/darcy2d/fno/adam/0``.
        run_name: the name shown in the UI.
        tags: extra tags (dataset, model, optimizer, seed, rule, ...).
        parent_key: key of the run this one nests under in the UI (a study, a workload); it must
            exist already (see :func:`ensure_parent_runs`).
    """

    def __init__(self, uri: str, experiment: str, key: str, run_name: str, tags: Mapping[str, Any],
                 parent_key: str | None = None):
        check_tracking_reachable(uri)
        self.uri = uri
        self.client = _client(uri)
        exp = _retry(self.client.get_experiment_by_name)(experiment)
        if exp is None:
            raise TrackingUnavailable(
                f"experiment '{experiment}' does not exist in {uri}; run the workflow's "
                "init_tracking rule (or `kryflow tracking init CONFIG`) first"
            )
        self.experiment_id = exp.experiment_id
        self.key = key
        base_tags = {
            "kryflow.key": key,
            "kryflow.version": kryflow.__version__,
            "git_commit": git_commit(),
            "mlflow.runName": run_name,
            "status": "running",
        }
        inv = os.environ.get("KRYFLOW_INVOCATION_ID")
        if inv:
            base_tags["invocation_id"] = inv
        base_tags.update({k: str(v) for k, v in tags.items()})
        if parent_key is not None:
            parent = self._find(parent_key)
            if parent is None:
                raise TrackingUnavailable(f"parent run '{parent_key}' of '{key}' does not exist in {redact(uri)}; "
                                          "the workflow's init_tracking rule creates it")
            base_tags["mlflow.parentRunId"] = parent
        existing = self._find(key)
        if existing is not None:
            self.run_id = existing
            _retry(self.client.update_run)(self.run_id, status="RUNNING")
        else:
            run = _retry(self.client.create_run)(self.experiment_id, run_name=run_name)
            self.run_id = run.info.run_id
        self.set_tags(base_tags)

    @classmethod
    def reopen(cls, uri: str, run_id: str) -> "Tracker":
        """Attach to an existing run (evaluation logs into the training cell's run)."""
        check_tracking_reachable(uri)
        self = cls.__new__(cls)
        self.uri = uri
        self.client = _client(uri)
        run = _retry(self.client.get_run)(run_id)
        self.run_id = run_id
        self.experiment_id = run.info.experiment_id
        self.key = run.data.tags.get("kryflow.key", "")
        return self

    @_retry
    def _find(self, key: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`kryflow.key` = '{key}'", max_results=5
        )
        return runs[0].info.run_id if runs else None

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        existing = _retry(self.client.get_run)(self.run_id).data.params
        items = [Param(k, v) for k, v in flat.items() if k not in existing]
        for i in range(0, len(items), 100):
            _retry(self.client.log_batch)(self.run_id, params=items[i : i + 100])

    #: MLflow's limit of metrics per ``log_batch`` request.
    BATCH_LIMIT = 1000
    #: Buffered metrics are sent at the latest this long after the first of them (the UI stays live).
    FLUSH_SECONDS = 30.0

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics at ``step``; buffered and sent in requests of up to :attr:`BATCH_LIMIT` (see :meth:`flush`)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._queue([Metric(k, float(v), ts, int(step or 0)) for k, v in metrics.items()
                     if v is not None and _is_number(v)])

    def log_metric_series(self, name: str, values: Iterable[float], start_step: int = 0) -> None:
        """A per-step series (e.g. iterations per solve) as one stepped metric (buffered)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._queue([Metric(name, float(v), ts, start_step + i) for i, v in enumerate(values)])

    def _queue(self, items: list) -> None:
        pending = self.__dict__.setdefault("_pending", [])
        if not pending:
            self._pending_since = time.monotonic()
        pending.extend(items)
        if len(pending) >= self.BATCH_LIMIT or time.monotonic() - self._pending_since >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send every buffered metric now, :attr:`BATCH_LIMIT` a request (a job logs a trial's or a
        dataset's series in a few requests instead of one per row or sample)."""
        pending = self.__dict__.get("_pending") or []
        while pending:
            _retry(self.client.log_batch)(self.run_id, metrics=pending[: self.BATCH_LIMIT])
            del pending[: self.BATCH_LIMIT]

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """All tags in one store call (one sqlite transaction, one HTTP request)."""
        from mlflow.entities import RunTag

        if tags:
            _retry(self.client.log_batch)(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            _retry(self.client.log_artifact)(self.run_id, str(path), artifact_path)

    def log_dataset(self, name: str, path: str | os.PathLike, digest: str, context: str) -> None:
        """Record a zarr store as an MLflow dataset input (digest = the store's checksum)."""
        from mlflow.data.dataset_source_registry import get_registered_sources, resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        # a local path: MLflow registers a "local" source class for two URI schemes ("" and "file")
        # and warns that the path "can be interpreted in multiple ways" when left to choose; take
        # the one it would take (the last registered)
        local = [s for s in get_registered_sources() if s._get_source_type() == "local"][-1:]
        source = resolve_dataset_source(str(Path(path).resolve()), candidate_sources=local or None)
        ds = MetaDataset(source=source, name=name, digest=digest[:36])
        entity = DatasetInput(
            dataset=ds._to_mlflow_entity(),
            tags=[InputTag(key="mlflow.data.context", value=context)],
        )
        _retry(self.client.log_inputs)(self.run_id, datasets=[entity])

    def log_model(self, model, input_example) -> None:
        """The trained torch model, loadable with ``mlflow.pytorch.load_model``."""
        quiet_mlflow_environment()
        import mlflow
        import mlflow.pytorch

        import numpy
        import torch

        # Requirements are stated, not inferred: inference re-imports the model in a
        # subprocess (about 10 s a job). The kryflow package travels with the model
        # (code_paths) so that load_model works where kryflow is not installed.
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}"]
        with scoped_tracking_uri(self.uri), mlflow.start_run(run_id=self.run_id):
            _retry(mlflow.pytorch.log_model)(
                model, name="model", input_example=input_example, pip_requirements=requirements,
                code_paths=[str(Path(kryflow.__file__).parent)],
                # pickle, not mlflow's default torch.export: export specialises the batch size
                # to the input example's and the loaded model then rejects other batches
                serialization_format="pickle",
            )

    @contextlib.contextmanager
    def system_metrics(self, enabled: bool, interval: float = 10.0):
        """Sample CPU/GPU/memory into the run while the block runs (``tracking.system_metrics``)."""
        if not enabled:
            yield
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval, resume_logging=True,
                                       tracking_uri=self.uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    def log_job_log(self) -> None:
        """Upload the Snakemake job's log file (set by kryflow.pipeline.setup_logging), if any."""
        path = os.environ.get("KRYFLOW_JOB_LOG")
        if path and Path(path).exists():
            self.log_artifact(path, "logs")

    def finish(self, status: str, reason: str | None = None) -> None:
        """Close the run. ``status`` is kryflow's (finished / diverged / failed)."""
        self.finished = True
        self.flush()
        self.log_job_log()
        tags = {"status": status}
        if reason:
            tags["status_reason"] = reason[:4000]
        self.set_tags(tags)
        mlflow_status = "FAILED" if status == "failed" else "FINISHED"
        _retry(self.client.set_terminated)(self.run_id, status=mlflow_status)


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
