"""Online training (issue 26): the stream of fresh samples equals offline generation, the buffer's
policies, lockstep reproducibility, resume, faults, config checks, and a real workflow run."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import zarr
from conftest import ROOT, TINY_CONFIG, run_snakemake, write_config

import online_faults
from kryflow.config import ConfigError, cell_training, check_config, online_generators, schema
from kryflow.data import make_loader
from kryflow.generation import (
    BUFFER_POLICIES, ONLINE_OPTIONS, BufferItem, OnlineStream, OnlineStreamError, SampleBuffer, generate_dataset,
)
from kryflow.training import train_cell

DARCY = dict(family="darcy", params={"n": 12}, seed=3, chunk_samples=8, splits=(0.5, 0.25, 0.25))
# an iterative solver, so that the stream's outputs differ from a store's within the tolerance
CG = {"method": "cg", "preconditioner": "jacobi", "rtol": 1e-8}
FNO = {"width": 8, "modes": 3, "layers": 2}


def _stream_cfg(**online):
    return {"batch_size": 4, "max_steps": 8, "eval_every": 4, "checkpoint_every": 4, "device": "cpu",
            "data": "online", "online": {"block": 4, "buffer": 8, "watermark": 4, "timeout": 120, **online}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A stored Darcy set of 16 samples (indices 0..15), solved with CG."""
    path = tmp_path_factory.mktemp("online") / "darcy.zarr"
    generate_dataset(path, num_samples=16, solver=CG, progress=False, **DARCY)
    return path


@pytest.fixture(scope="module")
def beyond(store):
    """What offline generation makes for indices 16..31: the second shard of a 32-sample set."""
    path = store.parent / "beyond.zarr"
    generate_dataset(path, num_samples=32, solver=CG, progress=False, shards=2, shard=1,
                     **{**DARCY, "chunk_samples": 16})
    return zarr.open_group(path, mode="r", zarr_format=3)


def _batches(stream, n):
    out = []
    it = iter(stream)
    for _ in range(n):
        x, y = next(it)
        out.append((x, y, list(stream.last_indices)))
    return out


# ------------------------------------------------------------------- what is streamed
@pytest.mark.parametrize("generators", [1, 2])
def test_streamed_samples_equal_offline_generation(store, beyond, generators):
    # fifo in lockstep hands the samples over in index order, each once
    with OnlineStream(store, _stream_cfg(policy="fifo", mode="lockstep", generators=generators), seed=0) as s:
        got = _batches(s, 4)
    indices = [i for _, _, idx in got for i in idx]
    assert indices == list(range(16, 32))  # disjoint from the stored 0..15
    x = torch.cat([b[0] for b in got]).numpy()
    y = torch.cat([b[1] for b in got]).numpy()
    a, u = np.asarray(beyond["a"][...]), np.asarray(beyond["u"][...])
    np.testing.assert_array_equal(x[:, 0], a)  # inputs value for value
    rel = np.linalg.norm((y[:, 0] - u).reshape(16, -1), axis=1) / np.linalg.norm(u.reshape(16, -1), axis=1)
    # both solves meet ||b - A u|| <= 1e-8 ||b||; the float32 storage rounds at ~6e-8
    assert rel.max() < 1e-6, rel.max()
    if generators == 1:  # one solver through the same sequence as the store's shard: its very outputs
        np.testing.assert_array_equal(y[:, 0], u)


def test_normalisation_and_validation_stay_the_stores(store, tmp_path):
    with OnlineStream(store, _stream_cfg(), seed=0) as stream:
        train_cell(store, tmp_path, model_name="fno", model_kwargs=FNO, optimizer_name="adam",
                   optimizer_kwargs={"lr": 3e-3}, seed=0, train_cfg=_stream_cfg(), progress=False,
                   train_source=stream)
        record = stream.summary()
    from kryflow.data import task_stats
    from kryflow.training import load_surrogate

    stats = task_stats(store, None)
    saved = load_surrogate(tmp_path / "model.pt").stats()
    assert np.allclose(saved["x_mean"], stats["x_mean"]) and np.allclose(saved["y_std"], stats["y_std"])
    assert record["steps"] == 8 and record["items_consumed"] == 32
    assert record["samples_accepted"] >= record["unique_samples_seen"] > 0
    assert all(i >= 16 for i in record["next_index"])


