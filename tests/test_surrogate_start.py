"""Surrogate warm start (solver.initial_guess: surrogate): a tiny model trained here starts the
solves of a fresh dataset; config checks name the key; the workflow trains before it generates."""

from __future__ import annotations

import copy
import re
import time

import numpy as np
import pytest

from conftest import TINY_CONFIG, run_snakemake, write_config
from kryflow.config import ConfigError, check_config
from kryflow.data import open_dataset
from kryflow.generation import SurrogateStartError, generate_dataset, load_start_model
from kryflow.pdes import build_family
from kryflow.training import train_cell

DARCY = {"n": 8, "dim": 2, "coefficient": "lognormal"}
HEAT = {"n": 8, "dim": 2, "num_steps": 2, "save_every": 1}
ITERATIVE = {"method": "cg", "preconditioner": "jacobi", "rtol": 1e-8}


def _trained(tmp, family, params, seed):
    """A tiny FNO trained for a few steps on a tiny dataset of ``family``: its run folder."""
    data = tmp / f"{family}.zarr"
    generate_dataset(data, family=family, params=params, num_samples=12, seed=seed, chunk_samples=4,
                     splits=(0.5, 0.25, 0.25), solver={"method": "direct"}, progress=False)
    run = tmp / "runs" / family
    train_cell(data, run, model_name="fno", model_kwargs={"width": 4, "modes": 2, "layers": 1},
               optimizer_name="adam", optimizer_kwargs={"lr": 3e-3}, seed=0,
               train_cfg={"batch_size": 4, "max_steps": 4, "eval_every": 2, "checkpoint_every": 4, "device": "cpu"},
               progress=False)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("surrogate_start")
    return {"darcy": _trained(tmp, "darcy", DARCY, 0), "heat": _trained(tmp, "heat", HEAT, 1)}


def _config(solver):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["darcy"]["params"] = dict(DARCY)
    cfg["datasets"]["darcy"].pop("transfer")
    cfg["datasets"]["next"] = {**copy.deepcopy(cfg["datasets"]["darcy"]), "seed": 5, "solver": solver}
    return cfg


def _config_error(solver) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check_config(_config(solver))
    return info.value


def test_bad_initial_guess_values_name_the_key(tmp_path):
    assert "datasets.next.solver.initial_guess" in str(_config_error({**ITERATIVE, "initial_guess": "best"}))
    assert "datasets.next.solver.surrogate" in str(_config_error({**ITERATIVE, "initial_guess": "surrogate"}))
    err = _config_error({**ITERATIVE, "initial_guess": "zero", "warm_start": True})
    assert "datasets.next.solver.warm_start" in str(err)
    missing = tmp_path / "nowhere" / "model.pt"
    err = _config_error({**ITERATIVE, "initial_guess": "surrogate", "surrogate": str(missing)})
    assert "datasets.next.solver.surrogate" in str(err) and str(missing) in str(err)


def test_a_direct_method_takes_no_start(runs):
    err = _config_error({"method": "direct", "initial_guess": "surrogate", "surrogate": str(runs["darcy"])})
    assert "datasets.next.solver.method" in str(err) and "direct" in str(err)


def test_a_model_of_another_family_or_grid_fails_naming_it(runs, tmp_path):
    err = _config_error({**ITERATIVE, "initial_guess": "surrogate", "surrogate": str(runs["heat"])})
    assert "datasets.next.solver.surrogate" in str(err) and str(runs["heat"]) in str(err) and "heat" in str(err)
    cfg = _config({**ITERATIVE, "initial_guess": "surrogate", "surrogate": str(runs["darcy"])})
    cfg["datasets"]["next"]["params"]["n"] = 12
    with pytest.raises(ConfigError, match=r"8x8 grid, the dataset is 12x12"):
        check_config(cfg)
    # and in the generation job itself, before anything is written
    with pytest.raises(SurrogateStartError, match="trained on family 'heat'"):
        generate_dataset(tmp_path / "x.zarr", family="darcy", params=DARCY, num_samples=4, seed=9,
                         solver={**ITERATIVE, "initial_guess": "surrogate", "surrogate": str(runs["heat"])},
                         progress=False)
    assert not (tmp_path / "x.zarr").exists()


