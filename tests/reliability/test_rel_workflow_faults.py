"""Reliability, faults (issue 9) with the real Snakemake engine on a tiny config.

One working directory carries a sequence of faults, so that the data are generated once:

1. ``kill -9`` (the whole snakemake process group) while ``data/slow.zarr`` is being written;
   then ``--unlock`` and a rerun. ``data/keep.zarr`` (finished before) must be untouched.
2. ``kill -9`` of the group while cell ``keep/fno/adam/0`` trains (a checkpoint.pt exists, no
   model.pt yet), then a rerun: it resumes and equals the uninterrupted twin cell
   ``keep/fno/adamref/0`` (same optimizer and seed under another label).
3. The full grid (on `keep`), which holds a diverging optimizer (sgd, lr 1e6): recorded as ``diverged`` in
   summary.csv and the MLflow ``status`` tag, the rest completes, figures and tables are made.
   The environment of this run holds fake secrets; tests/reliability/test_rel_security.py
   greps the store for them.

Plus, in its own working directory, a tracking server that is down at job start.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT, run_snakemake, write_config

SECRET = "kf-SECRET-value-7f3a9c1e"          # an environment variable a user happens to have
TOKEN = "kf-TOKEN-value-0b2d44e8"            # MLflow's own credential variable
SECRET_ENV = {"MY_SECRET": SECRET, "MLFLOW_TRACKING_TOKEN": TOKEN, "KRYFLOW_API_TOKEN": SECRET}

FAULT_CONFIG = {
    "experiment": "kryflow-faults",
    "datasets": {
        "keep": {
            "family": "darcy",
            "params": {"n": 16, "dim": 2, "coefficient": "binary", "relation": "drift"},
            "num_samples": 12, "seed": 0, "chunk_samples": 4, "splits": [0.5, 0.25, 0.25],
            "solver": {"method": "rcg", "preconditioner": "jacobi", "rtol": 1e-8, "recycle_dim": 4},
        },
        "slow": {  # long enough (many small chunks, one MLflow batch per sample) to be killed mid-write
            "family": "darcy",
            "params": {"n": 32, "dim": 2, "coefficient": "lognormal", "relation": "drift"},
            "num_samples": 80, "seed": 3, "chunk_samples": 2, "splits": [0.5, 0.25, 0.25],
            "solver": {"method": "cg", "preconditioner": "none", "rtol": 1e-8},
        },
    },
    "models": {"fno": {"width": 8, "modes": 4, "layers": 2}},
    "optimizers": {
        "adam": {"lr": 3e-3},
        "adamref": {"name": "adam", "lr": 3e-3},
        "sgddiv": {"name": "sgd", "lr": 1e6},
    },
    "seeds": [0],
    "training": {"batch_size": 2, "max_steps": 300, "eval_every": 100, "checkpoint_every": 5,
                 "device": "cpu"},
    "evaluation": {"targets": [0.9], "num_predictions": 1},
    "solver_benchmark": {"enabled": False},
}
# step 3 runs the grid on `keep` only (each train/evaluate job costs ~10-20 s of imports and logging)
FULL_CONFIG = copy.deepcopy(FAULT_CONFIG)
FULL_CONFIG["datasets"] = {"keep": FULL_CONFIG["datasets"]["keep"]}


# ------------------------------------------------------------------------------------ helpers
def _snakemake_cmd(workdir: Path, cfg: Path, *targets: str) -> list[str]:
    return [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(cfg), "--cores", "2", *targets]


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(extra or {})
    return env


def _session_pids(sid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    out.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return out


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the snakemake process group (snakemake and its jobs), then any straggler of its session."""
    sid = proc.pid
    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)
    for pid in _session_pids(sid):  # jobs that left the group but not the session
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_and_kill_when(workdir, cfg, targets, ready, timeout=240, env=None):
    """Start snakemake in its own session; kill -9 the session as soon as ready() holds.

    Returns (killed: bool, seconds until the kill, stdout+stderr text).
    """
    log = open(workdir / f"popen-{time.time_ns()}.log", "w+")
    proc = subprocess.Popen(_snakemake_cmd(workdir, cfg, *targets), cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT, env=_env(env), start_new_session=True)
    t0 = time.time()
    killed = False
    try:
        while time.time() - t0 < timeout:
            if ready():
                _kill_session(proc)
                killed = True
                break
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        else:
            _kill_session(proc)
    finally:
        if proc.poll() is None:
            _kill_session(proc)
    log.seek(0)
    return killed, time.time() - t0, log.read()