def test_next_step_windows_are_cut_from_streamed_trajectories(tmp_path):
    heat = tmp_path / "heat.zarr"
    generate_dataset(heat, family="heat", params={"n": 8, "num_steps": 4, "save_every": 1}, num_samples=8, seed=1,
                     chunk_samples=8, splits=(0.5, 0.25, 0.25), solver={"method": "direct"}, progress=False)
    task = {"kind": "next_step", "history": 2, "horizon": 1, "pushforward": 1}
    cfg = {**_stream_cfg(policy="reservoir", mode="lockstep"), "task": task}
    with OnlineStream(heat, cfg, seed=0) as stream:
        x, y = next(iter(stream))
    loader = make_loader(heat, "train", batch_size=4, shuffle=False, task=task)
    xs, ys = next(iter(loader))
    assert x.shape[1:] == xs.shape[1:] and x.shape[0] == 4  # static + 2 states in, the unrolled targets out
    assert y.shape[1] in (1, 2) and y.shape[2:] == ys.shape[2:]


# --------------------------------------------------------------------- the buffer
def _items(start, n):
    return [[BufferItem(i, -1, (np.zeros(1), np.zeros(1)))] for i in range(start, start + n)]


def test_fifo_uses_every_sample_once_in_order():
    buf = SampleBuffer("fifo", capacity=8, batch_size=4, seed=0)
    for it in _items(0, 8):
        buf.add(it)
    assert [i.sample for i in buf.batch()] == [0, 1, 2, 3] and buf.room() == 4
    assert [i.sample for i in buf.batch()] == [4, 5, 6, 7] and not buf.can_batch()
    assert buf.use_counts() == {1: 8}


def test_firo_bounds_the_uses_of_a_sample():
    buf = SampleBuffer("firo", capacity=8, batch_size=4, seed=0, max_uses=2)
    fresh = iter(_items(0, 1000))
    for _ in range(50):
        for _ in range(buf.room()):
            buf.add(next(fresh))
        assert len({i.sample for i in buf.batch()}) == 4
    counts = buf.use_counts()
    assert max(counts) == 2 and sum(k * v for k, v in counts.items()) == 200  # reused, never beyond max_uses
    assert all(k == 2 for k, v in buf.histogram.items())  # only spent samples left


def test_reservoir_replaces_at_random_and_counts_reuse():
    buf = SampleBuffer("reservoir", capacity=8, batch_size=4, seed=0)
    for it in _items(0, 8):
        buf.add(it)
    assert buf.room() == 4  # full: at most a batch of new samples replaces old ones
    for _ in range(10):
        batch = buf.batch()
        assert len({i.sample for i in batch}) == 4  # never one sample twice in a batch
    for it in _items(8, 4):
        buf.add(it)
    held = {i.sample for i in buf.items}
    assert len(buf.items) == 8 and held & set(range(8, 12)) and sum(buf.histogram.values()) == 4  # 4 replaced
    counts = buf.use_counts()
    assert sum(k * v for k, v in counts.items()) == 40 and max(counts) > 1  # reused, and counted


def test_buffer_state_round_trips():
    buf = SampleBuffer("firo", capacity=8, batch_size=2, seed=1, max_uses=3)
    for it in _items(0, 8):
        buf.add(it)
    buf.batch()
    other = SampleBuffer("firo", capacity=8, batch_size=2, seed=99, max_uses=3)
    other.load_state_dict(buf.state_dict())
    assert [i.sample for i in buf.batch()] == [i.sample for i in other.batch()]
    assert other.used_samples == buf.used_samples


# ---------------------------------------------------------- reproducible, resumable
def _train(store, out, cfg, seed=0):
    with OnlineStream(store, cfg, seed) as stream:
        result = train_cell(store, out, model_name="fno", model_kwargs=FNO, optimizer_name="adam",
                            optimizer_kwargs={"lr": 3e-3}, seed=seed, train_cfg=cfg, progress=False,
                            train_source=stream)
        return result, stream.summary()


def _weights(out):
    return torch.load(out / "model.pt", weights_only=False)["state_dict"]


def test_lockstep_gives_the_same_weights(store, tmp_path):
    cfg = _stream_cfg(policy="reservoir", mode="lockstep", generators=2)
    _, first = _train(store, tmp_path / "a", cfg)
    _, second = _train(store, tmp_path / "b", cfg)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert first["use_count_histogram"] == second["use_count_histogram"]


def test_a_killed_online_cell_resumes_where_it_was(tmp_path):
    # a direct solver: samples made again after the resume are the very same
    path = tmp_path / "direct.zarr"
    generate_dataset(path, num_samples=16, solver={"method": "direct"}, progress=False, **DARCY)
    cfg = _stream_cfg(policy="reservoir", mode="lockstep")
    _train(path, tmp_path / "whole", {**cfg, "max_steps": 8})
    _train(path, tmp_path / "cut", {**cfg, "max_steps": 4})  # the checkpoint at step 4, as after a kill
    _, record = _train(path, tmp_path / "cut", {**cfg, "max_steps": 8})
    assert record["resumed"].startswith("resumed at step 4") and "direct solver" in record["resumed"]
    assert record["steps"] == 8
    wa, wb = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# --------------------------------------------------------------------------- faults
