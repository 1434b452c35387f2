"""Per-step time and peak memory of every registered optimizer relative to Adam.

Same model, same batch, one process: all optimizers are timed side by side, one step each in
turn (round robin), so machine-load drift hits them alike. Writes
``results/benchmarks/optimizers.json``.

Issue-5 targets (ratio to Adam per step): AdaHessian ≤ 2.0, K-FAC ≤ 1.2, zeroth-order ≤ 0.6.

Time. Optimizers that do expensive work every few steps (AdaHessian's Hessian estimate, K-FAC's
statistics and inversions, SOAP/SophiaH/MKOR refreshes) are timed over blocks of whole update
periods (a block is the least common multiple of all periods), so ``seconds_per_step`` (the
number compared with the targets) is the amortised cost of a step at the registry defaults
(median over rounds of each round's mean). Each step is also timed alone: ``phase_step_seconds``
is the median step that does the expensive work (``phase``: "hessian" for create_graph kinds,
"statistics" for hook kinds; K-FAC's inversions fall on statistics steps) and
``plain_step_seconds`` the median of the others; their ``*_vs_adam`` ratios divide by Adam's
median step. ``forward_vs_adam`` (per model) is one no-grad forward + loss relative to an Adam
step: a two-point zeroth-order step can not cost less than twice that.

Memory: the peak bytes a training step needs: parameters plus the high-water mark of
everything allocated from building the optimizer through three steps (gradients, optimizer
state, buffers, activations, temporaries; the input batch excluded), one optimizer at a time on
a fresh copy of the model. On CUDA from ``torch.cuda.max_memory_allocated``; on CPU from the
allocator's allocation/free events recorded by ``torch.profiler`` (``profile_memory=True``),
whose running sum gives the high-water mark (``memory_kind`` says which).

Usage:
    python benchmarks/optimizers.py                       # CPU-sized defaults
    python benchmarks/optimizers.py --device cuda --grid 64 --batch 16 --width 32 --modes 12
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from kryflow.models import build_model
from kryflow.optim import OPTIMIZERS, build_optimizer, check_hyperparameters

TARGETS = {"adahessian": 2.0, "kfac": 1.2, "zo_spsa": 0.6}
# learning rates only need to keep the few benchmark steps finite
LR = {"sgd": 1e-3, "lbfgs": 0.1, "adahessian": 1e-3, "kfac": 1e-3, "mfac": 1e-3, "mkor": 1e-3, "mkor_h": 1e-3,
      "zo_spsa": 1e-4}


# variants measured beside the registry defaults: "name:key=value,key=value"
VARIANTS = ["zo_spsa:directions=buffer"]


def split_variant(label: str) -> tuple[str, dict]:
    """``"zo_spsa:directions=buffer"`` -> ``("zo_spsa", {"directions": "buffer"})``."""
    base, _, rest = label.partition(":")
    extras = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            extras[key] = json.loads(value)
        except json.JSONDecodeError:
            extras[key] = value
    return base, extras


def make_runner(label: str, model):
    base, extras = split_variant(label)
    return build_optimizer(base, model, lr=LR.get(base, 1e-4), **extras)


def model_kwargs(name: str, args) -> dict:
    if name == "fno":
        return {"width": args.width, "modes": args.modes, "layers": args.layers}
    return {"width": max(4, args.width // 2), "depth": args.depth}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# hyperparameters that make an optimizer do expensive work every k steps
PERIODIC = ("update_period", "factor_every", "inverse_every", "refresh_every", "precondition_frequency",
            "preconditioning_compute_steps")


def update_period(name: str) -> int:
    """Steps after which the optimizer's step pattern repeats at its registry defaults."""
    base, extras = split_variant(name)
    merged = check_hyperparameters(base, lr=1e-3, **extras)
    return math.lcm(1, *(int(merged[k]) for k in PERIODIC if k in merged))