def test_an_unreadable_model_file_fails_naming_it(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(SurrogateStartError, match=re.escape(str(bad))):
        load_start_model(bad, build_family("darcy", **DARCY))


def test_a_workflow_cell_as_surrogate_is_checked():
    ref = {"dataset": "heat", "model": "fno", "optimizer": "adam", "seed": 0}
    err = _config_error({**ITERATIVE, "initial_guess": "surrogate", "surrogate": ref})
    assert "datasets.next.solver.surrogate.dataset" in str(err) and "same family and grid" in str(err)
    err = _config_error({**ITERATIVE, "initial_guess": "surrogate", "surrogate": {**ref, "dataset": "next"}})
    assert "trained on itself" in str(err)
    check_config(_config({**ITERATIVE, "initial_guess": "surrogate", "surrogate": {**ref, "dataset": "darcy"}}))


def _cold_and_started(tmp_path, family, params, run, monkeypatch=None):
    spec = dict(family=family, params=params, num_samples=6, seed=21, chunk_samples=3, splits=(0.5, 0.25, 0.25),
                progress=False)
    generate_dataset(tmp_path / "cold.zarr", solver={**ITERATIVE, "initial_guess": "zero"}, **spec)
    generate_dataset(tmp_path / "warm.zarr", solver={**ITERATIVE, "initial_guess": "surrogate", "surrogate": str(run)},
                     **spec)
    return open_dataset(tmp_path / "cold.zarr"), open_dataset(tmp_path / "warm.zarr")


@pytest.mark.parametrize("family", ["darcy", "heat"])
def test_surrogate_started_outputs_meet_the_tolerance_and_match_a_cold_solve(family, runs, tmp_path):
    params = DARCY if family == "darcy" else HEAT
    cold, warm = _cold_and_started(tmp_path, family, params, runs[family])
    assert float(warm["solver_rel_residual"].max()) <= ITERATIVE["rtol"]
    assert int(warm["solver_converged"].min()) == 1
    assert warm.attrs["solver"]["initial_guess"] == "surrogate" and warm.attrs["surrogate_load_seconds"] > 0
    np.testing.assert_array_equal(cold["a"].values, warm["a"].values)  # the solver never changes the data
    # both solves are within cond(A)·rtol of the exact solution (plus float32 storage)
    fam = build_family(family, **params)
    u_cold, u_warm = cold["u"].values.astype(float), warm["u"].values.astype(float)
    for k in range(u_cold.shape[0]):
        if family == "darcy":
            A = fam.system(cold["a"].values[k].astype(float))[0].toarray()
        else:
            from kryflow.pdes._operators import diffusion_operator

            L = diffusion_operator(cold["a"].values[k].astype(float)).toarray()
            theta = 1.0 if fam.params["scheme"] == "backward_euler" else 0.5
            A = np.eye(L.shape[0]) + theta * float(fam.params["dt"]) * L
        bound = (2 * np.linalg.cond(A) * ITERATIVE["rtol"] + 1e-6) * np.linalg.norm(u_cold[k])
        assert np.linalg.norm(u_warm[k] - u_cold[k]) <= bound


@pytest.mark.parametrize("family", ["darcy", "heat"])
def test_inference_seconds_count_in_the_solve_they_serve(family, runs, tmp_path, monkeypatch):
    from kryflow.generation import StartModel

    predict = StartModel.predict

    def slow_predict(self, fields):
        time.sleep(0.05)
        return predict(self, fields)

    monkeypatch.setattr(StartModel, "predict", slow_predict)
    cold, warm = _cold_and_started(tmp_path, family, DARCY if family == "darcy" else HEAT, runs[family])
    seconds = warm["solver_seconds"].values  # (sample, solve)
    assert (seconds[:, -1] >= 0.05).all()  # the prediction is for the sample's last solve
    assert (seconds[:, :-1] < 0.05).all()
    assert (cold["solver_seconds"].values < 0.05).all()


def test_workflow_trains_the_surrogate_before_generating_with_it(tmp_path):
    cfg = _config({**ITERATIVE, "initial_guess": "surrogate",
                   "surrogate": {"dataset": "darcy", "model": "fno", "optimizer": "adam", "seed": 0}})
    cfgfile = write_config(tmp_path / "next.yaml", cfg)
    plan = run_snakemake(tmp_path, cfgfile, "data/next.zarr", "-n", "--quiet", "rules", timeout=300)
    out = plan.stdout + plan.stderr
    jobs = {ln.split()[0]: int(ln.split()[1]) for ln in out.splitlines()
            if len(ln.split()) == 2 and ln.split()[1].isdigit()}
    assert plan.returncode == 0, out[-3000:]
    assert jobs.get("train") == 1 and jobs.get("generate_dataset") == 2, out[-3000:]


@pytest.mark.slow
def test_an_mlflow_model_uri_is_loaded_and_checked(runs, tmp_path):
    """``runs:/<id>/model`` as the workflow logs it (a pickled surrogate that carries trained_on)."""
    from kryflow.tracking import Tracker, ensure_experiment
    from kryflow.training import load_surrogate

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "surrogate-start", (tmp_path / "art").as_uri())
    tracker = Tracker(uri, "surrogate-start", key="train/darcy/fno/adam/0", run_name="darcy", tags={})
    example = np.zeros((1, 1, 8, 8), dtype=np.float32)
    tracker.log_model(load_surrogate(runs["darcy"] / "model.pt").eval(), input_example=example)
    tracker.finish("finished")
    ref = f"runs:/{tracker.run_id}/model"
    model = load_start_model(ref, build_family("darcy", **DARCY), tracking_uri=uri)
    assert model.trained_on.family == "darcy" and model.trained_on.grid == (8, 8)
    with pytest.raises(SurrogateStartError, match=re.escape(ref) + ".*family 'darcy', not 'heat'"):
        load_start_model(ref, build_family("heat", **HEAT), tracking_uri=uri)
    with pytest.raises(SurrogateStartError, match="runs:/0123abcd/model: the MLflow model cannot be loaded"):
        load_start_model("runs:/0123abcd/model", build_family("darcy", **DARCY), tracking_uri=uri)


@pytest.mark.slow
def test_workflow_generates_the_next_dataset_with_the_trained_model(tmp_path):
    """The real workflow: data/darcy.zarr, a model trained on it, data/next.zarr started from it."""
    cfg = _config({**ITERATIVE, "initial_guess": "surrogate",
                   "surrogate": {"dataset": "darcy", "model": "fno", "optimizer": "adam", "seed": 0}})
    proc = run_snakemake(tmp_path, write_config(tmp_path / "next.yaml", cfg), "data/next.zarr", timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ds = open_dataset(tmp_path / "data" / "next.zarr")
    assert ds.attrs["solver"]["initial_guess"] == "surrogate"
    assert ds.attrs["solver"]["surrogate"] == "results/runs/darcy/fno/adam/0/model.pt"
    assert float(ds["solver_rel_residual"].max()) <= ITERATIVE["rtol"]
