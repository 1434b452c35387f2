"""Measured costs the plan prices a workflow with: seconds per training step of each (model,
optimizer, grid, batch) on this machine, what one step does (floating-point operations, bytes
moved, kernels launched) for the GPU model, and seconds per generated sample of each dataset.

Measurements are kept in a JSON table (``results/benchmarks/step_costs.json`` by default) keyed
by what shapes them, so a plan measures only what it has not measured before on this device.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CostTable", "measure_step", "measure_generation", "step_key", "generation_key", "device_name"]


def device_name(device: str = "cpu") -> str:
    """What the measurement ran on: the CUDA device's name, or the CPU's model and threads."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} (1 thread)"


def step_key(model: Mapping, optimizer: Mapping, grid: tuple[int, ...], channels: tuple[int, int], batch: int,
             device: str) -> str:
    """The table key of a training step: model and optimizer settings (name included), grid,
    (input, output) channels, batch and device."""
    return json.dumps({"model": dict(model), "optimizer": dict(optimizer), "grid": list(grid),
                       "channels": list(channels), "batch": int(batch), "device": device}, sort_keys=True, default=str)


def generation_key(family: str, params: Mapping, solver: Mapping, device: str) -> str:
    """The table key of a generated sample's cost."""
    return json.dumps({"family": family, "params": dict(params), "solver": dict(solver), "device": device},
                      sort_keys=True, default=str)


