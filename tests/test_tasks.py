"""Learning tasks over time (issue 27, item 3): next-step windows cut by the loader, state
normalisation, pushforward, residual models, the autoregressive rollout and its scores, the config
checks, and (slow) a real Snakemake run of next-step FNO, U-Net and SineNet on Navier-Stokes."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from kryflow.config import ConfigError, cell_training, check_config, rollout_datasets
from kryflow.data import (
    DatasetError,
    Task,
    TrajectoryLayout,
    make_loader,
    open_dataset,
    split_indices,
    task_stats,
    trajectory_layout,
    unrolled_loss,
)
from kryflow.generation import generate_dataset
from kryflow.evaluation.rollout import correlation, correlation_time, rollout, rollout_errors, rollout_summary

from conftest import ROOT, run_snakemake, write_config

NEXT = {"kind": "next_step", "history": 2, "horizon": 2}


@pytest.fixture(scope="module")
def ns(tmp_path_factory):
    """A small Navier-Stokes store: 16², 10 saved states after the initial one, 12 trajectories."""
    path = tmp_path_factory.mktemp("tasks") / "ns.zarr"
    generate_dataset(path, family="navier_stokes", params={"n": 16, "num_steps": 20, "save_every": 2, "dt": 0.005},
                     num_samples=12, seed=0, chunk_samples=4, splits=(0.5, 0.25, 0.25), solver={"method": "direct"})
    return path


@pytest.fixture(scope="module")
def heat(tmp_path_factory):
    path = tmp_path_factory.mktemp("tasks") / "heat.zarr"
    generate_dataset(path, family="heat", params={"n": 8, "num_steps": 8, "save_every": 2, "dt": 0.01},
                     num_samples=8, seed=0, chunk_samples=4, splits=(0.5, 0.25, 0.25), solver={"method": "direct"})
    return path


def _states(path, split):
    """(static, states) of a split read with xarray, independently of the loader."""
    ds = open_dataset(path)
    idx = split_indices(path, split)
    initial = np.stack([ds["vx0"].values, ds["vy0"].values], 1)[:, None]
    traj = np.stack([ds["trajectory_vx"].values, ds["trajectory_vy"].values], 2)
    return ds["mask"].values[idx][:, None], np.concatenate([initial, traj], 1)[idx]


def test_layout_names_channels_and_times(ns, heat):
    lay = trajectory_layout(ns, NEXT)
    assert (lay.static, lay.states, lay.initial) == (("mask",), ("vx", "vy"), ("vx0", "vy0"))
    assert lay.num_states == 11 and lay.windows_per_trajectory == 8
    assert lay.input_names() == ["mask", "vx[t-1]", "vy[t-1]", "vx[t]", "vy[t]"]
    assert lay.target_names() == ["vx[t+1]", "vy[t+1]", "vx[t+2]", "vy[t+2]"]
    assert lay.times[0] == 0.0 and lay.times[1] == pytest.approx(0.01)
    h = trajectory_layout(heat, {"kind": "next_step"})
    assert (h.static, h.states, h.in_channels, h.out_channels) == (("a",), ("u",), 2, 1)
    assert trajectory_layout(ns, None) is None and trajectory_layout(ns, {"kind": "final_state"}) is None


@pytest.mark.parametrize("in_memory", [True, False])
def test_windows_are_the_trajectories_cut_never_stored(ns, in_memory):
    """Every window of every train trajectory once per epoch, in memory and streaming alike."""
    static, states = _states(ns, "train")
    want = sorted(
        (np.concatenate([static[i], states[i, s:s + 2].reshape(-1, 16, 16)]).astype(np.float32).tobytes(),
         states[i, s + 2:s + 4].reshape(-1, 16, 16).astype(np.float32).tobytes())
        for i in range(len(static)) for s in range(8))
    loader = make_loader(ns, "train", batch_size=5, shuffle=True, seed=3, in_memory=in_memory, shuffle_chunks=1,
                         task=Task.from_config(NEXT))
    assert loader.num_samples == 6 and loader.num_items == 48 and len(loader) == 10
    got = sorted((x[j].numpy().tobytes(), y[j].numpy().tobytes()) for x, y in loader for j in range(x.shape[0]))
    assert got == want


def test_shuffled_order_depends_on_seed_and_epoch_only(ns):
    def order(seed, epoch):
        loader = make_loader(ns, "train", batch_size=4, shuffle=True, seed=seed, task=Task.from_config(NEXT))
        loader.set_epoch(epoch)
        return torch.cat([x[:, 1] for x, _ in loader])

    assert torch.equal(order(0, 1), order(0, 1))
    assert not torch.equal(order(0, 1), order(0, 2)) and not torch.equal(order(0, 1), order(1, 1))


def test_splits_stay_by_trajectory(ns):
    """A trajectory's windows are all in one split: the val loader sees only val trajectories."""
    static_val, states_val = _states(ns, "val")
    loader = make_loader(ns, "val", batch_size=64, shuffle=False, task=Task.from_config(NEXT))
    x, _ = next(iter(loader))
    firsts = {states_val[i, s, 0].astype(np.float32).tobytes() for i in range(len(states_val)) for s in range(8)}
    assert {x[j, 1].numpy().tobytes() for j in range(x.shape[0])} <= firsts


