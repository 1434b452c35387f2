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

    **Returns:** ``seconds_per_step`` (mean of the timed steps), ``forward_seconds_per_sample``
    (inference, as validation and evaluation run it), ``grad_evals_per_step``, the step's
    ``flops``, ``bytes`` and ``kernels`` (:func:`kryflow.planning._gpu.count_step`),
    ``gpu_seconds_per_step`` per profile, and what it was measured on.
    """
    import torch

    from kryflow.models import build_model
    from kryflow.optim import build_optimizer
    from kryflow.training import loss_function

    from ._gpu import count_step, model_step_seconds

    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        torch.manual_seed(0)
        dev = torch.device(device)
        kwargs = {k: v for k, v in model.items() if k != "name"}
        net = build_model(model["name"], in_channels=channels[0], out_channels=channels[1], dim=len(grid),
                          **kwargs).to(dev)
        hp = {k: v for k, v in optimizer.items() if k != "name"}
        runner = build_optimizer(optimizer["name"], net, lr=float(hp.pop("lr")), **hp)
        rel_l2 = loss_function("rel_l2")

        class _Direct:  # the loss reads surrogate(x); a bare network stands in (normalisation is elementwise)
            def __call__(self, x):
                return net(x)

        surrogate = _Direct()
        x, y = _synthetic_batch(batch, channels, grid, dev)

        def one_step() -> float:
            t0 = time.perf_counter()
            runner.step(lambda: rel_l2(surrogate, x, y))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return time.perf_counter() - t0

        for _ in range(warmup):
            one_step()
        times = [one_step() for _ in range(steps)]
        grad_evals = runner.last_grad_evals
        counts = count_step(lambda: runner.step(lambda: rel_l2(surrogate, x, y)))
        net.eval()
        with torch.no_grad():
            net(x)
            t0 = time.perf_counter()
            net(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            forward = (time.perf_counter() - t0) / batch
            forward_ops = count_step(lambda: net(x))["ops"]
        params = sum(p.numel() for p in net.parameters())
    finally:
        torch.set_num_threads(old_threads)
    ops = counts.pop("ops")
    return {"seconds_per_step": float(sum(times) / len(times)), "seconds_first_timed": times[0],
            "forward_seconds_per_sample": forward, "grad_evals_per_step": grad_evals, "parameters": params,
            **counts, "gpu_seconds_per_step": {g: model_step_seconds(ops, p) for g, p in (gpus or {}).items()},
            "gpu_forward_seconds_per_sample": {g: model_step_seconds(forward_ops, p) / batch
                                               for g, p in (gpus or {}).items()},
            "steps_timed": steps, "device": device_name(device), "threads": threads, "torch": torch.__version__,
            "measured": datetime.date.today().isoformat()}


def measure_generation(family: str, params: Mapping, solver: Mapping, samples: int = 3) -> dict:
    """Seconds per sample of a dataset's generation (sampling, solving, writing), measured by
    generating ``samples`` samples (after one that compiles the solver's kernels) into a scratch
    store with the dataset's own family, parameters and solver."""
    from kryflow.data.generate import generate_dataset

    with tempfile.TemporaryDirectory(prefix="kryflow-plan-") as tmp:
        common = dict(family=family, params=dict(params), seed=0, splits="test", solver=dict(solver), progress=False)
        generate_dataset(Path(tmp) / "warm.zarr", num_samples=1, chunk_samples=1, **common)
        t0 = time.perf_counter()
        totals = generate_dataset(Path(tmp) / "timed.zarr", num_samples=samples, chunk_samples=samples, **common)
        wall = time.perf_counter() - t0
    solve = float(totals.get("seconds", math.nan))
    return {"seconds_per_sample": wall / samples, "solve_seconds_per_sample": solve / samples,
            "samples_timed": samples, "device": device_name("cpu"), "measured": datetime.date.today().isoformat()}