def _tree_state(path: Path) -> dict[str, tuple[int, str]]:
    """relative file -> (mtime_ns, sha256) for every file under path."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _ok(proc: subprocess.CompletedProcess, workdir: Path, what: str) -> None:
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log"))) \
            if (workdir / "logs").exists() else ""
        pytest.fail(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}\n{logs}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------- the sequence
@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """Runs the three faults in order; every test below reads what it recorded."""
    wd = tmp_path_factory.mktemp("faults")
    cfg = write_config(wd / "faults.yaml", FAULT_CONFIG)
    rec: dict = {"workdir": wd, "config": cfg}

    # -- 0. the dataset that must stay untouched
    _ok(run_snakemake(wd, cfg, "data/keep.zarr", timeout=300), wd, "generating data/keep.zarr")
    keep_before = _tree_state(wd / "data" / "keep.zarr")

    # -- 1. kill -9 during generation of data/slow.zarr
    data = wd / "data"
    killed, secs, text = _start_and_kill_when(
        wd, cfg, ["data/slow.zarr"],
        lambda: any(p.name.startswith("slow.zarr.tmp-") and (p / "zarr.json").exists() for p in data.iterdir()),
    )
    rec["gen_killed"] = killed
    rec["gen_kill_output"] = text
    rec["gen_after_kill"] = sorted(p.name for p in data.iterdir())
    rec["gen_tmp_after_kill"] = [data / n for n in rec["gen_after_kill"] if n.startswith("slow.zarr.tmp-")]
    from kryflow.data import DatasetError, open_dataset

    rec["gen_tmp_open_error"] = None
    for tmp in rec["gen_tmp_after_kill"]:
        try:
            open_dataset(tmp)
        except DatasetError as exc:
            rec["gen_tmp_open_error"] = str(exc)
    dry = run_snakemake(wd, cfg, "-n", "data/slow.zarr", timeout=300)
    rec["gen_dry_run"] = dry.stdout + dry.stderr
    rec["unlock"] = run_snakemake(wd, cfg, "--unlock", timeout=300)
    rerun = run_snakemake(wd, cfg, "data/slow.zarr", "data/keep.zarr", timeout=600)
    _ok(rerun, wd, "rerun after the kill during generation")
    rec["gen_rerun_output"] = rerun.stdout + rerun.stderr
    rec["keep_before"], rec["keep_after"] = keep_before, _tree_state(wd / "data" / "keep.zarr")
    rec["gen_leftovers"] = sorted(p.name for p in data.iterdir() if ".tmp-" in p.name)

    # -- 2. kill -9 while a training cell runs
    cell = wd / "results" / "runs" / "keep" / "fno" / "adam" / "0"
    killed, secs, text = _start_and_kill_when(
        wd, cfg, [str(cell.relative_to(wd) / "run.json")],
        lambda: (cell / "checkpoint.pt").exists() and not (cell / "model.pt").exists(),
    )
    time.sleep(0.1)
    rec["train_killed"] = killed and not (cell / "model.pt").exists()
    rec["train_kill_output"] = text
    if rec["train_killed"]:
        import torch

        rec["train_ckpt_step"] = torch.load(cell / "checkpoint.pt", weights_only=False)["state"]["step"]
    run_snakemake(wd, cfg, "--unlock", timeout=300)

    # -- 3. the whole grid (resumes the killed cell; a diverging cell; figures) with secrets around
    full_cfg = write_config(wd / "full.yaml", FULL_CONFIG)
    full = run_snakemake(wd, full_cfg, timeout=900, env=SECRET_ENV)
    _ok(full, wd, "full workflow after the kills")
    rec["full_output"] = full.stdout + full.stderr
    return rec


@pytest.mark.slow
def test_kill_during_generation_never_leaves_a_complete_looking_store(faults):
    assert faults["gen_killed"], "the generation finished before it could be killed:\n" + faults["gen_kill_output"][-2000:]
    assert "slow.zarr" not in faults["gen_after_kill"], faults["gen_after_kill"]
    assert faults["gen_tmp_after_kill"], "no temporary store was found after the kill"
    assert faults["gen_tmp_open_error"] and "temporary store" in faults["gen_tmp_open_error"]
    # snakemake plans to (re)generate it
    assert "generate_dataset" in faults["gen_dry_run"], faults["gen_dry_run"][-2000:]
    assert faults["unlock"].returncode == 0


@pytest.mark.slow
def test_rerun_regenerates_the_killed_store_and_touches_no_other(faults):
    from kryflow.data import open_dataset, verify_dataset

    wd = faults["workdir"]
    assert verify_dataset(wd / "data" / "slow.zarr") == []
    assert open_dataset(wd / "data" / "slow.zarr").sizes["sample"] == 80
    assert faults["keep_after"] == faults["keep_before"], "data/keep.zarr changed (mtimes or bytes)"
    assert "generate_dataset" in faults["gen_rerun_output"]


@pytest.mark.slow
def test_rerun_cleans_up_the_killed_writers_temporary_store(faults):
    assert faults["gen_leftovers"] == []


@pytest.mark.slow
def test_kill_during_training_resumes_and_equals_uninterrupted_run(faults):
    import torch

    if not faults["train_killed"]:
        pytest.skip("the training cell finished before it could be killed")
    wd = faults["workdir"]
    assert faults["train_ckpt_step"] > 0
    runs = wd / "results" / "runs" / "keep" / "fno"
    log = (wd / "logs" / "train" / "keep" / "fno" / "adam" / "0.log").read_text()
    assert "resumed from" in log and f"at step {faults['train_ckpt_step']}" in log, log[-3000:]
    got = torch.load(runs / "adam" / "0" / "model.pt", weights_only=False)["state_dict"]
    ref = torch.load(runs / "adamref" / "0" / "model.pt", weights_only=False)["state_dict"]
    assert got.keys() == ref.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref), "resumed model differs from the uninterrupted twin"
    m_got = json.loads((runs / "adam" / "0" / "metrics.json").read_text())
    m_ref = json.loads((runs / "adamref" / "0" / "metrics.json").read_text())
    for key in ("test_rel_l2_mean", "status", "steps"):
        if key in m_ref:
            assert m_got[key] == m_ref[key], (key, m_got[key], m_ref[key])


@pytest.mark.slow
def test_kill_and_rerun_leave_one_mlflow_run_per_job(faults):
    from mlflow.tracking import MlflowClient

    wd = faults["workdir"]
    client = MlflowClient(tracking_uri=f"sqlite:///{wd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(FAULT_CONFIG["experiment"])
    runs = client.search_runs([exp.experiment_id], max_results=500)
    keys = [r.data.tags.get("kryflow.key") for r in runs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    assert not dupes, f"duplicate MLflow runs after kill + rerun: {dupes}"
    by_key = {r.data.tags["kryflow.key"]: r for r in runs}
    assert by_key["generate/slow"].data.tags["status"] == "finished"
    assert by_key["train/keep/fno/adam/0"].data.tags["status"] == "finished"
    assert by_key["train/keep/fno/adam/0"].info.status == "FINISHED"


@pytest.mark.slow
def test_diverging_cell_is_recorded_and_the_grid_completes(faults):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    wd = faults["workdir"]
    summary = pd.read_csv(wd / "results" / "summary.csv")
    assert len(summary) == 1 * 1 * 3 * 1, summary
    status = {(r.dataset, r.optimizer): r.status for r in summary.itertuples()}
    assert status[("keep", "sgddiv")] == "diverged", status
    assert all(v == "finished" for (d, o), v in status.items() if o != "sgddiv"), status
    client = MlflowClient(tracking_uri=f"sqlite:///{wd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(FAULT_CONFIG["experiment"])
    for d in ("keep",):
        (run,) = client.search_runs([exp.experiment_id], f"tags.`kryflow.key` = 'train/{d}/fno/sgddiv/0'")
        assert run.data.tags["status"] == "diverged"
        assert "not finite" in run.data.tags.get("status_reason", "") or "exceeds" in run.data.tags.get("status_reason", "")
    # figures and tables exist, and the tables say "diverged" instead of leaving the cell out
    figs = sorted(p.name for p in (wd / "results" / "figures").glob("*.png"))
    assert any(n.startswith("test_error_") for n in figs) and any(n.startswith("val_error_") for n in figs), figs
    tables = "".join(p.read_text() for p in (wd / "results" / "tables").glob("*.md"))
    assert "sgddiv" in tables and ("diverged" in tables or "div." in tables), tables[:3000]


def _grep_tree(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p.relative_to(root)}: {n.decode()}" for n in needles if n in data]
    return hits


# --------------------------------------------- security: secrets in the environment of real jobs
@pytest.mark.slow
def test_environment_secrets_never_reach_the_store(faults):
    """The full grid ran with MY_SECRET, MLFLOW_TRACKING_TOKEN and KRYFLOW_API_TOKEN set (step 3 of the
    fixture); their values are nowhere in mlflow.db, the artifacts, results or logs."""
    wd = faults["workdir"]
    needles = [SECRET.encode(), TOKEN.encode()]
    hits = []
    for sub in ("mlflow.db", "mlartifacts", "results", "logs"):
        p = wd / sub
        if p.is_file():
            hits += [f"{sub}: {n.decode()}" for n in needles if n in p.read_bytes()]
        elif p.is_dir():
            hits += [f"{sub}/{h}" for h in _grep_tree(p, needles)]
    assert (wd / "mlflow.db").stat().st_size > 0 and any((wd / "mlartifacts").rglob("*"))
    assert hits == [], hits


@pytest.mark.slow
def test_no_param_or_tag_holds_a_secret_looking_key_or_value(faults):
    from mlflow.tracking import MlflowClient

    from kryflow.tracking import SECRET_MARKERS

    wd = faults["workdir"]
    client = MlflowClient(tracking_uri=f"sqlite:///{wd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(FAULT_CONFIG["experiment"])
    bad = []
    for run in client.search_runs([exp.experiment_id], max_results=500):
        for kind, items in (("param", run.data.params), ("tag", run.data.tags)):
            for k, v in items.items():
                if any(m in k.lower() for m in SECRET_MARKERS) or any(s in str(v) for s in (SECRET, TOKEN)):
                    bad.append(f"{run.data.tags.get('kryflow.key')}: {kind} {k}={v[:80]}")
    assert bad == [], bad


# ------------------------------------------------------------------ tracking server down
def test_tracking_server_down_fails_fast_before_any_job(tmp_path):
    cfg = copy.deepcopy(FAULT_CONFIG)
    cfg["datasets"] = {"keep": cfg["datasets"]["keep"]}
    cfgfile = write_config(tmp_path / "down.yaml", cfg)
    uri = f"http://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    proc = run_snakemake(tmp_path, cfgfile, timeout=300, env={"MLFLOW_TRACKING_URI": uri})
    seconds = time.perf_counter() - t0
    print(f"\nworkflow with tracking server down failed after {seconds:.1f} s (rc {proc.returncode})")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log")) if (tmp_path / "logs").exists() else ""
    assert "unreachable" in logs and uri in logs, logs[-3000:]
    assert "init_tracking" in text and "unreachable" in text, text[-3000:]  # on the console too
    assert not list(tmp_path.rglob("model.pt")) and not list(tmp_path.rglob("*.zarr")), "work ran with no tracking"
    assert seconds < 60, f"took {seconds:.1f} s to fail"
