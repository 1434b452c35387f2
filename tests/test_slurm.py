"""The slurm profile (workflow/profiles/slurm) on a real, single-node SLURM cluster on localhost.

The cluster comes from tests/slurm/localcluster.py (Debian's slurm-wlm + munge, installed when
missing; daemons started here and stopped by pid in the fixture's finalizer, pass or fail). It has
no GPU and no accounting database, like a bare test cluster: the profile then asks squeue for job
states, and KRYFLOW_SLURM_GPUS=0 turns the training jobs' GPU request off.

    .venv/bin/python -m pytest tests/test_slurm.py -m slow -v        # a few minutes, root only

The bad-input messages are also checked without a cluster, against a stand-in `sbatch`.
"""

from __future__ import annotations

import copy
import glob
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, ROOT, TINY_CONFIG, write_config

sys.path.insert(0, str(Path(__file__).parent / "slurm"))
import localcluster  # noqa: E402

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
HAVE_PLUGIN = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
HAVE_POSTGRES = bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or shutil.which("initdb") is not None

needs_plugin = pytest.mark.skipif(
    not HAVE_PLUGIN,
    reason="snakemake-executor-plugin-slurm not installed (.venv/bin/pip install -e '.[slurm]')",
)


def _snakemake(workdir: Path, configfile: Path, *args: str, env: dict, timeout: int = 900):
    """snakemake with the slurm workflow profile; its own subprocess call (no --cores: the
    profile's jobs/local-cores apply)."""
    cmd = [
        str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(configfile), "--workflow-profile", str(PROFILE), *args,
    ]
    full_env = {k: v for k, v in os.environ.items()
                if k != "MLFLOW_TRACKING_URI" and not k.startswith(("KRYFLOW_SLURM_", "SBATCH_"))}
    full_env.update(env)
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=full_env)


def _slurm_config() -> dict:
    """TINY_CONFIG cut to one dataset, one model, two optimizers, one seed."""
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["experiment"] = "kryflow-slurm"
    cfg["datasets"] = {"darcy": cfg["datasets"]["darcy"]}
    cfg["datasets"]["darcy"].pop("transfer")
    cfg["models"] = {"fno": cfg["models"]["fno"]}
    cfg["optimizers"] = {k: cfg["optimizers"][k] for k in ("adam", "zo_spsa")}
    cfg["seeds"] = [0]
    return cfg


def _submissions(out: str) -> list[tuple[str, str, str]]:
    """(rule, SLURM job id, log) of every Snakemake job the run submitted: alone (``<id>``) or as a
    task of an array (``<id>_<task>``)."""
    rule_of, rule = {}, None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line) or re.match(r"^\s+jobid: (\d+)$", line)
        if m and line.lstrip().startswith("jobid"):
            rule_of[m.group(1)] = rule
        elif m:
            rule = m.group(1)
    jobs = [(rule_of.get(j, "?"), sid, log) for j, sid, log in
            re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", out)]
    for ids, sid, first, last in re.findall(r"Submitted array job with Snakemake IDs ([\d,]+) and SLURM job ID "
                                            r"(\d+)\. The individual task IDs are (\d+)-(\d+)", out):
        for task, j in zip(range(int(first), int(last) + 1), ids.split(",")):
            jobs.append((rule_of.get(j, "?"), f"{sid}_{task}", ""))
    return jobs


# --------------------------------------------------------------------------- the real cluster

@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster runs munged/slurmctld/slurmd as root; not root here")
    root = Path(tempfile.mkdtemp(prefix="kryflow-slurm-"))
    try:
        c = localcluster.start(root)
    except localcluster.ClusterUnavailable as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"no local SLURM cluster: {e}")
    try:
        yield c
    finally:
        c.stop()
        left = [f"{n}={p}" for n, p in c.pids.items() if localcluster._alive(p)]
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"daemons still running after stop: {left}"


