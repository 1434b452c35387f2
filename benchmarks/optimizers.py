"""Per-step time and peak memory of every registered optimizer relative to Adam.

Same model, same batch, one process: all optimizers are timed side by side in interleaved
rounds (round r times every optimizer once), so machine-load drift hits them alike. Writes
``results/benchmarks/optimizers.json``.

Issue-5 targets (ratio to Adam per step): AdaHessian ≤ 2.0, K-FAC ≤ 1.2, zeroth-order ≤ 0.6.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the measured steps (parameters,
gradients, optimizer state, activations, temporaries). On CPU there is no per-allocation high
-water mark, so we report the bytes of parameters + gradients + optimizer state after the
steps (``memory_kind`` says which).

Usage:
    python benchmarks/optimizers.py                       # CPU-sized defaults
    python benchmarks/optimizers.py --device cuda --grid 64 --batch 16 --width 32 --modes 12
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from kryflow.models import build_model
from kryflow.optim import OPTIMIZERS, build_optimizer

TARGETS = {"adahessian": 2.0, "kfac": 1.2, "zo_spsa": 0.6}
# learning rates only need to keep the few benchmark steps finite
LR = {"sgd": 1e-3, "lbfgs": 0.1, "adahessian": 1e-3, "kfac": 1e-3, "mfac": 1e-3, "mkor": 1e-3, "mkor_h": 1e-3,
      "zo_spsa": 1e-4}


def model_kwargs(name: str, args) -> dict:
    if name == "fno":
        return {"width": args.width, "modes": args.modes, "layers": args.layers}
    return {"width": max(4, args.width // 2), "depth": args.depth}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def state_bytes(runner) -> int:
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if torch.is_tensor(t) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
        elif isinstance(t, (list, tuple)):
            for v in t:
                add(v)
        elif isinstance(t, dict):
            for v in t.values():
                add(v)

    for p in runner.model.parameters():
        add(p)
        add(p.grad)
    for st in runner.optimizer.state.values():
        add(st)
    return total


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
    cells = {}
    for name in names:
        model = copy.deepcopy(base)
        runner = build_optimizer(name, model, lr=LR.get(name, 1e-4))
        loss_fn = (lambda m: (lambda: ((m(x) - y) ** 2).mean()))(model)
        for _ in range(args.warmup):
            runner.step(loss_fn)
        cells[name] = {"runner": runner, "loss_fn": loss_fn, "times": []}
    sync(device)
    for _ in range(args.rounds):
        for name, cell in cells.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                cell["runner"].step(cell["loss_fn"])
            sync(device)
            cell["times"].append((time.perf_counter() - t0) / args.steps)
    out = {}
    for name in names:
        cell = cells[name]
        if device.type == "cuda":
            # memory pass one optimizer at a time so peaks do not mix
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            for _ in range(2):
                cell["runner"].step(cell["loss_fn"])
            sync(device)
            mem, kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
        else:
            mem, kind = state_bytes(cell["runner"]), "params_grads_state"
        out[name] = {"seconds_per_step": statistics.median(cell["times"]), "all_rounds": cell["times"],
                     "memory_bytes": mem, "memory_kind": kind, "kind": OPTIMIZERS[name].kind}
    ref = out.get("adam")
    for name, row in out.items():
        if ref:
            row["time_vs_adam"] = row["seconds_per_step"] / ref["seconds_per_step"]
            row["memory_vs_adam"] = row["memory_bytes"] / ref["memory_bytes"]
        if name in TARGETS and ref:
            row["target_time_vs_adam"] = TARGETS[name]
            row["meets_target"] = row["time_vs_adam"] <= TARGETS[name]
    params = sum(p.numel() for p in base.parameters())
    return {"model": model_name, "kwargs": model_kwargs(model_name, args), "parameters": params, "optimizers": out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--models", nargs="+", default=["fno", "unet"])
    parser.add_argument("--optimizers", nargs="+", default=sorted(OPTIMIZERS))
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--modes", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block (≥ K-FAC inverse_every)")
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
    unknown = sorted(set(args.optimizers) - set(OPTIMIZERS))
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
        "skipped": skipped,
        "models": [],
    }
    for model_name in args.models:
        print(f"[{model_name}] benchmarking {len(names)} optimizers on {device} ...", flush=True)
        res = bench_model(model_name, names, args, device)
        results["models"].append(res)
        for name, row in res["optimizers"].items():
            mark = "" if "meets_target" not in row else (" ok" if row["meets_target"] else " MISSES TARGET")
            print(f"  {name:11s} {row['seconds_per_step'] * 1e3:8.2f} ms/step  time×{row['time_vs_adam']:5.2f}  "
                  f"mem×{row['memory_vs_adam']:5.2f}{mark}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
