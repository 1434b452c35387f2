"""The tuning protocol: search spaces, trial plans, selection on validation, budgets, scores."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CONFIG
from kryflow.config import ConfigError, check_config
from kryflow.optim import OPTIMIZERS, SHARED_SPACE, Dim, apply_setting, space_from_config
from kryflow.tuning import (
    expected_best_of_k,
    geometric_mean_speedup,
    performance_profile,
    profile_score,
    select_trials,
    trial_plan,
)


def _config(**tuning):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["darcy2"] = {**cfg["datasets"]["darcy"], "seed": 5}
    cfg["optimizers"] = {"adamw": {"lr": 1e-3}, "adam": {"lr": 3e-3}, "zo_spsa": {"lr": 1e-4}}
    cfg["tuning"] = {"trials": 4, **tuning}
    return check_config(cfg)


def test_every_optimizer_declares_its_search_space():
    for name, spec in OPTIMIZERS.items():
        space = space_from_config(spec, None)
        assert space["lr"].log and 0 < space["lr"].low < space["lr"].high, name
        assert set(SHARED_SPACE) <= set(space)
    for name in ("adam", "adamw"):
        assert {"one_minus_beta1", "one_minus_beta2", "weight_decay"} <= set(OPTIMIZERS[name].space)
    assert {"preconditioning_compute_steps", "matrix_eps"} <= set(OPTIMIZERS["shampoo"].space)
    assert {"precondition_frequency", "eps"} <= set(OPTIMIZERS["soap"].space)
    assert {"damping", "inverse_every"} <= set(OPTIMIZERS["kfac"].space)
    assert {"damping", "refresh_every"} <= set(OPTIMIZERS["mkor"].space)
    assert "window" in OPTIMIZERS["mfac"].space
    assert "update_period" in OPTIMIZERS["adahessian"].space and "update_period" in OPTIMIZERS["sophiah"].space
    assert {"eps", "q"} <= set(OPTIMIZERS["zo_spsa"].space)


def test_a_setting_becomes_hyperparameters_every_optimizer_accepts():
    from kryflow.optim import check_hyperparameters

    for name, spec in OPTIMIZERS.items():
        space = space_from_config(spec, None)
        for u in (0.0, 0.999):
            setting = {k: d.at(u) for k, d in space.items()}
            hp, training = apply_setting(spec, {"lr": 1.0}, setting, {"max_steps": 100, "scheduler": {}})
            check_hyperparameters(name, **hp)  # raises if a drawn value is out of the entry's own range
            assert 0 <= training["scheduler"]["warmup_steps"] < 100
    hp, _ = apply_setting(OPTIMIZERS["adam"], {"lr": 1.0}, {"one_minus_beta1": 0.1, "one_minus_beta2": 0.01},
                          {"max_steps": 10})
    assert hp["betas"] == [0.9, 0.99]


def test_same_config_and_seed_give_the_same_trials():
    a, b = _config(seed=3), _config(seed=3)
    pa, pb = trial_plan(a, "darcy", "fno", "adam"), trial_plan(b, "darcy", "fno", "adam")
    assert pa.settings == pb.settings and len(pa.settings) == 4
    assert trial_plan(_config(seed=4), "darcy", "fno", "adam").settings != pa.settings
    assert trial_plan(a, "heat", "fno", "adam").settings != pa.settings  # another workload, other draws
    lrs = [s["lr"] for s in pa.settings]
    assert len(set(lrs)) == 4 and all(1e-4 <= lr <= 3e-2 for lr in lrs)


BAD = [
    ({"space": {"adam": {}}}, "tuning.space.adam"),
    ({"space": {"adam": {"lr": {"low": 1e-2, "high": 1e-4, "log": True}}}}, "tuning.space.adam.lr"),
    ({"space": {"adam": {"lr": {"low": 0.0, "high": 1e-2, "log": True}}}}, "tuning.space.adam.lr"),
    ({"space": {"adam": {"lr": {"low": -1e-3, "high": 1e-2, "log": True}}}}, "tuning.space.adam.lr"),
    ({"space": {"adam": {"momentun": {"low": 0.1, "high": 0.9}}}}, "tuning.space.adam.momentun"),
    ({"space": {"adamx": {"lr": {"low": 1e-4, "high": 1e-2}}}}, "tuning.space.adamx"),
    ({"trials": 0}, "tuning.trials"),
    ({"trials": 4, "studies": 3}, "tuning.studies"),
    ({"reference": "sgd"}, "tuning.reference"),
    ({"batch": 0}, "tuning.batch"),
    ({"batch": 2, "concurrent": 3}, "tuning.concurrent"),
    ({"concurrent": 0}, "tuning.concurrent"),
    ({"heldout": [{"dataset": "nope", "of": "darcy"}]}, "tuning.heldout.0.dataset"),
    ({"heldout": [{"dataset": "heat", "of": "darcy"}]}, "tuning.heldout.0.dataset"),
    ({"heldout": [{"dataset": "darcy", "of": "nope"}]}, "tuning.heldout.0.of"),
    ({"heldout": [{"dataset": "darcy2", "of": "darcy"}], "finetune": [{"dataset": "darcy2", "from": "darcy"}]},
     "tuning.heldout.0.dataset"),
]


@pytest.mark.parametrize("tuning,key", BAD, ids=[k for _, k in BAD])
def test_bad_tuning_config_names_the_key(tuning, key):
    with pytest.raises(ConfigError) as err:
        _config(**tuning)
    assert key in str(err.value)


def test_selection_uses_validation_and_never_picks_a_failed_trial():
    records = [{"best_val_rel_l2": v, "status": s} for v, s in
               [(0.3, "finished"), (math.inf, "diverged"), (0.2, "finished"), (math.inf, "failed"),
                (0.25, "finished"), (0.25, "finished")]]
    got = select_trials(records, studies=2)
    assert got["selected"] == 2
    assert [s["trial"] for s in got["studies"]] == [2, 4]  # ties go to the lower index
    all_failed = select_trials([{"best_val_rel_l2": math.inf}] * 3, studies=1)
    assert all_failed["selected"] == 0


def test_reference_target_is_reached_by_at_least_half_the_reruns():
    from kryflow.tuning import reference_target

    assert reference_target([0.2, 0.3, 0.1]) == 0.2
    assert reference_target([0.2, 0.3]) == 0.3  # 2 seeds: both reach it, so the median time is finite
    assert reference_target([0.2, math.inf, 0.1]) == 0.2
    assert reference_target([0.2, math.inf]) is None  # half the reruns did not finish: no target
    assert reference_target([]) is None


def test_expected_best_of_k_is_the_mean_minimum_over_k_subsets():
    rng = np.random.default_rng(0)
    values = list(rng.random(6)) + [math.inf]
    curve = expected_best_of_k(values)
    for k in range(1, 8):
        brute = np.mean([min(c) for c in itertools.combinations(values, k)])
        assert curve[k - 1] == pytest.approx(brute) or (math.isinf(brute) and math.isinf(curve[k - 1]))
    assert curve[-1] == min(values)


def test_performance_profiles_scores_and_speedups():
    taus = np.linspace(1, 4, 301)
    times = {"ref": {"a": 2.0, "b": 4.0, "c": 1.0}, "fast": {"a": 1.0, "b": 2.0, "c": math.inf},
             "never": {"a": math.inf, "b": math.inf, "c": math.inf}}
    rho = performance_profile(times, taus)
    assert rho["fast"][0] == pytest.approx(2 / 3) and rho["ref"][0] == pytest.approx(1 / 3)
    assert rho["ref"][-1] == 1.0 and rho["never"].max() == 0.0
    assert profile_score(rho["never"], taus) == 0.0
    assert profile_score(np.ones_like(taus), taus) == pytest.approx(1.0)
    assert 0 < profile_score(rho["fast"], taus) < 1
    speed = geometric_mean_speedup(times, "ref")
    assert speed["fast"] == (pytest.approx(2.0), 2) and speed["ref"] == (pytest.approx(1.0), 3)
    assert math.isnan(speed["never"][0]) and speed["never"][1] == 0


def test_dims_check_their_ranges():
    assert Dim(1, 20, log=True, integer=True).at(0.999) == 20 and Dim(1, 20, log=True, integer=True).at(0.0) == 1
    assert Dim(0.0, 0.2).at(0.5) == pytest.approx(0.1)
    for bad in (Dim(2.0, 1.0), Dim(0.0, 1.0, log=True), Dim(0.2, 0.8, integer=True), Dim(math.nan, 1.0)):
        with pytest.raises(ValueError):
            bad.check("x")


def test_a_trial_never_reads_the_test_split(tmp_path, monkeypatch):
    """Trials are judged on validation; the test split is read only by the reruns' evaluation."""
    import kryflow.data._loader as loader
    import kryflow.data._store as store
    from kryflow.data import write_synthetic_dataset
    from kryflow.pipeline import init_tracking, run_trial

    data = write_synthetic_dataset(tmp_path / "syn.zarr", num_samples=24, grid=(8, 8), chunk_samples=8)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _config(trials=2)
    init_tracking(cfg["experiment"], {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, tmp_path / "tracking.json",
                  tmp_path, parents=[("tune/syn/fno/adam", "p", None), ("tune/syn/fno/adam/study0", "s", "tune/syn/fno/adam")])
    real = store.split_indices

    def guarded(path, split):
        assert split != "test", "a tuning trial read the test split"
        return real(path, split)

    monkeypatch.setattr(store, "split_indices", guarded)
    monkeypatch.setattr(loader, "split_indices", guarded)
    spec = {"model": {"name": "fno", "width": 4, "modes": 2, "layers": 1}, "optimizer": {"name": "adam", "lr": 3e-3}}
    training = {"batch_size": 4, "max_steps": 4, "eval_every": 2, "checkpoint_every": 2, "device": "cpu"}
    info = run_trial({"dataset": "syn", "model": "fno", "optimizer": "adam"}, 1, spec, training, cfg["tuning"], data,
                     tmp_path / "trial1", tmp_path / "tracking.json")
    assert info["status"] == "finished" and math.isfinite(info["best_val_rel_l2"])
    assert info["setting"] == dict(trial_plan(cfg, "syn", "fno", "adam").settings[1])
    assert json.loads((tmp_path / "trial1" / "trial.json").read_text())["trial"] == 1


def _tracked_syn(tmp_path, monkeypatch, trials: int, studies: int = 1, **tuning):
    """A synthetic dataset, a sqlite store with the parent runs of (syn, fno, adam), the config."""
    from kryflow.data import write_synthetic_dataset
    from kryflow.pipeline import init_tracking

    data = write_synthetic_dataset(tmp_path / "syn.zarr", num_samples=24, grid=(8, 8), chunk_samples=8)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _config(trials=trials, studies=studies, **tuning)
    parents = [("workload/syn/fno", "w", None), ("tune/syn/fno/adam", "p", "workload/syn/fno")]
    parents += [(f"tune/syn/fno/adam/study{s}", "s", "tune/syn/fno/adam") for s in range(studies)]
    init_tracking(cfg["experiment"], {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, tmp_path / "tracking.json",
                  tmp_path, parents=parents)
    return data, cfg


SYN_SPEC = {"model": {"name": "fno", "width": 4, "modes": 2, "layers": 1}, "optimizer": {"name": "adam", "lr": 3e-3}}
SYN_CELL = {"dataset": "syn", "model": "fno", "optimizer": "adam"}


def _run_batches(root, cfg, data, tracking, training):
    """Every batch of (syn, fno, adam) as the workflow runs them: one job (call) per batch."""
    from kryflow.config import batch_cells
    from kryflow.pipeline import run_trial_batch

    cfg = {**cfg, "datasets": {"syn": cfg["datasets"]["darcy"]}, "models": {"fno": {}}, "optimizers": {"adam": {}}}
    paths = []
    for _, _, _, b in batch_cells(cfg):
        paths.append(root / f"batch{b}.json")
        run_trial_batch(SYN_CELL, b, SYN_SPEC, training, cfg["tuning"], data, paths[-1], tracking)
    return paths


def test_same_config_and_seed_select_the_same_setting(tmp_path, monkeypatch):
    """Two runs of the same trials on CPU train identically, so they select the same setting."""
    from kryflow.pipeline import run_select

    data, cfg = _tracked_syn(tmp_path, monkeypatch, trials=3)
    training = {"batch_size": 4, "max_steps": 6, "eval_every": 2, "checkpoint_every": 6, "device": "cpu"}
    chosen = []
    for run in ("a", "b"):
        batches = _run_batches(tmp_path / run, cfg, data, tmp_path / "tracking.json", training)
        chosen.append(run_select(SYN_CELL, batches, 1, tmp_path / run / "selected.json", tmp_path / "tracking.json"))
    a, b = chosen
    assert [t["best_val_rel_l2"] for t in a["trials"]] == [t["best_val_rel_l2"] for t in b["trials"]]
    assert a["selected"] == b["selected"] and a["setting"] == b["setting"]
    assert len({t["best_val_rel_l2"] for t in a["trials"]}) == 3  # the trials differ, the choice is not a tie


def test_batches_hold_whole_studies_in_trial_order():
    from kryflow.tuning import study_batches

    assert study_batches(10, 2, 3) == ((0, 1, 2), (3, 4), (5, 6, 7), (8, 9))
    assert study_batches(4, 1, 8) == ((0, 1, 2, 3),)
    assert study_batches(3, 3, 2) == ((0,), (1,), (2,))
    with pytest.raises(ValueError):
        study_batches(4, 1, 0)


def test_trial_batches_give_the_same_trials_as_one_job_per_trial(tmp_path, monkeypatch):
    """The batch size (and trials trained at once) changes how trials are run, never what they
    give: the same settings and validation errors on CPU, each trial its own folder and run."""
    import torch
    from mlflow.tracking import MlflowClient

    torch.set_num_threads(1)  # a worker of a concurrent batch trains with one thread here too
    training = {"batch_size": 4, "max_steps": 6, "eval_every": 2, "checkpoint_every": 6, "device": "cpu"}
    got = {}
    for name, tuning in (("one", {"batch": 1}), ("three", {"batch": 3}), ("concurrent", {"batch": 4, "concurrent": 2})):
        sub = tmp_path / name
        sub.mkdir()
        data, cfg = _tracked_syn(sub, monkeypatch, trials=4, studies=2, **tuning)
        batches = _run_batches(sub / "tune", cfg, data, sub / "tracking.json", training)
        assert len(batches) == {"one": 4, "three": 2, "concurrent": 2}[name]  # a batch never spans two studies
        records = sorted((t for p in batches for t in json.loads(p.read_text())["trials"]), key=lambda t: t["trial"])
        got[name] = [(t["trial"], t["setting"], t["best_val_rel_l2"]) for t in records]
        assert all((sub / "tune" / f"trial{t}" / "history.csv").exists() for t in range(4))
        info = json.loads((sub / "tracking.json").read_text())
        client = MlflowClient(tracking_uri=info["uri"])
        runs = client.search_runs([info["experiment_id"]], "tags.rule = 'tune_batch'")
        assert sorted(r.data.tags["kryflow.key"] for r in runs) == [f"tune/syn/fno/adam/trial{t}" for t in range(4)]
        assert all(len(client.get_metric_history(r.info.run_id, "val_rel_l2")) == 3 for r in runs)
    assert got["one"] == got["three"] == got["concurrent"]
    assert all(math.isfinite(v) for _, _, v in got["one"])


_BATCH_JOB = """
import json, sys
from kryflow.pipeline import run_trial_batch
args = json.loads(sys.argv[1])
run_trial_batch(args["cell"], 0, args["spec"], args["training"], args["tuning"], args["data"], args["out"],
                args["tracking"])
"""


def test_a_killed_batch_job_resumes_at_its_first_unfinished_trial(tmp_path, monkeypatch):
    """SIGKILL in the middle of the second trial: the job run again keeps the first trial (its
    files and its MLflow run), continues the second from its checkpoint and trains the third."""
    import signal
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from kryflow.pipeline import run_trial_batch

    data, cfg = _tracked_syn(tmp_path, monkeypatch, trials=3, batch=3)
    training = {"batch_size": 4, "max_steps": 400, "eval_every": 50, "checkpoint_every": 20, "device": "cpu"}
    out = tmp_path / "tune" / "batch0.json"
    args = {"cell": SYN_CELL, "spec": SYN_SPEC, "training": training, "tuning": cfg["tuning"], "data": str(data),
            "out": str(out), "tracking": str(tmp_path / "tracking.json")}
    proc = subprocess.Popen([sys.executable, "-c", _BATCH_JOB, json.dumps(args)])
    first, second = tmp_path / "tune" / "trial0" / "trial.json", tmp_path / "tune" / "trial1" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not (first.exists() and second.exists()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and second.exists() and not out.exists(), "the job was not killed inside its second trial"
    stamp = first.stat().st_mtime_ns
    killed_at = torch_load_step(second)
    result = run_trial_batch(SYN_CELL, 0, SYN_SPEC, training, cfg["tuning"], data, out, tmp_path / "tracking.json")
    assert [t.get("kept", False) for t in result["trials"]] == [True, False, False]
    assert first.stat().st_mtime_ns == stamp
    assert killed_at >= 20 and result["trials"][1]["steps"] == 400
    assert [t["status"] for t in result["trials"]] == ["finished"] * 3
    info = json.loads((tmp_path / "tracking.json").read_text())
    runs = MlflowClient(tracking_uri=info["uri"]).search_runs([info["experiment_id"]], "tags.rule = 'tune_batch'")
    keys = sorted(r.data.tags["kryflow.key"] for r in runs)
    assert keys == [f"tune/syn/fno/adam/trial{t}" for t in range(3)]  # no duplicate run for the resumed trial
    assert all(r.info.status == "FINISHED" for r in runs)


def torch_load_step(path) -> int:
    import torch

    return int(torch.load(path, weights_only=False)["state"]["step"])


def test_a_failed_trial_is_recorded_and_the_batch_goes_on(tmp_path, monkeypatch):
    import kryflow.training as training_pkg

    data, cfg = _tracked_syn(tmp_path, monkeypatch, trials=3, batch=3)
    real = training_pkg.train_cell

    def failing_second(dataset_path, out_dir, **kw):
        if Path(out_dir).name == "trial1":
            raise MemoryError("out of device memory")  # any error of a trial, not only a bad setting
        return real(dataset_path, out_dir, **kw)

    monkeypatch.setattr(training_pkg, "train_cell", failing_second)
    training = {"batch_size": 4, "max_steps": 4, "eval_every": 2, "checkpoint_every": 4, "device": "cpu"}
    (batch,) = _run_batches(tmp_path / "tune", cfg, data, tmp_path / "tracking.json", training)
    status = [t["status"] for t in json.loads(batch.read_text())["trials"]]
    assert status == ["finished", "failed", "finished"]
    failed = json.loads((tmp_path / "tune" / "trial1" / "train.json").read_text())
    assert "MemoryError: out of device memory" in failed["reason"]


@pytest.mark.slow
def test_a_real_tuning_study_end_to_end(tuning_run):
    """Snakemake runs 2 optimizers x 3 trials: trials nested under studies in MLflow, selection on
    validation, reruns of the selected setting, diverged trials recorded, the profile figure made;
    a second run keeps every finished trial."""
    import matplotlib.image as mpimg
    from mlflow.tracking import MlflowClient

    from conftest import run_snakemake

    tmp_path, cfg, _ = tuning_run
    tuning = tmp_path / "results" / "tuning" / "darcy" / "fno"
    trials = [json.loads((tuning / "adamw" / f"trial{t}" / "trial.json").read_text()) for t in range(3)]
    selected = json.loads((tuning / "adamw" / "selected.json").read_text())
    assert selected["selected"] == min(range(3), key=lambda t: trials[t]["best_val_rel_l2"])  # on validation
    rerun = json.loads((tmp_path / "results" / "runs" / "darcy" / "fno" / "adamw" / "0" / "effective_config.json")
                       .read_text())
    assert rerun["optimizer"] == {"name": "adamw", **selected["hyperparameters"]}
    wild = [json.loads((tuning / "sgdwild" / f"trial{t}" / "trial.json").read_text()) for t in range(3)]
    assert {t["status"] for t in wild} <= {"diverged", "failed"} and all(math.isinf(t["best_val_rel_l2"]) for t in wild)
    budget = json.loads((tuning / "budget.json").read_text())
    assert budget["kind"] == "steps+seconds" and budget["max_seconds"] > 0
    assert all(t["budget_kind"] == "steps+seconds" and t["training"]["max_seconds"] == budget["max_seconds"]
               for t in wild)
    report = json.loads((tmp_path / "results" / "tuning" / "report.json").read_text())
    w = report["workloads"]["darcy/fno"]
    assert w["optimizers"]["sgdwild"]["time_to_target"]["seconds"] is None  # never reached: counts as inf
    assert report["scores"]["seconds"]["adamw"] == pytest.approx(1.0) and report["scores"]["seconds"]["sgdwild"] == 0.0
    image = mpimg.imread(tmp_path / "results" / "figures" / "tuning_profiles.png")
    assert image.shape[0] > 100 and (tmp_path / "results" / "tables" / "tuning.md").exists()
    # MLflow: trials under their study, studies and reruns under the optimizer, optimizers under the workload
    info = json.loads((tmp_path / "results" / "tracking.json").read_text())
    client = MlflowClient(tracking_uri=info["uri"])
    exp = client.get_experiment_by_name(cfg["experiment"])
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    key = {r.info.run_id: r.data.tags.get("kryflow.key") for r in runs}
    parent = {r.data.tags.get("kryflow.key"): key.get(r.data.tags.get("mlflow.parentRunId")) for r in runs}
    for o in ("adamw", "sgdwild"):
        assert parent[f"tune/darcy/fno/{o}"] == "workload/darcy/fno"
        assert parent[f"tune/darcy/fno/{o}/study0"] == f"tune/darcy/fno/{o}"
        assert all(parent[f"tune/darcy/fno/{o}/trial{t}"] == f"tune/darcy/fno/{o}/study0" for t in range(3))
        assert parent[f"train/darcy/fno/{o}/0"] == f"tune/darcy/fno/{o}"
    statuses = {r.data.tags["kryflow.key"]: r.data.tags.get("status") for r in runs}
    assert {statuses[f"tune/darcy/fno/sgdwild/trial{t}"] for t in range(3)} <= {"diverged", "failed"}
    # fine-tuning: the reference's model of darcy adapted to darcy_shift (not a training workload)
    ft = report["finetune"]["darcy_shift/fno"]
    assert set(ft["optimizers"]) == {"adamw", "sgdwild"} and ft["before_test_rel_l2"] > 0
    assert ft["optimizers"]["adamw"]["reached_reference"]
    assert not (tmp_path / "results" / "runs" / "darcy_shift").exists()
    assert "| darcy_shift/fno | AdamW |" in (tmp_path / "results" / "tables" / "finetune.md").read_text()
    # held-out variant: the setting selected on darcy trained on darcy_hi; missing its target
    # makes the base workload's time "never" (AlgoPerf), with the unpenalised times kept
    held = report["heldout"]["darcy_hi/fno"]
    assert held["source"] == "darcy/fno" and held["target_val_rel_l2"] > 0
    assert held["optimizers"]["adamw"]["reached"] and not held["optimizers"]["sgdwild"]["reached"]
    assert w["optimizers"]["sgdwild"]["heldout_missed"] == ["darcy_hi/fno"]
    assert "heldout_missed" not in w["optimizers"]["adamw"]
    assert "darcy_hi/fno (of darcy/fno)" in (tmp_path / "results" / "tables" / "heldout.md").read_text()
    assert not (tmp_path / "results" / "runs" / "darcy_hi").exists()
    assert parent["heldout/darcy_hi/fno/adamw/0"] == "workload/darcy/fno"
    assert parent["finetune/darcy_shift/fno/sgdwild/0"] == "workload/darcy/fno"
    again = run_snakemake(tmp_path, tmp_path / "tune.yaml", "-n", timeout=600)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_zeroth_order_gets_the_reference_gradient_evaluations():
    from kryflow.tuning import budget_kind, budgeted_training

    budget = {"max_steps": 100, "max_seconds": 12.0, "max_grad_evals": 100.0, "kind": "steps+seconds"}
    first = budgeted_training({"max_steps": 5}, budget)
    assert first["max_steps"] == 100 and first["max_seconds"] == 12.0 and "max_grad_evals" not in first
    zo = budgeted_training({"max_steps": 5}, budget, zeroth_order=True)
    assert zo["max_grad_evals"] == 100.0 and zo["max_seconds"] is None and zo["max_steps"] >= 150
    assert budget_kind(budget) == "steps+seconds" and budget_kind(budget, True) == "grad_evals"


def test_a_run_says_which_budget_ended_it():
    from kryflow.tuning._summary import stopped_by

    budget = {"max_steps": 100, "max_seconds": 10.0}
    assert stopped_by({"status": "finished", "steps": 100, "train_seconds": 5.0}, budget) == "steps"
    assert stopped_by({"status": "finished", "steps": 40, "train_seconds": 10.2}, budget) == "seconds"
    assert stopped_by({"status": "diverged", "steps": 3}, budget) == "diverged"
    assert stopped_by({"status": "finished", "steps": 90, "grad_evals": 50.0},
                      {"max_steps": 150, "max_grad_evals": 50.0}) == "grad_evals"


def test_the_report_says_which_differences_the_intervals_resolve():
    from kryflow.tuning._summary import _versus_reference

    w = {"w": {"optimizers": {"ref": {"test_rel_l2_ci95": [0.10, 0.12]}, "a": {"test_rel_l2_ci95": [0.05, 0.09]},
                              "b": {"test_rel_l2_ci95": [0.11, 0.20]}, "c": {"test_rel_l2_ci95": [0.13, 0.2]},
                              "d": {"test_rel_l2_ci95": None}}}}
    _versus_reference(w, "ref")
    got = {o: r["test_vs_reference"] for o, r in w["w"]["optimizers"].items()}
    assert got == {"ref": None, "a": "lower", "b": "not resolved", "c": "higher", "d": None}


def test_the_report_says_why_the_studies_missed_the_target():
    """The reason explains the table's 'not reached' (the studies' median), also when a rerun hit."""
    from kryflow.tuning._summary import _why_not_reached

    def run(steps_hit, ended):
        return {"time_to_target": {"steps": steps_hit}, "stopped_by": ended}

    ok = [{"status": "finished"}]
    assert _why_not_reached([run(300.0, "steps")], ok, reached=True) is None
    assert _why_not_reached([run(None, "seconds")] * 3, ok, reached=False).startswith("wall-clock budget")
    mixed = _why_not_reached([run(None, "steps"), run(375.0, "steps"), run(None, "steps")], ok, reached=False)
    assert mixed == "whole step budget spent above the target (in its studies; 1 of 3 reruns reached it)"
    assert _why_not_reached([], [{"status": "diverged"}] * 2, reached=False) == "every trial diverged or failed"