class CostTable:
    """A JSON file of measurements (key -> record); read on creation, written by :meth:`save`."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        if self.path is not None and self.path.exists():
            self.entries = json.loads(self.path.read_text())

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, record: dict) -> None:
        self.entries[key] = record
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def _synthetic_batch(batch: int, channels: tuple[int, int], grid: tuple[int, ...], device):
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels[0], *grid, generator=gen).to(device)
    y = torch.randn(batch, channels[1], *grid, generator=gen).to(device)
    return x, y


#: Above this many grid values a step (batch x cells) is measured at two small batches and
#: extrapolated (a paper-sized step takes tens of seconds on one core).
DIRECT_LIMIT = 16 * 32 * 32 * 8


def _measure_at(model: Mapping, optimizer: Mapping, grid: tuple[int, ...], channels: tuple[int, int], batch: int,
                device: str, warmup: int, steps: int) -> dict:
    """One model and optimizer at one batch size: timed steps, a counted step, a timed and
    counted forward pass."""
    import torch

    from kryflow.models import build_model
    from kryflow.optim import build_optimizer
    from kryflow.training import loss_function

    from ._gpu import count_step

    torch.manual_seed(0)
    dev = torch.device(device)
    kwargs = {k: v for k, v in model.items() if k != "name"}
    net = build_model(model["name"], in_channels=channels[0], out_channels=channels[1], dim=len(grid),
                      **kwargs).to(dev)
    hp = {k: v for k, v in optimizer.items() if k != "name"}
    runner = build_optimizer(optimizer["name"], net, lr=float(hp.pop("lr")), **hp)
    rel_l2 = loss_function("rel_l2")
    x, y = _synthetic_batch(batch, channels, grid, dev)
    loss = lambda: rel_l2(net, x, y)  # noqa: E731 (the loss calls its first argument: the network stands in)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    for _ in range(warmup):
        runner.step(loss)
    times = [timed(lambda: runner.step(loss)) for _ in range(steps)]
    counts = count_step(lambda: runner.step(loss))
    net.eval()
    with torch.no_grad():
        net(x)
        forward = timed(lambda: net(x))
        forward_ops = count_step(lambda: net(x))["ops"]
    return {"seconds": float(sum(times) / len(times)), "first": times[0], "forward": forward,
            "grad_evals": runner.last_grad_evals, "ops": counts["ops"], "forward_ops": forward_ops,
            "parameters": sum(p.numel() for p in net.parameters())}


#: Hyperparameters that make an optimizer do expensive work once every k steps (a Hessian
#: estimate, Kronecker factors and their inverses, a preconditioner refresh).
PERIODIC = ("update_period", "factor_every", "inverse_every", "refresh_every", "precondition_frequency",
            "preconditioning_compute_steps")
_NEVER = 10**9


def _phases(optimizer: Mapping) -> tuple[dict, dict[str, int]]:
    """Overrides that keep an optimizer's periodic work out of the timed steps, and its periods
    (> 1) at the given settings: a step then costs the plain step plus, per period k, the extra of
    a step that does that work divided by k."""
    from kryflow.optim import check_hyperparameters

    hp = check_hyperparameters(optimizer["name"], **{k: v for k, v in optimizer.items() if k != "name"})
    periods = {k: int(hp[k]) for k in PERIODIC if k in hp and int(hp[k]) > 1}
    plain = {k: _NEVER for k in periods}
    if "hessian_warmup" in hp:  # AdaHessian estimates on every one of its first steps
        plain["hessian_warmup"] = 0
    return plain, periods


def _amortised(plain: dict, phased: Mapping[str, dict], periods: Mapping[str, int]) -> dict:
    """One step at the settings' periods from the plain step and, per period, a step that does its
    work every time: times, FLOPs and bytes add (extra / k); the extra kernels append."""
    out = dict(plain)
    for name, m in phased.items():
        w = 1.0 / periods[name]
        for key in ("seconds", "first", "forward"):
            out[key] = out[key] + w * max(0.0, m[key] - plain[key])
        # the kernels a phase step launches beyond the plain step's run in one step of k
        extra = m["ops"][len(plain["ops"]):]
        out["ops"] = out["ops"] + [[o[0], o[1], o[2] * w] for o in extra]
    return out


def _extrapolate(a: dict, b: dict, na: int, nb: int, n: int) -> dict:
    """Batch ``n`` from batches ``na`` < ``nb``: every kernel's FLOPs and bytes are linear in the
    batch (activations scale with it, the optimizer's work does not), so they extrapolate exactly;
    a kernel list that differs between the two (data-dependent steps) scales as a whole. Times are
    the larger batch's, scaled by the FLOPs of the step at ``n`` against its own: two small
    batches' times differ by less than a loaded machine's noise, and a line through them can
    slope anywhere (even below zero)."""
    t = (n - na) / (nb - na)

    def lin(u, v):
        return max(0.0, u + (v - u) * t)

    def ops(u, v):
        if len(u) == len(v):
            return [[lin(p[0], q[0]), lin(p[1], q[1]), p[2]] for p, q in zip(u, v)]
        scale = lin(1.0, sum(o[1] for o in v) / max(1.0, sum(o[1] for o in u)))
        return [[o[0] * scale, o[1] * scale, o[2]] for o in u]

    def flops(o):
        return sum(k[0] * k[2] for k in o)

    step_ops, forward_ops = ops(a["ops"], b["ops"]), ops(a["forward_ops"], b["forward_ops"])

    def scaled(key, big, small):
        return b[key] * big / small if small > 0 else lin(a[key], b[key])

    return {"seconds": scaled("seconds", flops(step_ops), flops(b["ops"])),
            "first": scaled("first", flops(step_ops), flops(b["ops"])),
            "forward": scaled("forward", flops(forward_ops), flops(b["forward_ops"])),
            "grad_evals": b["grad_evals"], "ops": step_ops, "forward_ops": forward_ops, "parameters": b["parameters"]}


def measure_step(model: Mapping, optimizer: Mapping, grid: tuple[int, ...], channels: tuple[int, int], batch: int,
                 *, device: str = "cpu", warmup: int = 2, steps: int = 6, threads: int = 1,
                 gpus: Mapping[str, Any] | None = None) -> dict:
    """Time training steps of a model and optimizer as the trainer takes them, on random data of
    the workload's shape, and count what one step does.

    **Arguments:**
        model: ``{"name", **constructor arguments}``. optimizer: ``{"name", "lr", **hyperparameters}``.
        grid: cells per axis. channels: (input, output) channels. batch: samples per step.
        device: ``"cpu"`` or ``"cuda"``. warmup, steps: steps discarded, then timed.
        threads: torch threads on the CPU (the workflow's training jobs use one).
        gpus: GPU profiles (:data:`kryflow.planning.GPU_PROFILES`) to model the step on.

    A step larger than :data:`DIRECT_LIMIT` grid values on the CPU is measured at batches 1 and 2
    and extrapolated to ``batch`` (``extrapolated_from``): every kernel's FLOPs and bytes linearly,
    the times in proportion to the step's FLOPs (``cpu_seconds_scaled_by``).
    An optimizer with periodic work (:data:`PERIODIC`: K-FAC's factors every 20 and inverses every
    100 steps, say) is measured without it and once per period with it on every step; the step
    is their amortised sum (``periods``).

    **Returns:** ``seconds_per_step`` (mean of the timed steps), ``forward_seconds_per_sample``
    (inference, as validation and evaluation run it), ``grad_evals_per_step``, the step's
    ``flops``, ``bytes`` and ``kernels`` (:func:`kryflow.planning._gpu.count_step`),
    ``gpu_seconds_per_step`` and ``gpu_forward_seconds_per_sample`` per profile, and what it was
    measured on.
    """
    import torch

    from ._gpu import model_step_seconds

    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    small = (1, 2) if device == "cpu" and batch > 2 and batch * math.prod(grid) > DIRECT_LIMIT else None

    def at(opt: Mapping) -> dict:
        if small is None:
            return _measure_at(model, opt, grid, channels, batch, device, warmup, steps)
        lo, hi = (_measure_at(model, opt, grid, channels, b, device, 1, 2) for b in small)
        return _extrapolate(lo, hi, *small, batch)

    plain_hp, periods = _phases(optimizer)
    try:
        plain = at({**optimizer, **plain_hp})
        phased = {k: at({**optimizer, **plain_hp, k: 1}) for k in periods}
        m = _amortised(plain, phased, periods)
    finally:
        torch.set_num_threads(old_threads)
    ops, forward_ops = m.pop("ops"), m.pop("forward_ops")
    return {"seconds_per_step": m["seconds"], "seconds_first_timed": m["first"],
            "forward_seconds_per_sample": m["forward"] / batch, "grad_evals_per_step": m["grad_evals"],
            "parameters": m["parameters"], "flops": float(sum(o[0] * o[2] for o in ops)),
            "bytes": float(sum(o[1] * o[2] for o in ops)), "kernels": float(sum(o[2] for o in ops)),
            "gpu_seconds_per_step": {g: model_step_seconds(ops, p) for g, p in (gpus or {}).items()},
            "gpu_forward_seconds_per_sample": {g: model_step_seconds(forward_ops, p) / batch
                                               for g, p in (gpus or {}).items()},
            "extrapolated_from": list(small) if small else None,
            "cpu_seconds_scaled_by": "flops" if small else None, "periods": periods,
            "steps_timed": steps if small is None else 2, "device": device_name(device), "threads": threads,
            "torch": torch.__version__, "measured": datetime.date.today().isoformat()}


def measure_generation(family: str, params: Mapping, solver: Mapping, samples: int = 3) -> dict:
    """Seconds per sample of a dataset's generation (sampling, solving, writing), measured by
    generating ``samples`` samples (after one that compiles the solver's kernels) into a scratch
    store with the dataset's own family, parameters and solver."""
    from kryflow.generation import generate_dataset

    with tempfile.TemporaryDirectory(prefix="kryflow-plan-") as tmp:
        common = dict(family=family, params=dict(params), seed=0, splits="test", solver=dict(solver), progress=False)
        generate_dataset(Path(tmp) / "warm.zarr", num_samples=1, chunk_samples=1, **common)
        t0 = time.perf_counter()
        totals = generate_dataset(Path(tmp) / "timed.zarr", num_samples=samples, chunk_samples=samples, **common)
        wall = time.perf_counter() - t0
    solve = float(totals.get("seconds", math.nan))
    return {"seconds_per_sample": wall / samples, "solve_seconds_per_sample": solve / samples,
            "samples_timed": samples, "device": device_name("cpu"), "measured": datetime.date.today().isoformat()}
