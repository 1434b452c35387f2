"""Shared fixtures: the repository root, the tiny workflow config, and running real snakemake."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PEER_DATA = ROOT.parent / "shared" / "peer-data" / "neuraloperator-darcy"

TINY_CONFIG = {
    "experiment": "kryflow-tiny",
    "datasets": {
        "darcy": {
            "family": "darcy",
            "params": {"n": 16, "dim": 2, "coefficient": "binary", "relation": "drift"},
            "num_samples": 24,
            "seed": 0,
            "chunk_samples": 8,
            "splits": [0.5, 0.25, 0.25],
            "solver": {"method": "rcg", "preconditioner": "amg", "rtol": 1e-8, "recycle_dim": 4},
            "transfer": {"n": 32, "num_samples": 4},
        },
        "heat": {
            "family": "heat",
            "params": {"n": 16, "dim": 2, "num_steps": 3, "save_every": 1},
            "num_samples": 16,
            "seed": 1,
            "chunk_samples": 8,
            "splits": [0.5, 0.25, 0.25],
            "solver": {"method": "rcg", "preconditioner": "jacobi", "rtol": 1e-8, "recycle_dim": 4},
        },
    },
    "models": {"fno": {"width": 8, "modes": 4, "layers": 2}, "unet": {"width": 4, "depth": 1}},
    "optimizers": {"adam": {"lr": 3e-3}, "zo_spsa": {"lr": 1e-4}},
    "seeds": [0],
    "training": {"batch_size": 4, "max_steps": 12, "eval_every": 6, "checkpoint_every": 6},
    "evaluation": {"targets": [0.9, 0.5], "num_predictions": 2},
    "solver_benchmark": {"enabled": True, "num_samples": 4},
}


@pytest.fixture
def tiny_config() -> dict:
    return copy.deepcopy(TINY_CONFIG)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(workdir: Path, configfile: Path, *args: str, timeout: int = 900,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    """The real snakemake, on the repository's Snakefile, in a separate working directory."""
    cmd = [
        str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(configfile), "--cores", "2", *args,
    ]
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The real workflow on TINY_CONFIG, once per test session: (workdir, config, process)."""
    workdir = tmp_path_factory.mktemp("tiny")
    cfg = write_config(workdir / "tiny.yaml", TINY_CONFIG)
    proc = run_snakemake(workdir, cfg)
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
        ) if (workdir / "logs").exists() else ""
        pytest.fail(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}")
    return workdir, copy.deepcopy(TINY_CONFIG), proc


def tuning_config() -> dict:
    """TINY_CONFIG cut to one workload, the tuning protocol on: the reference (AdamW) and an SGD
    whose search space only diverges, 3 trials each, a fine-tuning workload and a held-out variant."""
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["experiment"] = "kryflow-tuning"
    cfg["datasets"] = {"darcy": {**cfg["datasets"]["darcy"], "solver": {"method": "auto"}}}
    cfg["datasets"]["darcy"].pop("transfer")
    cfg["datasets"]["darcy_shift"] = {**cfg["datasets"]["darcy"], "seed": 9,
                                      "params": {**cfg["datasets"]["darcy"]["params"], "contrast_high": 30.0}}
    cfg["datasets"]["darcy_hi"] = {**cfg["datasets"]["darcy"], "seed": 11,
                                   "params": {**cfg["datasets"]["darcy"]["params"], "contrast_high": 4.0}}
    cfg["models"] = {"fno": cfg["models"]["fno"]}
    cfg["optimizers"] = {"adamw": {"lr": 3e-3}, "sgdwild": {"name": "sgd", "lr": 0.1}}
    cfg["tuning"] = {"trials": 3, "batch": 3, "seed": 0, "space": {"sgdwild": {"lr": {"low": 1e5, "high": 1e6, "log": True}}},
                     "finetune": [{"dataset": "darcy_shift", "from": "darcy", "max_steps": 6}],
                     "heldout": [{"dataset": "darcy_hi", "of": "darcy"}]}
    cfg["solver_benchmark"] = {"enabled": False}
    return cfg


@pytest.fixture(scope="session")
def tuning_run(tmp_path_factory):
    """The real workflow with the tuning protocol on (:func:`tuning_config`), once per session."""
    workdir = tmp_path_factory.mktemp("tuning")
    cfg = tuning_config()
    proc = run_snakemake(workdir, write_config(workdir / "tune.yaml", cfg), timeout=1500)
    if proc.returncode != 0:
        pytest.fail(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return workdir, cfg, proc
