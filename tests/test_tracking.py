"""kryflow.tracking against a real sqlite MLflow store."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from kryflow.tracking import (
    Tracker, TrackingUnavailable, check_tracking_reachable, ensure_experiment, flatten, resolve_tracking_uri,
)


def test_flatten_nests_and_drops_secrets():
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "db_password": "hunter2", "x": {"api_token": "t"}})
    assert flat == {"a.b": "1", "a.c": "[1, 2]"}


def test_unreachable_server_fails_fast():
    t0 = time.perf_counter()
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        check_tracking_reachable("http://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t0 < 10


def test_tracker_reopens_run_by_key(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "exp", (tmp_path / "art").as_uri())
    t1 = Tracker(uri, "exp", key="train/a/b/c/0", run_name="a-b-c-0", tags={"dataset": "a"})
    t1.log_metrics({"loss": 1.0}, step=1)
    t1.finish("finished")
    t2 = Tracker(uri, "exp", key="train/a/b/c/0", run_name="a-b-c-0", tags={"dataset": "a"})
    assert t2.run_id == t1.run_id
    t3 = Tracker(uri, "exp", key="train/a/b/c/1", run_name="a-b-c-1", tags={"dataset": "a"})
    assert t3.run_id != t1.run_id


def test_logging_a_model_leaves_the_process_tracking_uri_alone(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; after a model is logged to one store,
    the process must still resolve its own config's store (CI once sent a later test's runs to
    an earlier test's sqlite store this way)."""
    import torch

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "exp", (tmp_path / "art").as_uri())
    t = Tracker(uri, "exp", key="train/m", run_name="m", tags={})
    t.log_model(torch.nn.Linear(2, 1), torch.zeros(1, 2).numpy())
    t.finish("finished")
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ
    assert resolve_tracking_uri({"uri": "http://127.0.0.1:5000"}) == "http://127.0.0.1:5000"
    # a user's own setting survives it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    t = Tracker(uri, "exp", key="train/n", run_name="n", tags={})
    t.log_model(torch.nn.Linear(2, 1), torch.zeros(1, 2).numpy())
    t.finish("finished")
    assert resolve_tracking_uri({}) == "http://example.invalid:5000"


def _worker(uri: str, i: int) -> None:
    t = Tracker(uri, "exp", key=f"job/{i}", run_name=f"job-{i}", tags={"i": i})
    t.log_params({"i": i, "cfg": {"lr": 0.1 * i}})
    for step in range(20):
        t.log_metrics({"loss": 1.0 / (step + 1), "acc": step}, step=step)
    t.finish("finished")


@pytest.mark.slow
def test_eight_concurrent_jobs_lose_nothing(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = ensure_experiment(uri, "exp", (tmp_path / "art").as_uri())
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(uri, i)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([exp_id], max_results=100)
    assert len(runs) == 8
    for r in runs:
        assert r.info.status == "FINISHED"
        assert len(client.get_metric_history(r.info.run_id, "loss")) == 20
        assert r.data.params["cfg.lr"]


def test_metrics_go_in_requests_of_at_most_a_thousand(tmp_path, monkeypatch):
    """A run's rows and series are buffered: 2,500 metrics in three requests, none lost; what is
    pending is sent by finish (and by the stage's exit, see test_stages)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "exp", (tmp_path / "art").as_uri())
    t = Tracker(uri, "exp", key="many", run_name="many", tags={})
    sizes = []
    real = t.client.log_batch

    def counting(run_id, metrics=(), **kw):
        if metrics:
            sizes.append(len(metrics))
        return real(run_id, metrics=metrics, **kw)

    monkeypatch.setattr(t.client, "log_batch", counting)
    for step in range(1000):
        t.log_metrics({"loss": 1.0 / (step + 1), "acc": float(step)}, step=step)
    t.log_metric_series("solve_iterations", range(500))
    assert sizes == [1000, 1000]  # sent as the buffer fills, 500 still pending
    t.finish("finished")
    assert sizes == [1000, 1000, 500]
    client = MlflowClient(tracking_uri=uri)
    assert len(client.get_metric_history(t.run_id, "loss")) == 1000
    assert [m.step for m in client.get_metric_history(t.run_id, "solve_iterations")] == list(range(500))


def test_system_metrics_are_sampled_into_the_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "exp", (tmp_path / "art").as_uri())
    t = Tracker(uri, "exp", key="sys", run_name="sys", tags={})
    with t.system_metrics(True, interval=0.2):
        time.sleep(1.5)
    t.finish("finished")
    metrics = MlflowClient(tracking_uri=uri).get_run(t.run_id).data.metrics
    assert any(k.startswith("system/cpu") for k in metrics), metrics