def test_a_solve_that_misses_the_tolerance_never_reaches_the_trainer(tmp_path):
    # CG capped below what some samples need: those fail the tolerance, the others pass
    tight = {"method": "cg", "preconditioner": "jacobi", "rtol": 1e-8, "maxiter": 42, "warm_start": False,
             "on_nonconvergence": "flag"}  # samples 16..31 need 40-44 iterations from a zero start
    path = tmp_path / "tight.zarr"
    generate_dataset(path, num_samples=16, solver=tight, progress=False, **DARCY)
    flagged_store = tmp_path / "flagged.zarr"
    generate_dataset(flagged_store, num_samples=32, solver=tight, progress=False, shards=2, shard=1,
                     **{**DARCY, "chunk_samples": 16})
    conv = zarr.open_group(flagged_store, mode="r", zarr_format=3)["solver_converged"][...][:, 0]
    flagged = {16 + i for i in np.flatnonzero(conv == 0)}
    assert 0 < len(flagged) < 16, "the test needs some samples to miss the tolerance and some not"
    with OnlineStream(path, _stream_cfg(policy="fifo", mode="lockstep"), seed=0) as s:
        seen = {i for _, _, idx in _batches(s, 2) for i in idx}
        record = s.summary()
    assert not seen & flagged
    taken_up_to = record["next_index"][0]  # every index below it was taken into the buffer or rejected
    assert taken_up_to > 32 and {i for i in record["rejected_indices"] if i < 32} == flagged
    assert record["samples_rejected"] == len(record["rejected_indices"]) > 0


def test_a_generator_that_dies_is_restarted_and_its_indices_redone(store, tmp_path, monkeypatch):
    monkeypatch.setenv("KRYFLOW_TEST_CRASH_AT", "18")
    monkeypatch.setenv("KRYFLOW_TEST_MARKER", str(tmp_path / "crashed"))
    with OnlineStream(store, _stream_cfg(policy="fifo", mode="lockstep"), seed=0,
                      worker=online_faults.crash_once) as s:
        indices = [i for _, _, idx in _batches(s, 4) for i in idx]
        record = s.summary()
    assert (tmp_path / "crashed").exists() and record["generator_restarts"] == 1
    assert indices == list(range(16, 32))  # nothing lost, nothing twice


def test_generators_that_always_die_fail_the_cell_naming_the_cause(store):
    with OnlineStream(store, _stream_cfg(restarts=1), seed=0, worker=online_faults.crash_always) as s:
        with pytest.raises(OnlineStreamError, match=r"every generator died: generator 0 died 2 times.*exit code 1 "
                                                    r"\(.*no_such_family"):
            next(iter(s))


def test_a_stalled_generator_fails_within_the_timeout(store):
    with OnlineStream(store, _stream_cfg(policy="fifo", timeout=4), seed=0, worker=online_faults.stall) as s:
        with pytest.raises(OnlineStreamError, match="no generator handed over a sample within "
                                                    "training.online.timeout = 4 s"):
            _batches(s, 2)