def test_state_statistics_pool_every_stored_state(ns):
    _, states = _states(ns, "train")
    stats = task_stats(ns, trajectory_layout(ns, NEXT))
    want_mean = states.astype(np.float64).transpose(2, 0, 1, 3, 4).reshape(2, -1).mean(1)
    want_std = states.astype(np.float64).transpose(2, 0, 1, 3, 4).reshape(2, -1).std(1)
    np.testing.assert_allclose(stats["y_mean"], np.tile(want_mean, 2), atol=1e-7)
    np.testing.assert_allclose(stats["y_std"], np.tile(want_std, 2), rtol=1e-5)
    np.testing.assert_allclose(stats["x_std"][1:], np.tile(want_std, 2), rtol=1e-5)
    # the initial state's own statistics are not the states' (the flow develops from rest at the walls)
    assert not np.allclose(stats["y_std"][0], open_dataset(ns)["vx0"].attrs["train_std"], rtol=1e-3)
    res = task_stats(ns, trajectory_layout(ns, {**NEXT, "residual": True}))
    one = (states[:, 1:] - states[:, :-1]).astype(np.float64).transpose(2, 0, 1, 3, 4).reshape(2, -1)
    np.testing.assert_allclose(res["y_std"][:2], one.std(1), rtol=1e-5)


def test_pushforward_batches_unroll_and_train_the_last_step(ns):
    task = Task.from_config({**NEXT, "horizon": 1, "pushforward": 2})
    loader = make_loader(ns, "train", batch_size=4, shuffle=True, seed=0, task=task)
    widths = {y.shape[1] for _, y in loader}
    assert widths == {2, 4, 6}  # u + 1 steps of 2 channels, u drawn from 0..2
    lay = loader.layout
    calls = []

    def model(x):
        calls.append(x.clone())
        return x[:, -2:] * 0 + 1.0  # predicts ones

    seen = {}
    loss = unrolled_loss(lambda s, x, y: seen.update(x=x, y=y) or torch.zeros(()), lay)
    x, y = next((x, y) for x, y in loader if y.shape[1] == 6)
    loss(model, x, y)
    assert len(calls) == 2 and torch.equal(seen["y"], y[:, -2:])
    assert torch.all(seen["x"][:, -4:] == 1.0)  # both given states replaced by the model's predictions