def phase_due(runner) -> bool | None:
    """Whether the next step does the expensive work (None: the optimizer has no such steps)."""
    kind = runner.spec.kind
    if kind == "create_graph":
        return runner._hessian_due()
    if kind == "hooks" and hasattr(runner.optimizer, "stats_due"):
        return runner.optimizer.stats_due()
    return None


def peak_step_memory(name: str, base, loss_of, device: torch.device) -> tuple[int, str]:
    """Parameter bytes + high-water mark of allocations from building the optimizer through 3 steps."""
    model = copy.deepcopy(base)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    loss_fn = loss_of(model)
    gc.collect()  # frees of blocks allocated before the window would be invisible to the profiler
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        runner = make_runner(name, model)
        for _ in range(3):
            runner.step(loss_fn)
        sync(device)
        return param_bytes + torch.cuda.max_memory_allocated(device) - start, "cuda_max_allocated"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        runner = make_runner(name, model)
        for _ in range(3):
            runner.step(loss_fn)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return param_bytes + peak, "cpu_profiler_peak"


def kron_usable() -> bool:
    # pytorch-optimizer's Kron without opt_einsum costs O(numel²) per step (see kryflow.optim)
    return torch.backends.opt_einsum.is_available()


def bench_model(model_name: str, names: list[str], args, device: torch.device) -> dict:
    torch.manual_seed(0)
    dims = (args.grid,) * args.dim
    base = build_model(model_name, in_channels=1, out_channels=1, dim=args.dim, **model_kwargs(model_name, args))
    base = base.to(device)
    x = torch.randn(args.batch, 1, *dims, device=device)
    y = torch.randn(args.batch, 1, *dims, device=device)

    def loss_of(m):
        return lambda: ((m(x) - y) ** 2).mean()

    cells = {}
    for name in names:
        model = copy.deepcopy(base)
        runner = make_runner(name, model)
        loss_fn = loss_of(model)
        # one-time warm-ups of the optimizer itself (AdaHessian's Hessian on every early step) run
        # untimed too: the targets are about the steady state
        warmup = args.warmup + check_hyperparameters(split_variant(name)[0], lr=1e-3).get("hessian_warmup", 0)
        for _ in range(warmup):
            runner.step(loss_fn)
        cells[name] = {"runner": runner, "loss_fn": loss_fn, "times": [], "steps": [], "period": update_period(name),
                       "warmup": warmup}
    # one block holds whole update periods of every optimizer
    period = math.lcm(*(c["period"] for c in cells.values()))
    block = period * math.ceil(args.steps / period)
    forward = []
    base_loss = loss_of(base)
    sync(device)
    for _ in range(args.rounds):
        totals = dict.fromkeys(cells, 0.0)
        forward_total = 0.0
        # round robin, one step each: load drift on a shared machine hits every optimizer alike
        for _ in range(block):
            with torch.no_grad():
                t0 = time.perf_counter()
                base_loss()
                sync(device)
                forward_total += time.perf_counter() - t0
            for name, cell in cells.items():
                runner = cell["runner"]
                due = phase_due(runner)
                t0 = time.perf_counter()
                runner.step(cell["loss_fn"])
                sync(device)
                dt = time.perf_counter() - t0
                totals[name] += dt
                cell["steps"].append((due, dt))
        for name, cell in cells.items():
            cell["times"].append(totals[name] / block)
        forward.append(forward_total / block)
    out = {}
    for name in names:
        cell = cells[name]
        row = {"seconds_per_step": statistics.median(cell["times"]), "all_rounds": cell["times"],
               "steps_per_block": block, "update_period": cell["period"], "untimed_warmup_steps": cell["warmup"],
               "kind": OPTIMIZERS[split_variant(name)[0]].kind}
        row["median_step_seconds"] = statistics.median(dt for _, dt in cell["steps"])
        flagged = [dt for due, dt in cell["steps"] if due]
        plain = [dt for due, dt in cell["steps"] if not due]
        if flagged:
            row["phase"] = "hessian" if row["kind"] == "create_graph" else "statistics"
            row["phase_step_seconds"] = statistics.median(flagged)
            row["plain_step_seconds"] = statistics.median(plain) if plain else None
        out[name] = row
    cells.clear()
    for name in names:
        mem, kind = peak_step_memory(name, base, loss_of, device)
        out[name].update(memory_bytes=mem, memory_kind=kind)
    ref = out.get("adam")
    for name, row in out.items():
        if ref:
            row["time_vs_adam"] = row["seconds_per_step"] / ref["seconds_per_step"]
            row["memory_vs_adam"] = row["memory_bytes"] / ref["memory_bytes"]
            if "phase_step_seconds" in row:
                # medians of single steps against Adam's median step (block means carry load spikes)
                row["phase_step_vs_adam"] = row["phase_step_seconds"] / ref["median_step_seconds"]
                if row["plain_step_seconds"] is not None:
                    row["plain_step_vs_adam"] = row["plain_step_seconds"] / ref["median_step_seconds"]
        target = TARGETS.get(split_variant(name)[0])
        if target and ref:
            row["target_time_vs_adam"] = target
            row["meets_target"] = row["time_vs_adam"] <= target
    params = sum(p.numel() for p in base.parameters())
    res = {"model": model_name, "kwargs": model_kwargs(model_name, args), "parameters": params,
           "forward_seconds": statistics.median(forward), "optimizers": out}
    if ref:
        res["forward_vs_adam"] = res["forward_seconds"] / ref["seconds_per_step"]
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--models", nargs="+", default=["fno", "unet"])
    parser.add_argument("--optimizers", nargs="+", default=sorted(OPTIMIZERS) + VARIANTS,
                        help="registry names, or variants 'name:key=value,...' (default: all + %s)" % VARIANTS)
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--modes", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10,
                        help="steps per optimizer per round (rounded up to whole update periods of all optimizers)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="results/benchmarks/optimizers.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("error: --device cuda but torch.cuda.is_available() is False (no GPU or CPU-only torch)",
                  file=sys.stderr)
            return 2
    unknown = sorted({split_variant(o)[0] for o in args.optimizers} - set(OPTIMIZERS))
    if unknown:
        parser.error(f"unknown optimizer(s) {unknown}; valid: {sorted(OPTIMIZERS)}")
    names = list(dict.fromkeys(["adam", *args.optimizers]))  # Adam is the reference
    skipped = {}
    if "kron" in names and not kron_usable():
        names.remove("kron")
        skipped["kron"] = "opt_einsum not installed: pytorch-optimizer's Kron einsum is O(numel^2) per step"

    results = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "config": vars(args),
        "compared": "time_vs_adam = seconds_per_step / Adam's, amortised over whole update periods at the "
                    "registry defaults; memory_vs_adam = peak step memory / Adam's (see memory_kind)",
        "skipped": skipped,
        "models": [],
    }
    for model_name in args.models:
        print(f"[{model_name}] benchmarking {len(names)} optimizers on {device} ...", flush=True)
        res = bench_model(model_name, names, args, device)
        results["models"].append(res)
        for name, row in res["optimizers"].items():
            mark = "" if "meets_target" not in row else (" ok" if row["meets_target"] else " MISSES TARGET")
            phase = (f"  ({row['phase']} step ×{row['phase_step_vs_adam']:5.2f})"
                     if "phase_step_vs_adam" in row else "")
            print(f"  {name:11s} {row['seconds_per_step'] * 1e3:8.2f} ms/step  time×{row['time_vs_adam']:5.2f}  "
                  f"mem×{row['memory_vs_adam']:5.2f}{mark}{phase}", flush=True)
        print(f"  one no-grad forward: ×{res['forward_vs_adam']:.2f} of an Adam step", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
