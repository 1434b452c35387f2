"""A small synthetic dataset in the kryflow schema, for tests and benchmarks (no PDE solve)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._schema import VariableSpec, assign_splits
from ._writer import ZarrDatasetWriter


def synthetic_sample(i: int, grid: tuple[int, ...], seed: int, time_steps: int = 0) -> dict[str, np.ndarray]:
    """Sample ``i``: smooth random fields ``a``, ``f`` (inputs), ``u`` (target) and solver stats."""
    rng = np.random.default_rng([seed, i])
    axes = np.meshgrid(*[np.linspace(0, 1, n) for n in grid], indexing="ij")
    k = rng.uniform(1, 4, size=len(grid))
    phase = rng.uniform(0, 2 * np.pi, size=len(grid))
    a = 1.0 + 0.5 * np.prod([np.sin(kk * np.pi * ax + p) for kk, ax, p in zip(k, axes, phase)], axis=0)
    f = rng.standard_normal(grid).astype(np.float32)
    u = a * np.prod([np.sin(np.pi * ax) for ax in axes], axis=0) + 0.01 * f
    out = {
        "a": a.astype(np.float32),
        "f": f,
        "u": u.astype(np.float32),
        "iterations": np.int32(20 + rng.integers(0, 10)),
        "residual": rng.uniform(1e-9, 1e-8, size=2),
        "seconds": np.float64(rng.uniform(0.01, 0.02)),
    }
    if time_steps:
        out["u_traj"] = np.stack([u * (t + 1) / time_steps for t in range(time_steps)]).astype(np.float32)
    return out


def synthetic_spec(grid: tuple[int, ...], time_steps: int = 0):
    dims = ("x", "y", "z")[: len(grid)]
    variables = {
        "a": VariableSpec(dims, "diffusion coefficient", "1", "input"),
        "f": VariableSpec(dims, "forcing", "1", "input"),
        "u": VariableSpec(dims, "solution", "1", "output"),
        "iterations": VariableSpec((), "Krylov iterations", "1", "solver_stat", "int32"),
        "residual": VariableSpec(("solve",), "true relative residual", "1", "solver_stat", "float64"),
        "seconds": VariableSpec((), "solve wall time", "s", "solver_stat", "float64"),
    }
    coords = {d: ((d,), np.linspace(0.0, 1.0, n), {"units": "m", "long_name": d}) for d, n in zip(dims, grid)}
    if time_steps:
        variables["u_traj"] = VariableSpec(("time", *dims), "solution trajectory", "1", "output")
        coords["time"] = (("time",), np.arange(1, time_steps + 1, dtype=np.float64), {"units": "s"})
    return coords, variables


def write_synthetic_dataset(
    path,
    *,
    num_samples: int = 40,
    grid: tuple[int, ...] = (8, 8),
    chunk_samples: int = 8,
    seed: int = 0,
    time_steps: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic store: inputs ``a``, ``f``; target ``u``; optional trajectory ``u_traj``."""
    coords, variables = synthetic_spec(grid, time_steps)
    with ZarrDatasetWriter(
        path,
        coords=coords,
        variables=variables,
        num_samples=num_samples,
        chunk_samples=chunk_samples,
        splits=assign_splits(num_samples, seed=seed),
        inputs=["a", "f"],
        targets=["u"],
        attrs={
            "family": "synthetic",
            "params": {"grid": list(grid), "seed": seed},
            "config": {"num_samples": num_samples},
        },
        nondeterministic=["seconds"],
        overwrite=overwrite,
    ) as writer:
        for i in range(num_samples):
            writer.append(synthetic_sample(i, grid, seed, time_steps))
    return Path(path)