def test_rollout_feeds_predictions_back():
    lay = TrajectoryLayout(Task.from_config({"kind": "next_step", "history": 2, "horizon": 2}), ("a",), ("u",),
                           ("u0",), ("trajectory",), tuple(float(t) for t in range(8)))

    def step(x):  # the next two states: last + 1, last + 2 (plus the static field)
        last = x[:, -1:]
        return torch.cat([last + 1 + x[:, :1], last + 2 + 2 * x[:, :1]], 1)

    static = torch.zeros(3, 1, 4, 4)
    history = torch.stack([torch.full((3, 1, 4, 4), 0.0), torch.full((3, 1, 4, 4), 1.0)], 1)
    out = rollout(step, lay, static, history, 5)
    assert out.shape == (3, 5, 1, 4, 4)
    assert out[0, :, 0, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]


def test_rollout_scores():
    true = torch.randn(4, 6, 2, 8, 8)
    assert np.allclose(rollout_errors(true, true), 0) and np.allclose(correlation(true, true), 1)
    assert np.allclose(correlation(-true, true), -1)
    corr = np.array([[0.95, 0.9, 0.7, 0.9], [0.5, 0.9, 0.9, 0.9], [0.9, 0.9, 0.9, 0.9], [0.9, np.nan, 0.9, 0.9]])
    steps, time, censored = correlation_time(corr, [0.1, 0.2, 0.3, 0.4])
    assert steps.tolist() == [2, 0, 4, 1] and np.allclose(time, [0.2, 0.0, 0.4, 0.1])
    assert censored.tolist() == [False, False, True, False]
    pred = true.clone()
    pred[:, 3:] += 10.0
    s = rollout_summary(pred, true, np.arange(1, 7) * 0.5)
    assert s["rollout_rel_l2_step1"] == 0 and s["rollout_rel_l2_step4"] > 1 and math.isnan(s["rollout_rel_l2_step8"])
    assert s["rollout_corr_steps"] == 6 and s["rollout_corr_time"] == 3.0  # an offset keeps the correlation
    pred[:, 2] = torch.randn_like(pred[:, 2])
    assert rollout_summary(pred, true, np.arange(1, 7) * 0.5)["rollout_corr_steps"] == 2
    pred[0, 0, 0, 0, 0] = float("nan")
    assert math.isnan(rollout_summary(pred, true, np.arange(1, 7))["rollout_rel_l2_last"])


@pytest.mark.parametrize("residual", [False, True])
def test_train_and_evaluate_a_next_step_model(ns, tmp_path, residual):
    """Train, save (with the task), reload and evaluate by rollout; a residual model starts at
    persistence and learns the change."""
    from kryflow.evaluation import SUMMARY_COLUMNS, evaluate_cell
    from kryflow.training import load_surrogate, train_cell

    task = {**NEXT, "horizon": 1, "pushforward": 1, "residual": residual}
    result = train_cell(ns, tmp_path, model_name="unet", model_kwargs={"width": 4, "depth": 2},
                        optimizer_name="adamw", optimizer_kwargs={"lr": 3e-3}, seed=0,
                        train_cfg={"max_steps": 12, "eval_every": 6, "batch_size": 8, "loss": "mse", "task": task},
                        progress=False)
    assert result["status"] == "finished"
    surrogate = load_surrogate(tmp_path / "model.pt")
    assert surrogate.task["history"] == 2 and surrogate.task["residual"] is residual
    assert surrogate.x_mean.shape[1] == 5 and surrogate.y_mean.shape[1] == 2
    metrics = evaluate_cell(ns, tmp_path, cell={"dataset": "ns", "model": "unet", "optimizer": "adamw", "seed": 0})
    assert len(metrics["rollout_rel_l2"]) == 9 == len(metrics["rollout_times"])
    for col in ("onestep_rel_l2", "rollout_rel_l2_step1", "rollout_rel_l2_step8", "rollout_rel_l2_last",
                "rollout_corr_time", "test_rel_l2_mean"):
        assert col in SUMMARY_COLUMNS and np.isfinite(metrics[col]), col
    assert metrics["rollout_rel_l2_step1"] == pytest.approx(metrics["rollout_rel_l2"][0])
    arrays = np.load(tmp_path / "predictions.npz")
    assert list(arrays["x_names"]) == ["mask", "vx[t-1]", "vy[t-1]", "vx[t]", "vy[t]"]
    assert arrays["rollout_pred"].shape[1:] == (5, 2, 16, 16)
    if residual:  # near the last given state from the start: far below a model that must learn the state
        assert metrics["onestep_rel_l2"] < 0.5


