"""A workflow's plan, priced before anything is submitted: its jobs (Snakemake's own dry run),
trials, training steps, and CPU- and GPU-hours from measured costs.

Time per training run is bounded from above, as the tuning protocol bounds it: the reference
trains its steps; every other optimizer stops at its steps or at ``budget_factor`` times the
reference's time to target, which is at most the reference's whole run (zeroth order: the
reference's gradient evaluations); ``training.max_seconds`` caps all. The hours are therefore
what the plan can cost at most, not a guess of what it will.
"""

from __future__ import annotations

import json

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._costs import CostTable, device_name, generation_key, measure_generation, measure_step, step_key
from ._gpu import GPU_PROFILES

__all__ = ["plan_workflow", "snakemake_jobs", "format_plan", "JOB_SECONDS", "TRIAL_SECONDS", "GPU_RULES"]

#: Seconds a workflow job spends outside its work (interpreter, imports, tracking store), and a
#: trial inside a batch outside its steps (its run, files, model). Measured on the 2-core
#: development machine (benchmarks/README.md, "Trials in batches"); per job on a GPU node too.
JOB_SECONDS = 9.0
TRIAL_SECONDS = 1.5
#: Rules the SLURM profile sends to GPU nodes.
GPU_RULES = ("tune_batch", "train", "evaluate", "tuning_variant")


