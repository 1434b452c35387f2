"""Reliability: a checkpoint.pt left by an earlier configuration of the same cell.

checkpoint.pt is deliberately not a Snakemake output (workflow/rules/train.smk), so it survives
everything: a kill (wanted, tests/test_training.py::test_kill_9_then_rerun_resumes_exactly and
test_rel_workflow_faults.py) but also a config edit. When the user changes a cell's optimizer or
model hyperparameters Snakemake reruns the train job (params changed) in the same folder, and the
trainer resumes from the old checkpoint. Resuming is only right when the checkpoint was made by the
same configuration; otherwise the rerun must start afresh (or stop with an error naming the file).
"""

from __future__ import annotations

import shutil

import pytest
import torch

from kryflow.data import write_synthetic_dataset
from kryflow.training import train_cell

TRAIN = {"batch_size": 4, "max_steps": 8, "eval_every": 4, "checkpoint_every": 4, "device": "cpu"}
FNO = {"width": 4, "modes": 2, "layers": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("stale") / "syn.zarr", num_samples=24, grid=(8, 8))


def _train(store, out, lr=3e-3, model_kwargs=FNO, **train):
    return train_cell(store, out, model_name="fno", model_kwargs=model_kwargs, optimizer_name="adam",
                      optimizer_kwargs={"lr": lr}, seed=0, train_cfg={**TRAIN, **train}, progress=False)


def _weights(out):
    return torch.load(out / "model.pt", weights_only=False)["state_dict"]


def _rerun_after_edit(store, tmp_path, **edit):
    """A finished cell, its outputs removed as Snakemake does before a rerun, then the edited config."""
    out = tmp_path / "cell"
    _train(store, out)
    for name in ("model.pt", "history.csv", "train.json"):
        (out / name).unlink(missing_ok=True)
    return out


def test_changed_learning_rate_is_not_silently_resumed_from_the_old_checkpoint(store, tmp_path):
    out = _rerun_after_edit(store, tmp_path)
    res = _train(store, out, lr=3e-2)
    fresh = tmp_path / "fresh"
    _train(store, fresh, lr=3e-2)
    got, ref = _weights(out), _weights(fresh)
    assert res["steps"] == TRAIN["max_steps"]
    assert all(torch.equal(got[k], ref[k]) for k in ref), "the rerun with lr 3e-2 kept the lr 3e-3 result"


def test_changed_model_gives_a_clear_error_or_a_fresh_start(store, tmp_path):
    out = _rerun_after_edit(store, tmp_path)
    try:
        res = _train(store, out, model_kwargs={**FNO, "width": 6})
    except Exception as exc:  # an error is fine if it names the file and says what to do
        assert "checkpoint.pt" in str(exc) and ("delete" in str(exc) or "remove" in str(exc)), str(exc)[:500]
        return
    assert res["steps"] == TRAIN["max_steps"]


def test_longer_budget_resumes_from_the_finished_checkpoint(store, tmp_path):
    """The one edit where resuming is right: max_steps raised -> continue, equal to a straight run."""
    out = _rerun_after_edit(store, tmp_path)
    res = _train(store, out, max_steps=12, eval_every=4, checkpoint_every=4)
    straight = tmp_path / "straight"
    _train(store, straight, max_steps=12)
    assert res["steps"] == 12
    got, ref = _weights(out), _weights(straight)
    # the cosine/constant schedule does not depend on max_steps here (constant), so the runs agree
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    shutil.rmtree(straight)