def test_heat_rolls_out_from_its_initial_state(heat, tmp_path):
    """history 1: the rollout starts from u0 alone and runs over every saved state."""
    from kryflow.evaluation import evaluate_cell
    from kryflow.training import train_cell

    train_cell(heat, tmp_path, model_name="fno", model_kwargs={"width": 4, "modes": 2, "layers": 1},
               optimizer_name="adamw", optimizer_kwargs={"lr": 1e-3}, seed=0,
               train_cfg={"max_steps": 3, "batch_size": 4, "task": {"kind": "next_step"}}, progress=False)
    metrics = evaluate_cell(heat, tmp_path, cell={})
    assert len(metrics["rollout_rel_l2"]) == 4 and metrics["rollout_times"] == pytest.approx([0.02, 0.04, 0.06, 0.08])
    assert list(np.load(tmp_path / "predictions.npz")["x_names"]) == ["a", "u[t]"]


def test_final_state_is_unchanged_by_default(heat):
    plain = make_loader(heat, "train", batch_size=3, shuffle=True, seed=1)
    task = make_loader(heat, "train", batch_size=3, shuffle=True, seed=1, task=Task.from_config(None))
    for (x0, y0), (x1, y1) in zip(plain, task, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_a_steady_store_refuses_a_next_step_task(tmp_path):
    from kryflow.data import write_synthetic_dataset

    path = write_synthetic_dataset(tmp_path / "s.zarr", num_samples=6)
    with pytest.raises(DatasetError, match="names no PDE family"):
        trajectory_layout(path, NEXT)


# ------------------------------------------------------------------------------ config
BASE = {
    "experiment": "t",
    "datasets": {"ns": {"family": "navier_stokes", "num_samples": 8,
                        "params": {"n": 16, "num_steps": 20, "save_every": 2, "dt": 0.005},
                        "task": {"kind": "next_step", "history": 2, "horizon": 1}},
                 "darcy": {"family": "darcy", "num_samples": 8, "params": {"n": 16}}},
    "models": {"fno": {"width": 4, "modes": 2, "layers": 1}},
    "optimizers": {"adamw": {"lr": 1e-3}},
    "seeds": [0],
    "training": {"max_steps": 2},
}


def _check(**changes) -> dict:
    cfg = copy.deepcopy(BASE)
    for dataset, task in changes.items():
        cfg["datasets"][dataset]["task"] = task
    return check_config(cfg)


def test_config_hands_the_task_to_training():
    cfg = _check()
    assert cell_training(cfg, "ns")["task"] == {"kind": "next_step", "history": 2, "horizon": 1}
    assert "task" not in cell_training(cfg, "darcy")  # final_state: the training section as before
    assert rollout_datasets(cfg) == ["ns"]


@pytest.mark.parametrize("changes, key, words", [
    ({"ns": {"kind": "next_step", "history": 0}}, "datasets.ns.task.history", "history must be an integer >= 1"),
    ({"ns": {"kind": "next_step", "horizon": 0}}, "datasets.ns.task.horizon", "horizon must be"),
    ({"ns": {"kind": "next_step", "history": 8, "horizon": 4}}, "datasets.ns.task.horizon",
     "needs 12 states, but a trajectory stores 11"),
    ({"ns": {"kind": "next_step", "history": 9, "horizon": 1, "pushforward": 2}}, "datasets.ns.task.pushforward",
     r"\(1 \+ pushforward 2\) needs 12 states"),
    ({"darcy": {"kind": "next_step"}}, "datasets.darcy.task.kind", "darcy is steady"),
    ({"ns": {"kind": "final_state", "history": 2}}, "datasets.ns.task.history", "belongs to a next_step task"),
    ({"ns": {"kind": "rollout"}}, "datasets.ns.task.kind", "unknown learning task"),
])
def test_bad_tasks_fail_before_any_job_naming_the_key(changes, key, words):
    with pytest.raises(ConfigError, match=words) as err:
        _check(**changes)
    assert err.value.key == key


def test_steady_advection_diffusion_refuses_next_step():
    cfg = copy.deepcopy(BASE)
    cfg["datasets"]["ad"] = {"family": "advection_diffusion", "num_samples": 8, "params": {"n": 16},
                             "task": {"kind": "next_step"}}
    with pytest.raises(ConfigError, match="advection_diffusion is steady") as err:
        check_config(cfg)
    assert err.value.key == "datasets.ad.task.kind"


def test_navier_stokes_config_is_valid():
    from kryflow.config import load_config

    cfg = load_config(ROOT / "config" / "navier_stokes.yaml")
    assert set(rollout_datasets(cfg)) == {"ns2d", "advdiff_traj"}
    assert {"fno", "unet", "sinenet"} <= set(cfg["models"])


# --------------------------------------------------------------------- a real workflow
NS_CONFIG = {
    "experiment": "kryflow-next-step",
    "datasets": {"ns": {"family": "navier_stokes", "num_samples": 8, "seed": 0, "chunk_samples": 4,
                        "params": {"n": 16, "num_steps": 12, "save_every": 2, "dt": 0.005},
                        "splits": [0.5, 0.25, 0.25], "solver": {"method": "direct"},
                        "task": {"kind": "next_step", "history": 2, "horizon": 1, "pushforward": 1,
                                 "residual": True}}},
    "models": {"fno": {"width": 4, "modes": 3, "layers": 2}, "unet": {"width": 4, "depth": 2},
               "sinenet": {"width": 4, "waves": 2, "depth": 2, "multiplier": 1.5}},
    "optimizers": {"adamw": {"lr": 3e-3}},
    "seeds": [0],
    "training": {"max_steps": 6, "eval_every": 3, "checkpoint_every": 6, "batch_size": 4, "loss": "mse"},
    "evaluation": {"num_predictions": 2},
    "solver_benchmark": {"enabled": False},
}


@pytest.mark.slow
def test_snakemake_trains_next_step_models_and_reports_rollouts(tmp_path):
    cfg = write_config(tmp_path / "ns.yaml", NS_CONFIG)
    proc = run_snakemake(tmp_path, cfg, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert sorted(summary["model"]) == ["fno", "sinenet", "unet"]
    assert (summary["status"] == "finished").all()
    for col in ("onestep_rel_l2", "rollout_rel_l2_step1", "rollout_rel_l2_step4", "rollout_rel_l2_last",
                "rollout_corr_time", "test_rel_l2_mean"):
        assert np.isfinite(summary[col]).all(), col
    figures = tmp_path / "results" / "figures"
    for stem in ("rollout_error_ns", "rollout_fields_ns_sinenet", "predictions_ns_unet"):
        assert (figures / f"{stem}.png").stat().st_size > 0
    table = (tmp_path / "results" / "tables" / "rollout.md").read_text()
    assert "Rollout" in table
    # the models are compared with each other: the best one-step error is bold in one row only
    rows = [r for r in table.splitlines() if r.startswith("| ns |")]
    assert len(rows) == 3 and sum(r.split("|")[5].strip().startswith("**") for r in rows) == 1, table
    metrics = json.loads((tmp_path / "results" / "runs" / "ns" / "sinenet" / "adamw" / "0" / "metrics.json").read_text())
    assert len(metrics["rollout_rel_l2"]) == 5  # 7 states, 2 given

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary.loc[summary["model"] == "sinenet", "run_id"].iloc[0])
    assert "rollout_rel_l2_last" in run.data.metrics and "rollout_corr_time" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "rollout_rel_l2")) == 5