# ---------------------------------------------------------------- through the stage
@pytest.fixture
def tracking(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from kryflow.pipeline import init_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    info = init_tracking("online", {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, tmp_path / "tracking.json",
                         tmp_path)
    return tmp_path / "tracking.json", MlflowClient(tracking_uri=info["uri"])


SPEC = {"model": {"name": "fno", **FNO}, "optimizer": {"name": "adam", "lr": 3e-3}}
CELL = {"dataset": "darcy", "model": "fno", "optimizer": "adam", "seed": 0}


def test_the_train_stage_records_what_the_stream_did(store, tracking, tmp_path):
    from kryflow.pipeline import run_train

    tracking_json, client = tracking
    info = run_train(CELL, SPEC, _stream_cfg(), store, tmp_path / "run", tracking_json, progress=False)
    assert info["status"] == "finished"
    record = json.loads((tmp_path / "run" / "online.json").read_text())
    assert record["steps"] == 8 and len(record["fill"]) == 8
    run = client.get_run(info["run_id"])
    assert run.data.metrics["online_items_consumed"] == 32
    assert run.data.metrics["online_unique_samples_seen"] == record["unique_samples_seen"]
    assert sum(v for k, v in run.data.metrics.items() if k.startswith("online_uses_")) == sum(
        record["use_count_histogram"].values())
    assert len(client.get_metric_history(info["run_id"], "online_buffer_fill")) == 8
    assert run.data.tags["training_data"] == "online" and "online_resume" not in run.data.tags


def test_an_online_cell_whose_generators_fail_fails_its_run_naming_the_cause(store, tracking, tmp_path, monkeypatch):
    import kryflow.generation._stream as stream_module
    from kryflow.pipeline import run_train

    tracking_json, client = tracking
    monkeypatch.setattr(stream_module, "generator_main", online_faults.crash_always)
    with pytest.raises(OnlineStreamError, match="every generator died"):
        run_train(CELL, SPEC, _stream_cfg(restarts=0), store, tmp_path / "run", tracking_json, progress=False)
    exp = client.get_experiment_by_name("online")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED" and "every generator died" in run.data.tags["status_reason"]


# ---------------------------------------------------------------------- config
def _config(**training):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["darcy"]["params"]["relation"] = "iid"
    cfg["datasets"]["darcy"]["training"] = training
    return cfg


@pytest.mark.parametrize("online, key, words", [
    ({"generators": 0}, "datasets.darcy.training.online.generators", "generators must be an integer >= 1"),
    ({"buffer": 2}, "datasets.darcy.training.online.buffer", "buffer 2 is smaller than a batch"),
    ({"buffer": 16, "watermark": 32}, "datasets.darcy.training.online.watermark", "watermark 32 is above the buffer"),
    ({"policy": "lifo"}, "datasets.darcy.training.online.policy", "unknown buffer policy 'lifo'"),
    ({"first_index": 20}, "datasets.darcy.training.online.first_index", "first_index 20 overlaps the stored"),
    ({"max_uses": 2}, "datasets.darcy.training.online.max_uses", "max_uses bounds the uses of a sample under "
                                                                 "policy firo"),
    ({"mode": "synchronous"}, "datasets.darcy.training.online.mode", "unknown online mode"),
])
def test_bad_online_config_fails_before_any_job_naming_the_key(online, key, words):
    with pytest.raises(ConfigError, match=words) as err:
        check_config(_config(data="online", online=online))
    assert err.value.key == key


def test_online_needs_a_generated_iid_dataset():
    cfg = _config()
    cfg["training"]["data"] = "online"
    with pytest.raises(ConfigError, match="correlated path") as err:
        check_config({**cfg, "datasets": {**cfg["datasets"], "darcy": {**TINY_CONFIG["datasets"]["darcy"]}}})
    assert err.value.key == "training.data"
    assert online_generators(check_config(cfg), "darcy") == 1


def test_online_keys_equal_the_schema():
    assert set(schema()["$defs"]["online"]["properties"]) == set(ONLINE_OPTIONS)
    assert schema()["$defs"]["online"]["properties"]["policy"]["enum"] == sorted(BUFFER_POLICIES)


def test_the_training_section_is_unchanged_for_stored_cells():
    cfg = check_config(_config())
    assert "data" not in cell_training(cfg, "darcy") and "online" not in cell_training(cfg, "darcy")


# ---------------------------------------------------------------------- a real run
ONLINE_CONFIG = {
    "experiment": "kryflow-online",
    "datasets": {"darcy": {"family": "darcy", "params": {"n": 16}, "num_samples": 16, "seed": 0, "chunk_samples": 8,
                           "splits": [0.5, 0.25, 0.25], "solver": {"method": "auto"},
                           "training": {"data": "online",
                                        "online": {"generators": 1, "buffer": 16, "watermark": 8, "block": 8}}}},
    "models": {"fno": {"width": 8, "modes": 4, "layers": 2}},
    "optimizers": {"adam": {"lr": 3e-3}},
    "seeds": [0],
    "training": {"batch_size": 4, "max_steps": 12, "eval_every": 6, "checkpoint_every": 6},
    "evaluation": {"targets": [0.9], "num_predictions": 2},
    "solver_benchmark": {"enabled": False},
}


@pytest.mark.slow
def test_snakemake_trains_an_online_cell_end_to_end(tmp_path):
    cfg = write_config(tmp_path / "online.yaml", ONLINE_CONFIG)
    proc = run_snakemake(tmp_path, cfg, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    import pandas as pd

    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert list(summary["status"]) == ["finished"] and np.isfinite(summary["test_rel_l2_mean"]).all()
    run = tmp_path / "results" / "runs" / "darcy" / "fno" / "adam" / "0"
    record = json.loads((run / "online.json").read_text())
    assert record["steps"] == 12 and record["items_consumed"] == 48 and record["samples_accepted"] >= 8
    assert (tmp_path / "results" / "figures").is_dir()

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    r = client.get_run(summary["run_id"].iloc[0])
    for metric in ("online_samples_generated", "online_items_consumed", "online_unique_samples_seen",
                   "online_items_reused", "online_generator_samples_per_second", "online_trainer_wait_seconds",
                   "test_rel_l2_mean"):
        assert metric in r.data.metrics, metric
    assert sum(v for k, v in r.data.metrics.items() if k.startswith("online_uses_")) > 0  # the use-count histogram
    assert r.data.tags["training_data"] == "online"
    assert len(client.get_metric_history(r.info.run_id, "online_buffer_fill")) == 12
    # the train job counted the generator beside the trainer in its threads
    assert "threads: 2" in proc.stdout + proc.stderr
