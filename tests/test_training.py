"""The training loop through its public entry point: budgets, divergence, exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from kryflow.data._synthetic import write_synthetic_dataset
from kryflow.training import load_surrogate, train_cell

TRAIN = {"batch_size": 4, "max_steps": 16, "eval_every": 4, "checkpoint_every": 4, "loss": "rel_l2",
         "scheduler": {"kind": "cosine"}, "divergence_factor": 1000.0, "device": "cpu"}
FNO = {"width": 8, "modes": 3, "layers": 2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "syn.zarr", num_samples=40, grid=(8, 8))


def _train(dataset, out, optimizer="adam", lr=3e-3, **overrides):
    return train_cell(dataset, out, model_name="fno", model_kwargs=FNO, optimizer_name=optimizer,
                      optimizer_kwargs={"lr": lr}, seed=0, train_cfg={**TRAIN, **overrides}, progress=False)


def test_trains_and_writes_outputs(dataset, tmp_path):
    res = _train(dataset, tmp_path)
    assert res["status"] == "finished" and res["steps"] == 16
    hist = pd.read_csv(tmp_path / "history.csv")
    assert list(hist["step"]) == [4, 8, 12, 16]
    assert hist["val_rel_l2"].iloc[-1] < hist["val_rel_l2"].iloc[0]
    assert (tmp_path / "model.pt").exists() and json.loads((tmp_path / "train.json").read_text())["steps"] == 16
    # the saved surrogate maps physical inputs to physical outputs
    model = load_surrogate(tmp_path / "model.pt")
    assert model(torch.zeros(2, 2, 8, 8)).shape == (2, 1, 8, 8)


def test_same_seed_same_result(dataset, tmp_path):
    _train(dataset, tmp_path / "a")
    _train(dataset, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_diverging_run_is_recorded_as_diverged(dataset, tmp_path):
    res = _train(dataset, tmp_path, optimizer="sgd", lr=1e6)
    assert res["status"] == "diverged"
    assert "not finite" in res["reason"] or "exceeds" in res["reason"]
    assert res["steps"] < 16
    assert json.loads((tmp_path / "train.json").read_text())["status"] == "diverged"


def test_wall_clock_budget_stops_early(dataset, tmp_path):
    res = _train(dataset, tmp_path, max_steps=100000, max_seconds=0.5)
    assert res["status"] == "finished" and 0 < res["steps"] < 100000


_SCRIPT = """
import sys, json
from kryflow.training import train_cell
train_cell(sys.argv[1], sys.argv[2], model_name="fno", model_kwargs={fno}, optimizer_name="adam",
           optimizer_kwargs={{"lr": 3e-3}}, seed=0, train_cfg={cfg}, progress=False)
"""


def test_kill_9_then_rerun_resumes_exactly(dataset, tmp_path):
    cfg = {**TRAIN, "max_steps": 400, "checkpoint_every": 10, "eval_every": 50}
    script = _SCRIPT.format(fno=FNO, cfg=cfg)
    subprocess.run([sys.executable, "-c", script, str(dataset), str(tmp_path / "ref")], check=True, timeout=600)

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", script, str(dataset), str(out)])
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if (out / "model.pt").exists():
        pytest.skip("the run finished before it could be killed")
    assert (out / "checkpoint.pt").exists()
    subprocess.run([sys.executable, "-c", script, str(dataset), str(out)], check=True, timeout=600)
    ref = torch.load(tmp_path / "ref" / "model.pt", weights_only=False)["state_dict"]
    got = torch.load(out / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "ref" / "history.csv").drop(columns=["seconds", "step_seconds", "memory_mb"]),
        pd.read_csv(out / "history.csv").drop(columns=["seconds", "step_seconds", "memory_mb"]),
    )