def snakemake_jobs(config_path: str | Path, snakefile: str | Path | None = None, timeout: int = 600) -> dict[str, int]:
    """Jobs per rule of the whole workflow for ``config_path`` (``snakemake -n --forceall``: every
    job, whatever exists already), from Snakemake's own job table."""
    root = Path(__file__).resolve().parents[3]
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe) if exe.exists() else "snakemake", "-n", "--forceall", "--quiet", "rules",
           "--snakefile", str(snakefile or root / "Snakefile"), "--configfile", str(config_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n failed for {config_path}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    text = proc.stdout + proc.stderr
    table = text[text.index("Job stats:"):] if "Job stats:" in text else ""
    counts: dict[str, int] = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if not m:
            if counts:
                break
            continue
        if m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def _shape(config: Mapping, dataset: str) -> dict:
    """Grid, channels and split sizes of a configured dataset, from its family."""
    from kryflow.config import dataset_spec
    from kryflow.pdes import build_family, family_parameters

    spec = dataset_spec(config, dataset)
    if "source" in spec:
        raise ValueError(f"dataset '{dataset}' is imported; its cost is not planned (the plan prices generated data)")
    params = {**family_parameters(spec["family"]), **(spec.get("params") or {})}
    fam = build_family(spec["family"], **(spec.get("params") or {}))
    n = int(spec["num_samples"])
    fr = spec.get("splits", [0.75, 0.125, 0.125])
    fr = [0.0, 0.0, 1.0] if fr == "test" else fr
    return {"grid": (int(params["n"]),) * int(params["dim"]), "channels": (len(fam.inputs), len(fam.targets)),
            "train": int(round(fr[0] * n)), "val": max(1, int(round(fr[1] * n))), "test": max(1, int(round(fr[2] * n))),
            "samples": n}


class _Pricer:
    """Step and sample costs, looked up in the table or measured (and then kept)."""

    def __init__(self, table: CostTable, measure: bool, device: str, log=print, exact_channels: bool = False):
        self.table, self.measure, self.device, self.log = table, measure, device, log
        self.exact_channels = exact_channels
        self.dev_name = device_name(device)
        self.missing: list[str] = []
        self.reused: set[str] = set()
        self.linear_cpu: set[str] = set()

    def _other_channels(self, model: Mapping, optimizer: Mapping, shape: Mapping, batch: int) -> dict | None:
        """A step recorded with the same model, optimizer, grid, batch and device at other (input,
        output) channels: only the lifting and projection layers differ (a few of the step's kernels)."""
        want = json.loads(step_key(model, optimizer, shape["grid"], shape["channels"], batch, self.dev_name))
        for key, rec in self.table.entries.items():
            have = json.loads(key)
            if "channels" in have and {**have, "channels": want["channels"]} == want:
                return rec
        return None

    def step(self, model: Mapping, optimizer: Mapping, shape: Mapping, batch: int) -> dict | None:
        key = step_key(model, optimizer, shape["grid"], shape["channels"], batch, self.dev_name)
        rec = self.table.get(key)
        if rec is None and not self.exact_channels:
            rec = self._other_channels(model, optimizer, shape, batch)
            if rec is not None:
                self.reused.add(f"{model['name']}/{optimizer['name']} {tuple(shape['grid'])} {tuple(shape['channels'])}")
        if rec is None and self.measure:
            self.log(f"  measuring a step of {model['name']} / {optimizer['name']} on {shape['grid']}, batch {batch} ...")
            rec = measure_step(model, optimizer, shape["grid"], shape["channels"], batch, device=self.device,
                               gpus=GPU_PROFILES)
            self.table.put(key, rec)
        if rec is None:
            self.missing.append(f"{model['name']}/{optimizer['name']} {shape['grid']} batch {batch}")
        elif rec.get("extrapolated_from") and rec.get("cpu_seconds_scaled_by") != "flops":
            # CPU times an earlier kryflow extrapolated along a line through batches 1 and 2
            self.linear_cpu.add(f"{model['name']}/{optimizer['name']} {tuple(shape['grid'])} batch {batch}")
        return rec

    def sample(self, spec: Mapping) -> dict | None:
        solver = spec.get("solver") or {}
        key = generation_key(spec["family"], spec.get("params") or {}, solver, device_name("cpu"))
        rec = self.table.get(key)
        if rec is None and self.measure:
            self.log(f"  measuring generation of {spec['family']} {spec.get('params') or {}} ...")
            rec = measure_generation(spec["family"], spec.get("params") or {}, solver)
            self.table.put(key, rec)
        if rec is None:
            self.missing.append(f"generation {spec['family']} {spec.get('params') or {}}")
        return rec


def _run_seconds(steps: float, step: Mapping, shape: Mapping, eval_every: int, gpu: str | None) -> float:
    """Seconds of one training run: its steps and its validation passes."""
    per_step = step["gpu_seconds_per_step"][gpu] if gpu else step["seconds_per_step"]
    fwd = step["gpu_forward_seconds_per_sample"][gpu] if gpu else step["forward_seconds_per_sample"]
    return steps * per_step + (steps / max(1, eval_every)) * shape["val"] * fwd


def _training_runs(config: Mapping) -> list[dict]:
    """Every training run the workflow makes: trials, reruns and variants, with their workload,
    optimizer label and kind."""
    from kryflow.config import batch_cells, batch_trials, grid_datasets, training_cells, variant_cells

    tuning = config.get("tuning")
    runs = []
    if tuning:
        runs += [{"kind": "trial", "dataset": d, "source": d, "model": m, "optimizer": o}
                 for d, m, o, b in batch_cells(config) for _ in batch_trials(tuning, b)]
    runs += [{"kind": "rerun" if tuning else "train", "dataset": d, "source": d, "model": m, "optimizer": o}
             for d, m, o, _ in training_cells(config)]
    for kind, role in (("heldout", "of"), ("finetune", "from")):
        entries = {v["dataset"]: v for v in (tuning or {}).get(kind) or []}
        runs += [{"kind": kind, "dataset": d, "source": entries[d][role], "model": m, "optimizer": o,
                  "max_steps": entries[d].get("max_steps")} for d, m, o, _ in variant_cells(config, kind)]
    assert all(r["source"] in grid_datasets(config) for r in runs)
    return runs


def plan_workflow(config: Mapping, config_path: str | Path | None = None, *, table: CostTable, measure: bool = True,
                  device: str = "cpu", gpu: str = "h100", jobs: Mapping[str, int] | None = None, log=print,
                  exact_channels: bool = False) -> dict:
    """Price a checked config (:func:`kryflow.config.load_config`).

    **Arguments:**
        config_path: the config file, for Snakemake's dry run (``jobs`` given instead skips it).
        table: measured costs (read, and extended where ``measure``).
        device: where steps are measured (``cpu`` here; ``cuda`` on a GPU node).
        gpu: the :data:`GPU_PROFILES` entry GPU-hours are modelled on, when ``device`` is not a GPU.
        exact_channels: measure every (input, output) channel count; otherwise a step recorded at
            other channels with everything else equal prices it (``reused_other_channels``).

    **Returns:** a JSON-ready dict: ``jobs`` per rule, ``trials``, ``steps`` per kind of run,
    ``hours`` (``gpu``: the GPU jobs on one GPU each; ``cpu_training``: the same jobs on one CPU
    core of this machine, measured; ``cpu``: generation and solver benchmarks), the cost table
    used per (model, optimizer, grid), and ``missing`` (costs neither recorded nor measured).
    """
    from kryflow.config import grid_datasets

    if jobs is None:
        jobs = snakemake_jobs(config_path)
    pricer = _Pricer(table, measure, device, log, exact_channels)
    measured_gpu = device.startswith("cuda")
    tuning = config.get("tuning") or {}
    seconds, steps_by_kind, per_cost = _training_seconds(config, pricer, None if measured_gpu else gpu)
    # the GPU rules' jobs start a process and open the store once each
    gpu_jobs = sum(jobs.get(r, 0) for r in GPU_RULES)
    for unit in seconds:
        seconds[unit]["job_starts"] += gpu_jobs * JOB_SECONDS
    cpu = _cpu_job_seconds(config, pricer)
    cpu["job_starts"] += sum(n for r, n in jobs.items() if r not in GPU_RULES and r != "all") * JOB_SECONDS
    trials = sum(1 for r in _training_runs(config) if r["kind"] == "trial")
    hours = {unit: {k: v / 3600 for k, v in c.items()} | {"total": sum(c.values()) / 3600}
             for unit, c in (*seconds.items(), ("cpu", cpu))}
    return {"config": str(config_path) if config_path else None, "jobs": dict(jobs),
            "jobs_total": sum(n for r, n in jobs.items()), "trials": trials,
            "trials_per_study": int(tuning["trials"]) // int(tuning.get("studies", 1)) if tuning else 0,
            "studies": int(tuning.get("studies", 1)) if tuning else 0,
            "workloads": len(grid_datasets(config)) * len(config["models"]), "optimizers": len(config["optimizers"]),
            "steps": dict(steps_by_kind) | {"total": sum(steps_by_kind.values())}, "hours": hours,
            "measured_on": pricer.dev_name,
            "gpu_model": None if measured_gpu else {"profile": gpu, **GPU_PROFILES[gpu]},
            "job_seconds": JOB_SECONDS, "trial_seconds": TRIAL_SECONDS, "costs": per_cost,
            "missing": sorted(set(pricer.missing)), "reused_other_channels": sorted(pricer.reused),
            "cpu_times_extrapolated_linearly": sorted(pricer.linear_cpu)}


def _training_seconds(config: Mapping, pricer: _Pricer, gpu: str | None) -> tuple[dict, Counter, dict]:
    """Seconds of every training run (trials, reruns, variants) per kind, on one CPU core
    (``cpu_training``) and on one GPU (``gpu``: modelled on profile ``gpu``, or measured where
    None), each bounded as the budget rule bounds it; the steps per kind; the step costs used."""
    from kryflow.config import cell_spec, cell_training
    from kryflow.optim import OPTIMIZERS

    tuning = config.get("tuning") or {}
    reference = tuning.get("reference")
    factor = float(tuning.get("budget_factor", 4 / 3))
    shapes = {d: _shape(config, d) for d in {*config["datasets"]} if "source" not in config["datasets"][d]}
    steps_by_kind: Counter = Counter()
    seconds = {"cpu_training": Counter(), "gpu": Counter()}
    per_cost: dict[str, dict] = {}
    for run in _training_runs(config):
        d, m, o = run["dataset"], run["model"], run["optimizer"]
        if d not in shapes:
            continue
        train = cell_training(config, run["source"])
        spec = cell_spec(config, m, o)
        batch = int(train.get("batch_size", 8))
        eval_every = int(train.get("eval_every", 25))
        steps = int(run.get("max_steps") or train["max_steps"])
        step = pricer.step(spec["model"], spec["optimizer"], shapes[d], batch)
        if step is None:
            continue
        step = {**step, "batch": batch}
        per_cost[f"{m}/{o}/{'x'.join(map(str, shapes[d]['grid']))}/b{batch}"] = {
            "seconds_per_step": step["seconds_per_step"], "gpu_seconds_per_step": step["gpu_seconds_per_step"],
            "flops": step["flops"], "bytes": step["bytes"], "kernels": step["kernels"], "device": step["device"]}
        ref = pricer.step(spec["model"], cell_spec(config, m, reference)["optimizer"], shapes[d], batch) \
            if reference and o != reference and run["kind"] != "finetune" else None
        zeroth = OPTIMIZERS[spec["optimizer"]["name"]].family == "zeroth_order"
        if ref is not None and zeroth:
            steps = int(1.5 * ref["grad_evals_per_step"] * steps) + 1
        for unit, gpu_name in (("cpu_training", None), ("gpu", gpu)):
            t = _run_seconds(steps, step, shapes[d], eval_every, gpu_name)
            if ref is not None and not zeroth:
                t = min(t, factor * _run_seconds(steps, {**ref, "batch": batch}, shapes[d], eval_every, gpu_name))
            if train.get("max_seconds"):
                t = min(t, float(train["max_seconds"]))
            seconds[unit][run["kind"]] += t + (TRIAL_SECONDS if run["kind"] == "trial" else 0.0)
        steps_by_kind[run["kind"]] += steps
    return seconds, steps_by_kind, per_cost


def _cpu_job_seconds(config: Mapping, pricer: _Pricer) -> Counter:
    """Seconds of the CPU jobs: generating every dataset and the solver benchmarks."""
    from kryflow.config import dataset_spec, generated_dataset_names
    from kryflow.pdes import build_family
    from kryflow.solvers import default_strategies

    cpu: Counter = Counter()
    bench = config.get("solver_benchmark") or {}
    for name in generated_dataset_names(config):
        spec = dataset_spec(config, name)
        rec = pricer.sample(spec)
        if rec is None:
            continue
        cpu["generation"] += rec["seconds_per_sample"] * int(spec["num_samples"])
        if bench.get("enabled", True) and not spec.get("transfer_of") and name in config["datasets"]:
            fam = build_family(spec["family"], **(spec.get("params") or {}))
            # every strategy solves the benchmark's systems `repeats` times at about the default's speed
            # (the baselines are slower: a lower bound)
            cpu["solver_benchmark"] += (rec["solve_seconds_per_sample"] * int(bench.get("num_samples", 12))
                                        * len(default_strategies(fam)) * int(bench.get("repeats", 3)))
    return cpu


def format_plan(plan: Mapping[str, Any]) -> str:
    """The plan as a short text: what a user reads before submitting."""
    h = plan["hours"]
    jobs = ", ".join(f"{r} {n}" for r, n in sorted(plan["jobs"].items(), key=lambda kv: -kv[1]))
    steps = plan["steps"]
    gm = plan["gpu_model"]
    lines = [
        f"plan of {plan['config']}",
        f"  jobs          {plan['jobs_total']} ({jobs})",
        f"  trials        {plan['trials']} ({plan['trials_per_study']} per study x {plan['studies']} studies x "
        f"{plan['workloads']} workloads x {plan['optimizers']} optimizers)" if plan["trials"] else "  trials        none",
        f"  train steps   {steps['total']:,} (" + ", ".join(f"{k} {v:,}" for k, v in steps.items() if k != "total") + ")",
        "  hours, at most (the budget rule bounds every optimizer by the reference's whole run):",
        f"    GPU jobs    {h['gpu']['total']:,.1f} GPU-hours"
        + (f" (modelled on {gm['profile']}: {gm['source']}; rates x0.6/x0.75, {gm['launch'] * 1e6:.0f} us per kernel)"
           if gm else " (measured on this GPU)"),
        f"                = {h['cpu_training']['total']:,.1f} CPU-core-hours if trained on {plan['measured_on']} "
        + ("(measured)" if not plan.get("cpu_times_extrapolated_linearly") else
           f"(NOT reliable: {len(plan['cpu_times_extrapolated_linearly'])} steps' CPU times were extrapolated along "
           "a line through batches 1 and 2 by an earlier kryflow; delete them from the cost table to re-measure)"),
        f"    CPU jobs    {h['cpu']['total']:,.1f} CPU-core-hours (generation {h['cpu'].get('generation', 0):,.1f}, "
        f"solver benchmarks {h['cpu'].get('solver_benchmark', 0):,.1f}, job starts {h['cpu'].get('job_starts', 0):,.1f})",
    ]
    if plan.get("reused_other_channels"):
        lines.append(f"  priced from other channel counts  {len(plan['reused_other_channels'])} steps (same model, "
                     "optimizer, grid and batch; --exact-channels measures them)")
    if plan["missing"]:
        lines.append(f"  not priced    {len(plan['missing'])} costs neither recorded nor measured: "
                     + "; ".join(plan["missing"][:5]) + (" ..." if len(plan["missing"]) > 5 else ""))
    return "\n".join(lines)
