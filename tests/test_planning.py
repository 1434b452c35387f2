"""kryflow plan: jobs from Snakemake's own dry run, trials and steps from the config, hours from
measured step costs and the GPU roofline model."""

from __future__ import annotations

import copy
import json
import math
import subprocess

import pytest

from conftest import BIN, ROOT, tuning_config, write_config


def test_the_gpu_model_counts_a_matmul_as_it_is():
    import torch

    from kryflow.planning import GPU_PROFILES, count_step, model_step_seconds

    a, b = torch.randn(64, 32), torch.randn(32, 16)
    counts = count_step(lambda: a @ b)
    assert counts["kernels"] == 1
    assert counts["flops"] == 2 * 64 * 32 * 16
    assert counts["bytes"] == 4 * (64 * 32 + 32 * 16 + 64 * 16)
    h100 = GPU_PROFILES["h100"]
    # a matmul this small costs the launch; a large one its arithmetic or traffic
    assert model_step_seconds(counts["ops"], h100) == pytest.approx(h100["launch"])
    big = [[2e12, 1e9]]
    assert model_step_seconds(big, h100) == pytest.approx(2e12 / h100["flops"])
    # views launch nothing
    assert count_step(lambda: a.view(-1).t() if a.dim() == 1 else a.t().unsqueeze(0))["kernels"] == 0


def test_a_large_step_is_counted_from_two_small_batches_exactly(monkeypatch):
    """Kernels, FLOPs and bytes are linear in the batch: extrapolated from batches 1 and 2 they are
    what the step at the full batch counts (the GPU model's input); times are extrapolated too."""
    from kryflow.planning import GPU_PROFILES, _costs, measure_step

    args = ({"name": "fno", "width": 4, "modes": 4, "layers": 2}, {"name": "adamw", "lr": 1e-3}, (16, 16), (1, 1), 6)
    monkeypatch.setattr(_costs, "DIRECT_LIMIT", 10**9)
    direct = measure_step(*args, warmup=1, steps=1, gpus=GPU_PROFILES)
    monkeypatch.setattr(_costs, "DIRECT_LIMIT", 0)
    extrapolated = measure_step(*args, gpus=GPU_PROFILES)
    assert direct["extrapolated_from"] is None and extrapolated["extrapolated_from"] == [1, 2]
    for key in ("kernels", "flops", "bytes"):
        assert extrapolated[key] == pytest.approx(direct[key], rel=1e-9), key
    for gpu in GPU_PROFILES:
        assert extrapolated["gpu_seconds_per_step"][gpu] == pytest.approx(direct["gpu_seconds_per_step"][gpu])
    assert extrapolated["seconds_per_step"] > 0 and extrapolated["cpu_seconds_scaled_by"] == "flops"


def test_small_batch_times_scale_with_the_step_flops_whatever_their_noise():
    """Batch 2 timed faster than batch 1 (noise) must not extrapolate to nothing: the larger
    batch's time scales by the FLOPs of the full step against its own."""
    from kryflow.planning._costs import _extrapolate

    def rec(seconds, batch):
        return {"seconds": seconds, "first": seconds, "forward": seconds / 3, "grad_evals": 1.0, "parameters": 10,
                "ops": [[10.0, 1.0, 1.0], [100.0 * batch, 8.0 * batch, 1.0]],
                "forward_ops": [[50.0 * batch, 4.0 * batch, 1.0]]}

    got = _extrapolate(rec(1.0, 1), rec(0.9, 2), 1, 2, 32)
    assert got["ops"] == [[10.0, 1.0, 1.0], [3200.0, 256.0, 1.0]]
    assert got["seconds"] == pytest.approx(0.9 * 3210 / 210) and got["forward"] == pytest.approx(0.3 * 16)