@pytest.fixture(scope="module")
def tracking(cluster, tmp_path_factory):
    """The MLflow server the jobs report to, named by host name as on a cluster; sqlite in the
    shared working directory when PostgreSQL is not installed (one node shares its filesystem)."""
    if not HAVE_POSTGRES:
        yield None
        return
    from kryflow.tracking import start_server, stop_server

    host = socket.gethostname()
    state = Path(tempfile.mkdtemp(prefix="kryflow-slurm-mlflow-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # bound to the address the host name resolves to (README: --host 0.0.0.0 on a login node)
    start_server(state, host=socket.gethostbyname(host), port=port, allowed_hosts=f"{host}:*")
    try:
        yield f"http://{host}:{port}"
    finally:
        stop_server(state)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
@needs_plugin
def test_tiny_workflow_runs_through_slurm(cluster, tracking, tmp_path):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    cfg = _slurm_config()
    # the tuning protocol, 2 trials a workload and optimizer in batches of 1: the batches that are
    # ready together go to SLURM as one job array
    cfg["tuning"] = {"trials": 2, "batch": 1, "reference": "adam"}
    configfile = write_config(tmp_path / "slurm.yaml", cfg)
    env = {**cluster.env, "KRYFLOW_SLURM_GPUS": "0"}
    if tracking:
        env["MLFLOW_TRACKING_URI"] = tracking
    proc = _snakemake(tmp_path, configfile, "--slurm-keep-successful-logs",
                      "--slurm-init-seconds-before-status-checks", "5", env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{out[-6000:]}\n{cluster.log_tail()}"
    # the status command was chosen for a cluster without accounting
    assert "status command is not 'sacct'" not in out

    # every non-local job was submitted to SLURM and completed there; the trial batches as arrays
    submitted = _submissions(out)
    rules = sorted(rule for rule, _, _ in submitted)
    assert rules == sorted(["evaluate", "evaluate", "generate_dataset", "solver_benchmark", *["tune_batch"] * 4,
                            "train", "train"]), (submitted, out[-4000:])
    arrays = [sid for rule, sid, _ in submitted if rule == "tune_batch" and "_" in sid]
    assert len(arrays) == 4 and len({a.split("_")[0] for a in arrays}) == 2, submitted  # 2 arrays of 2 tasks
    sq = subprocess.run(["squeue", "-t", "all", "-h", "-o", "%i %T"], env={**os.environ, **cluster.env},
                        capture_output=True, text=True, check=True).stdout
    states = dict(line.split() for line in sq.splitlines())
    for _, slurm_id, log in submitted:
        assert states.get(slurm_id) == "COMPLETED", (slurm_id, sq)
        if log:  # the job's own log: snakemake ran the rule inside the allocation
            text = Path(log).read_text()
            assert re.search(r"Finished jobid: 0|Finished job 0", text), text[-2000:]
    print("\n".join(line for line in out.splitlines() if "SLURM job" in line))
    print(sq)

    # outputs
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert len(summary) == 2 and set(summary["optimizer"]) == {"adam", "zo_spsa"}
    assert set(summary["status"]) <= {"finished", "diverged"}
    assert (tmp_path / "results" / "solvers" / "darcy.json").exists()
    assert list((tmp_path / "results" / "figures").glob("*.png"))
    for opt in ("adam", "zo_spsa"):
        cell = tmp_path / "results" / "runs" / "darcy" / "fno" / opt / "0"
        for name in ("run.json", "model.pt", "history.csv", "metrics.json"):
            assert (cell / name).exists(), cell / name

    # MLflow: one finished run per dataset generation, solver benchmark and cell (with evaluation)
    info = json.loads((tmp_path / "results" / "tracking.json").read_text())
    if tracking:
        assert info["uri"] == tracking
        assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=info["uri"])
    exp = client.get_experiment_by_name(cfg["experiment"])
    runs = client.search_runs([exp.experiment_id], max_results=100)
    keys = sorted(r.data.tags.get("kryflow.key", "") for r in runs)
    # (+ the figures' and the tuning report's runs, logged on the login node, and the runs that
    # group the protocol's: workload, optimizers, studies)
    assert [k for k in keys if k.split("/")[0] in ("generate", "solver_benchmark", "train")] == [
        "generate/darcy", "solver_benchmark/darcy", "train/darcy/fno/adam/0", "train/darcy/fno/zo_spsa/0"], keys
    assert [k for k in keys if "/trial" in k] == [f"tune/darcy/fno/{o}/trial{t}" for o in ("adam", "zo_spsa")
                                                  for t in range(2)], keys
    for r in runs:
        assert r.info.status == "FINISHED", (r.data.tags.get("kryflow.key"), r.info.status)
        if r.data.tags["kryflow.key"].startswith("train/"):
            assert "test_rel_l2_mean" in r.data.metrics  # logged by the evaluate job


@pytest.mark.slow
@needs_plugin
def test_shards_are_separate_slurm_jobs(cluster, tmp_path):
    """A sharded dataset: one SLURM job per shard, then the merge job, into one verified store."""
    from kryflow.data import verify_dataset

    cfg = _slurm_config()
    cfg["datasets"]["darcy"].update({"shards": 3, "solver": {"method": "direct"}})
    configfile = write_config(tmp_path / "slurm.yaml", cfg)
    env = {**cluster.env, "KRYFLOW_SLURM_GPUS": "0"}
    proc = _snakemake(tmp_path, configfile, "data/darcy.zarr", "--slurm-init-seconds-before-status-checks", "5",
                      env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{out[-6000:]}\n{cluster.log_tail()}"
    submitted = _submissions(out)
    rules = sorted(rule for rule, _, _ in submitted)
    assert rules == ["generate_shard"] * 3 + ["merge_dataset"], out[-4000:]
    # each shard its own SLURM task (the three of one array, ready together), the merge its own job
    assert len({slurm_id for _, slurm_id, _ in submitted}) == 4
    shards = [sid for rule, sid, _ in submitted if rule == "generate_shard"]
    assert all("_" in sid for sid in shards) and len({sid.split("_")[0] for sid in shards}) == 1, submitted
    assert verify_dataset(tmp_path / "data" / "darcy.zarr") == []


@pytest.mark.slow
@needs_plugin
def test_gpu_request_on_gpu_less_cluster_names_the_setting(cluster, tmp_path):
    configfile = write_config(tmp_path / "slurm.yaml", _slurm_config())
    # KRYFLOW_SLURM_GPUS unset: one GPU per training job, which this cluster does not have
    proc = _snakemake(tmp_path, configfile, env=cluster.env, timeout=120)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Invalid generic resource" in err and "KRYFLOW_SLURM_GPUS=0" in err
    assert "KRYFLOW_SLURM_GPU_PARTITION" in err
    assert "submitted with SLURM jobid" not in err and not (tmp_path / "results").exists()


@pytest.mark.slow
@needs_plugin
def test_unknown_partition_names_the_setting(cluster, tmp_path):
    configfile = write_config(tmp_path / "slurm.yaml", _slurm_config())
    proc = _snakemake(tmp_path, configfile, env={**cluster.env, "KRYFLOW_SLURM_GPUS": "0",
                                                 "KRYFLOW_SLURM_PARTITION": "nosuchpartition"}, timeout=120)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "KRYFLOW_SLURM_PARTITION=<partition>" in err, err[-3000:]
    assert "submitted with SLURM jobid" not in err


# --------------------------------------------------------------- bad input without a cluster

def _fake_sbatch(tmp_path: Path, message: str) -> dict:
    """A stand-in `sbatch` that refuses every request with SLURM's own message."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name in ("sbatch", "squeue", "sinfo"):
        script = bindir / name
        script.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n" if name == "sbatch" else "#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ.get('PATH', '')}"}


@needs_plugin
def test_missing_account_names_the_setting(tmp_path):
    env = _fake_sbatch(tmp_path, "sbatch: error: Batch job submission failed: "
                                 "Invalid account or account/partition combination specified")
    configfile = write_config(tmp_path / "slurm.yaml", _slurm_config())
    proc = _snakemake(tmp_path, configfile, env={**env, "KRYFLOW_SLURM_GPUS": "0"}, timeout=120)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "export KRYFLOW_SLURM_ACCOUNT=<account>" in err and "slurm_account" in err, err[-3000:]
    # with an account given, the message says that one is not valid
    proc = _snakemake(tmp_path, configfile, env={**env, "KRYFLOW_SLURM_GPUS": "0",
                                                 "KRYFLOW_SLURM_ACCOUNT": "nosuchaccount"}, timeout=120)
    assert "'nosuchaccount' (KRYFLOW_SLURM_ACCOUNT) is not valid" in proc.stdout + proc.stderr


def test_missing_plugin_names_the_package(tmp_path):
    # hide the plugin from this interpreter, as on an environment without it
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import importlib.util, pkgutil\n"
        "_iter, _find = pkgutil.iter_modules, importlib.util.find_spec\n"
        "pkgutil.iter_modules = lambda *a, **k: (m for m in _iter(*a, **k)"
        " if not m.name.startswith('snakemake_executor_plugin_slurm'))\n"
        "importlib.util.find_spec = lambda n, *a, **k: None if n.startswith("
        "'snakemake_executor_plugin_slurm') else _find(n, *a, **k)\n"
    )
    configfile = write_config(tmp_path / "slurm.yaml", _slurm_config())
    proc = _snakemake(tmp_path, configfile, "-n", env={"PYTHONPATH": str(hide), "KRYFLOW_SLURM_GPUS": "0"},
                      timeout=120)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "executor: slurm" in err and "pip install -e '.[slurm]'" in err, err[-3000:]


@needs_plugin
def test_profile_takes_site_settings_from_the_environment(tmp_path):
    """Dry run: nothing site-specific is in the profile; the environment fills it in."""
    configfile = write_config(tmp_path / "slurm.yaml", _slurm_config())
    env = {"KRYFLOW_SLURM_ACCOUNT": "proj1", "KRYFLOW_SLURM_PARTITION": "cpu",
           "KRYFLOW_SLURM_GPU_PARTITION": "gpu", "KRYFLOW_SLURM_GPU_MODEL": "a100"}
    proc = _snakemake(tmp_path, configfile, "-n", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = {m.group(1): m.group(2) for m in re.finditer(r"\nrule (\w+):\n(.*?)\n\n", proc.stdout + "\n\n", re.S)}
    train = blocks["train"]
    assert "gpu=1" in train and "gpu_model=a100" in train and "slurm_partition=gpu" in train
    assert "slurm_account=proj1" in train
    gen = blocks["generate_dataset"]
    assert "slurm_partition=cpu" in gen and "slurm_account=proj1" in gen and "gpu=" not in gen
    # without the variables: no partition/account at all (the plugin picks the cluster's default)
    proc = _snakemake(tmp_path, configfile, "-n", env={}, timeout=120)
    assert proc.returncode == 0 and "slurm_partition" not in proc.stdout and "slurm_account" not in proc.stdout
