"""Loader benchmark: zarr streaming vs in-memory throughput, and peak RSS beyond a memory cap.

Writes ``results/benchmarks/loader.json``::

    python benchmarks/loader.py [--samples 2048 --grid 64 --batch-size 32 --memory-cap-mb 256]

Throughput (samples/s, best of ``--epochs`` epochs after one warm-up epoch) is measured on the
train split of a synthetic store (two input fields, one target) in two settings: the raw loader
alone, and the loader feeding a small training step (3-layer conv net, forward + backward +
Adam), which is what a training run sees. Each is run for the in-memory loader
(``in_memory=True``: the same arrays held as tensors) and the streaming zarr loader
(``in_memory=False``) with 0 and ``--workers`` worker processes.

Peak RSS: a second store larger than ``--memory-cap-mb`` is written and then streamed for one
epoch, each in a fresh subprocess; the JSON records the peak RSS of the writer and of the reader
(resident memory sampled every 5 ms, as growth over the post-import baseline; workers counted by
their unique pages) against the cap and the store size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_random_store(path: Path, num_samples: int, grid: int, chunk: int) -> Path:
    # Fast random fields (the synthetic PDE-like sampler is slower than the loader being measured).
    from kryflow.data import VariableSpec, ZarrDatasetWriter, assign_splits

    dims = ("x", "y")
    variables = {
        "a": VariableSpec(dims, "coefficient", "1", "input"),
        "f": VariableSpec(dims, "forcing", "1", "input"),
        "u": VariableSpec(dims, "solution", "1", "output"),
        "iterations": VariableSpec((), "iterations", "1", "solver_stat", "int32"),
    }
    xc = np.linspace(0, 1, grid)
    rng = np.random.default_rng(0)
    with ZarrDatasetWriter(
        path,
        coords={"x": (("x",), xc, {"units": "m"}), "y": (("y",), xc, {"units": "m"})},
        variables=variables,
        num_samples=num_samples,
        chunk_samples=chunk,
        splits=assign_splits(num_samples),
        inputs=["a", "f"],
        targets=["u"],
        attrs={"family": "benchmark"},
        overwrite=True,
    ) as w:
        base = rng.standard_normal((3, grid, grid)).astype(np.float32)
        for i in range(num_samples):
            noise = rng.standard_normal((grid, grid)).astype(np.float32)
            w.append({"a": base[0] + noise, "f": base[1] * (i % 7), "u": base[2] - noise, "iterations": i % 50})
    return path


class _RssSampler:
    """Peak resident memory of this process and its children (workers), sampled every 5 ms."""

    def __init__(self) -> None:
        import threading

        import psutil

        self._proc = psutil.Process()
        self.baseline_mb = self.current_mb()
        self.peak_mb = self.baseline_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def current_mb(self) -> float:
        import psutil

        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                # unique set size: forked workers share the parent's pages, count only their own
                total += child.memory_full_info().uss
            except psutil.Error:
                pass
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, self.current_mb())

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())
        growth = self.peak_mb - self.baseline_mb
        return {"baseline_rss_mb": self.baseline_mb, "peak_rss_mb": self.peak_mb, "growth_mb": growth}


def _child_write(path: str, num_samples: int, grid: int, chunk: int) -> None:
    import kryflow.data  # noqa: F401  (imports counted in the baseline)

    sampler = _RssSampler()
    _write_random_store(Path(path), num_samples, grid, chunk)
    print(json.dumps(sampler.stop()))


def _child_stream(path: str, batch_size: int, workers: int) -> None:
    from kryflow.data import make_loader

    loader = make_loader(path, "train", batch_size=batch_size, shuffle=True, num_workers=workers, in_memory=False)
    sampler = _RssSampler()
    t0, n = time.perf_counter(), 0
    for x, _ in loader:
        n += x.shape[0]
    dt = time.perf_counter() - t0
    print(json.dumps({**sampler.stop(), "samples": n, "samples_per_s": n / dt}))


def _run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _step_fn(channels_in: int, channels_out: int):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(channels_in, 32, 3, padding=1),
        torch.nn.GELU(),
        torch.nn.Conv2d(32, 32, 3, padding=1),
        torch.nn.GELU(),
        torch.nn.Conv2d(32, channels_out, 3, padding=1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()

    return step


def _throughput(loader, epochs: int, step=None) -> float:
    n, best = 0, 0.0
    for _ in range(epochs):
        t0, n = time.perf_counter(), 0
        for x, y in loader:
            if step is not None:
                step(x, y)
            n += x.shape[0]
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--grid", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64, help="samples per chunk")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="best of this many epochs")
    p.add_argument("--memory-cap-mb", type=float, default=256.0)
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/loader.json"))
    p.add_argument("--workdir", type=Path, default=None, help="where the temporary stores go")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "write":
            _child_write(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
        else:
            _child_stream(rest[0], int(rest[1]), int(rest[2]))
        return

    import torch

    from kryflow.data import make_loader

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    work = Path(tempfile.mkdtemp(prefix="kryflow-loader-bench-", dir=args.workdir))
    result: dict = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "child"},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
    }
    try:
        store = _write_random_store(work / "throughput.zarr", args.samples, args.grid, args.chunk)
        step = _step_fn(2, 1)
        kw = dict(batch_size=args.batch_size, shuffle=True, seed=0)
        rows = {}
        mem = make_loader(store, "train", in_memory=True, **kw)
        rows["in_memory"] = mem
        for w in (0, args.workers):
            rows[f"zarr_stream_workers{w}"] = make_loader(store, "train", in_memory=False, num_workers=w, **kw)
        tp = {}
        for loader in rows.values():  # warm-up: first-touch page faults, worker start-up
            for _ in loader:
                pass
        for mode, st in (("loader_only", None), ("with_train_step", step)):
            tp[mode] = {name: _throughput(loader, args.epochs, st) for name, loader in rows.items()}
            for name in rows:
                if name != "in_memory":
                    tp[mode][f"{name}_ratio"] = tp[mode][name] / tp[mode]["in_memory"]
        result["train_samples"] = mem.num_samples
        result["throughput_samples_per_s"] = tp
        result["target"] = "zarr streaming >= 0.8x in-memory samples/s with a training step"
        best = max(v for k, v in tp["with_train_step"].items() if k.endswith("_ratio"))
        result["target_met"] = bool(best >= 0.8)
        result["target_met_by"] = max(
            (k for k in tp["with_train_step"] if k.endswith("_ratio")), key=tp["with_train_step"].get
        ).removesuffix("_ratio")
        mb_per_sample = 3 * 4 * args.grid * args.grid / 2**20
        result["stream_mb_per_s"] = {
            k: v * mb_per_sample for k, v in tp["loader_only"].items() if not k.endswith("_ratio")
        }
        result["note"] = (
            "loader_only compares decoding zstd+crc32c chunks from the page cache with index_select on "
            "tensors already in memory (a memory copy); no compressed store reaches memcpy speed, so that "
            "ratio is reported, not targeted. The target is the rate a training step consumes samples."
        )

        # RSS: store bigger than the cap, streamed in a fresh process
        bytes_per_sample = 3 * 4 * args.grid * args.grid
        big_n = int(1.5 * args.memory_cap_mb * 2**20 / bytes_per_sample) + 1
        big = work / "big.zarr"
        wr = _run_child("--child", "write", str(big), str(big_n), str(args.grid), str(args.chunk))
        store_mb = sum(f.stat().st_size for f in big.rglob("*") if f.is_file()) / 2**20
        rss = {
            "memory_cap_mb": args.memory_cap_mb,
            "dataset_samples": big_n,
            "dataset_uncompressed_mb": big_n * bytes_per_sample / 2**20,
            "store_on_disk_mb": store_mb,
            "writer": wr,
        }
        for w in (0, args.workers):
            rss[f"stream_workers{w}"] = _run_child("--child", "stream", str(big), str(args.batch_size), str(w))
        growth = [rss["writer"]["growth_mb"]] + [rss[f"stream_workers{w}"]["growth_mb"] for w in (0, args.workers)]
        rss["max_growth_over_baseline_mb"] = max(growth)
        rss["bounded"] = bool(max(growth) < args.memory_cap_mb)
        result["peak_rss"] = rss
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