def _plan_config(tmp_path):
    cfg = tuning_config()
    cfg["optimizers"]["zo"] = {"name": "zo_spsa", "lr": 1e-4}
    cfg["tuning"] = {"trials": 3, "batch": 2, "seed": 0}
    cfg["datasets"] = {"darcy": cfg["datasets"]["darcy"]}
    return cfg, write_config(tmp_path / "plan.yaml", cfg)


def test_plan_prices_every_run_of_the_config(tmp_path):
    from kryflow.config import check_config
    from kryflow.planning import CostTable, plan_workflow

    cfg, path = _plan_config(tmp_path)
    check_config(cfg)
    table = CostTable(tmp_path / "costs.json")
    plan = plan_workflow(cfg, path, table=table, log=lambda *_: None)
    # the jobs are Snakemake's: 3 optimizers x 2 batches (3 trials in batches of 2), 1 seed
    assert plan["jobs"]["tune_batch"] == 6 and plan["jobs"]["train"] == 3 and plan["jobs"]["evaluate"] == 3
    assert plan["jobs_total"] == sum(plan["jobs"].values())
    assert plan["trials"] == 9 and plan["workloads"] == 1 and plan["optimizers"] == 3
    steps = cfg["training"]["max_steps"]
    # zeroth order trains on the reference's gradient evaluations: 1.5 steps per evaluation
    zo = int(1.5 * 1.0 * steps) + 1
    assert plan["steps"]["trial"] == 3 * (steps + steps + zo)
    assert plan["steps"]["rerun"] == steps + steps + zo
    for unit in ("gpu", "cpu_training", "cpu"):
        assert 0 < plan["hours"][unit]["total"] < 1 and math.isfinite(plan["hours"][unit]["total"])
    # no optimizer can cost more than budget_factor x the reference's run (plus its fixed costs)
    assert plan["missing"] == []
    # a second plan takes every cost from the table; without it, nothing is made up
    again = plan_workflow(cfg, path, table=CostTable(tmp_path / "costs.json"), measure=False, jobs=plan["jobs"])
    assert again["hours"] == plan["hours"]
    empty = plan_workflow(cfg, path, table=CostTable(None), measure=False, jobs=plan["jobs"])
    assert any("fno/adamw" in m for m in empty["missing"]) and any("generation darcy" in m for m in empty["missing"])
    # a step recorded at other channels prices the same model, optimizer, grid and batch (and says
    # so); --exact-channels does not take it
    moved = CostTable(None)
    for key, rec in table.entries.items():
        k = json.loads(key)
        if "channels" in k:
            k["channels"] = [k["channels"][0] + 2, k["channels"][1]]
        moved.put(json.dumps(k, sort_keys=True), rec)
    reused = plan_workflow(cfg, path, table=moved, measure=False, jobs=plan["jobs"])
    assert reused["hours"]["gpu"] == plan["hours"]["gpu"] and reused["missing"] == plan["missing"] == []
    assert any(r.startswith("fno/adamw") for r in reused["reused_other_channels"])
    exact = plan_workflow(cfg, path, table=moved, measure=False, jobs=plan["jobs"], exact_channels=True)
    assert any("fno/adamw" in m for m in exact["missing"]) and exact["reused_other_channels"] == []


@pytest.mark.slow
def test_plan_command_prints_the_cost_before_anything_runs(tmp_path):
    cfg, path = _plan_config(tmp_path)
    proc = subprocess.run([str(BIN / "kryflow"), "plan", str(path), "--costs", str(tmp_path / "c.json"),
                           "--json", str(tmp_path / "plan.json")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "jobs          " in out and "tune_batch 6" in out and "trials        9" in out
    assert "GPU-hours (modelled on h100" in out and "CPU-core-hours" in out
    assert not (tmp_path / "results" / "runs").exists() and not (tmp_path / "data").exists()
    bad = copy.deepcopy(cfg)
    bad["tuning"]["batch"] = 0
    proc = subprocess.run([str(BIN / "kryflow"), "plan", str(write_config(tmp_path / "bad.yaml", bad))],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "tuning.batch" in proc.stderr
    assert ROOT.exists()
