"""benchmarks/optimizers.py on a tiny FNO: the fields the issue-5 targets are read from."""

import importlib.util
import json

import pytest
import torch

from conftest import ROOT


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("optimizer_benchmark", ROOT / "benchmarks" / "optimizers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_update_periods_follow_the_registry_defaults():
    bench = _benchmark_module()
    assert bench.update_period("adam") == 1
    assert bench.update_period("adahessian") == 5
    assert bench.update_period("kfac") == 100  # statistics every 20, inverses every 100


def test_peak_memory_counts_what_a_step_allocates():
    """Adam holds gradients and two moments beyond the parameters; zeroth-order with a kept buffer
    one direction; regenerating zeroth-order (MeZO) only one parameter-sized temporary at a time."""
    bench = _benchmark_module()
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(4)], torch.nn.Linear(64, 1))
    x = torch.randn(16, 64)

    def loss_of(m):
        return lambda: m(x).pow(2).mean()

    param_bytes = sum(p.numel() * 4 for p in model.parameters())
    adam, kind = bench.peak_step_memory("adam", model, loss_of, torch.device("cpu"))
    buffered, _ = bench.peak_step_memory("zo_spsa:directions=buffer", model, loss_of, torch.device("cpu"))
    regen, _ = bench.peak_step_memory("zo_spsa", model, loss_of, torch.device("cpu"))
    assert kind == "cpu_profiler_peak"
    assert adam >= 4 * param_bytes  # parameters, gradients, exp_avg, exp_avg_sq
    assert 2 * param_bytes <= buffered < adam  # parameters and the direction buffer
    assert regen < 1.5 * param_bytes < buffered  # one 64x64 temporary, not a copy of all five layers


def test_benchmark_writes_ratios_and_phases(tmp_path):
    torch.set_num_threads(1)
    bench = _benchmark_module()
    out = tmp_path / "optimizers.json"
    rc = bench.main(["--device", "cpu", "--models", "fno", "--optimizers", "adahessian", "kfac", "zo_spsa",
                     "zo_spsa:directions=buffer",
                     "--grid", "8", "--batch", "2", "--width", "4", "--modes", "2", "--layers", "1",
                     "--steps", "1", "--rounds", "1", "--warmup", "0", "--out", str(out)])
    assert rc == 0
    (res,) = json.loads(out.read_text())["models"]
    rows = res["optimizers"]
    assert set(rows) == {"adam", "adahessian", "kfac", "zo_spsa", "zo_spsa:directions=buffer"}
    for name in ("adahessian", "kfac", "zo_spsa", "zo_spsa:directions=buffer"):
        assert rows[name]["target_time_vs_adam"] > 0 and "meets_target" in rows[name]
        assert rows[name]["memory_kind"] == "cpu_profiler_peak" and rows[name]["memory_vs_adam"] > 0
    assert rows["adahessian"]["phase"] == "hessian" and rows["kfac"]["phase"] == "statistics"
    assert rows["kfac"]["steps_per_block"] == 100
    assert rows["adahessian"]["phase_step_seconds"] > rows["adahessian"]["plain_step_seconds"]
    assert res["forward_vs_adam"] == pytest.approx(res["forward_seconds"] / rows["adam"]["seconds_per_step"])
