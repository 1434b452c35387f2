"""Dataset generation: a PDE family's sequence of systems, solved with one recycling solver,
streamed into a zarr store with per-solve statistics.

The solver object lives for the whole sequence, so its recycle space (and preconditioner,
where reuse pays) carries over from one sample to the next. A solve that misses its
tolerance either raises (default) or, with ``on_nonconvergence: flag``, is stored with
``solver_converged = 0`` and counted in the store's attributes — never silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import kryflow

log = logging.getLogger(__name__)

__all__ = ["generate_dataset", "solver_config", "SOLVER_STATS"]

# per-solve statistics stored along ("sample", "solve")
SOLVER_STATS = {
    "solver_iterations": ("iterations", "Krylov iterations", "1", "int32"),
    "solver_matvecs": ("matvecs", "matrix-vector products incl. recycle-space rebuilds", "1", "int32"),
    "solver_rel_residual": ("rel_residual", "true relative residual ||b-Ax||/||b||", "1", "float64"),
    "solver_seconds": ("seconds", "wall-clock seconds of the solve", "s", "float64"),
    "solver_recycle_dim": ("recycle_dim", "recycle-space dimension", "1", "int32"),
    "solver_converged": ("converged", "1 if the solve met its tolerance", "1", "int8"),
}


def solver_config(fam: Any, solver: Mapping[str, Any] | None) -> dict[str, Any]:
    """``SequenceSolver`` arguments for family ``fam``: method ``"auto"`` (the default) becomes the
    measured fastest strategy for the family and size (``kryflow.solvers.default_strategy``)."""
    from kryflow.solvers import default_strategy

    cfg = dict(solver or {})
    if cfg.get("method", "auto") == "auto":
        strategy = default_strategy(fam)
        cfg["method"] = strategy["method"]
        cfg.setdefault("preconditioner", strategy["preconditioner"])
    return cfg


def _variables(fam: Any) -> dict:
    from kryflow.data import VariableSpec

    variables = {
        name: VariableSpec(dims=tuple(spec["dims"]), long_name=spec["long_name"], units=spec["units"],
                           role=spec["role"], dtype="float32")
        for name, spec in fam.variables().items()
    }
    for var, (_, long_name, units, dtype) in SOLVER_STATS.items():
        variables[var] = VariableSpec(dims=("solve",), long_name=long_name, units=units, role="solver_stat",
                                      dtype=dtype)
    return variables


def _coords(fam: Any) -> dict:
    coords = {k: ((k,), np.asarray(v), {"units": "1", "long_name": f"{k} (cell centre)"})
              for k, v in fam.coords().items()}
    coords.update(fam.extra_coords())
    coords["solve"] = (("solve",), np.arange(int(fam.solves_per_sample)), {"long_name": "solve index within a sample"})
    return coords


class _Totals(dict):
    """Running totals of the solves of a dataset."""

    def __init__(self) -> None:
        super().__init__(iterations=0, matvecs=0, seconds=0.0, flagged=0, max_rel_residual=0.0)

    def add(self, records: list) -> None:
        self["iterations"] += sum(r.iterations for r in records)
        self["matvecs"] += sum(r.matvecs for r in records)
        self["seconds"] += sum(r.seconds for r in records)
        self["flagged"] += sum(0 if r.converged else 1 for r in records)
        self["max_rel_residual"] = max(self["max_rel_residual"], max(r.rel_residual for r in records))


def generate_dataset(
    out_path: str | Path,
    *,
    family: str,
    params: Mapping[str, Any] | None,
    num_samples: int,
    seed: int,
    chunk_samples: int = 16,
    splits=(0.75, 0.125, 0.125),
    split_block: int = 1,
    solver: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    on_sample: Callable[[int, list], None] | None = None,
    overwrite: bool = True,
    progress: bool = True,
) -> dict:
    """Generate one dataset and write it to ``out_path`` (a zarr store).

    Arguments:
        family, params: PDE family name and parameters (see ``kryflow.pdes``).
        num_samples, seed: sequence length and its seed.
        splits: train/val/test fractions, or a string ``"test"`` to put every sample in test.
        split_block: assign runs of this many consecutive samples to one split (see
            ``kryflow.data.assign_splits``); 1 = per sample.
        solver: ``SequenceSolver`` options (method, preconditioner, rtol, ...); method
            ``"auto"`` (the default) takes ``kryflow.solvers.default_strategy(family)``.
        on_sample: called as ``on_sample(index, records)`` after each sample (MLflow logging).

    Returns:
        a summary dict: totals of iterations/matvecs/seconds, flagged solves, digest.
    """
    from tqdm.auto import tqdm

    from kryflow.data import ZarrDatasetWriter, assign_splits, dataset_digest
    from kryflow.pdes import build_family
    from kryflow.solvers import SequenceSolver

    fam = build_family(family, **dict(params or {}))
    solver_cfg = solver_config(fam, solver)
    seq_solver = SequenceSolver(**solver_cfg)
    nsolve = int(fam.solves_per_sample)
    if isinstance(splits, str):
        split_arr = np.array([splits] * num_samples)
    else:
        split_arr = assign_splits(num_samples, tuple(splits), seed=seed, block=split_block)
    attrs = {
        "title": f"kryflow {family} dataset", "pde_family": family, "pde_params": dict(fam.params),
        "solver": {**solver_cfg, "matrix_kind": fam.matrix_kind}, "num_samples": int(num_samples),
        "seed": int(seed), "split_block": int(split_block), "code_version": f"kryflow {kryflow.__version__}",
        **dict(provenance or {}),
    }
    totals = _Totals()
    t0 = time.perf_counter()
    with ZarrDatasetWriter(out_path, coords=_coords(fam), variables=_variables(fam), num_samples=num_samples,
                           chunk_samples=chunk_samples, splits=split_arr, inputs=list(fam.inputs),
                           targets=list(fam.targets), attrs=attrs, nondeterministic=["solver_seconds"],
                           overwrite=overwrite) as writer:
        for sample in tqdm(fam.samples(num_samples, seed), total=num_samples, desc=f"generate {Path(out_path).stem}",
                           disable=not progress, mininterval=2.0):
            outputs = sample.solve(seq_solver)
            records = seq_solver.pop_records()
            if len(records) != nsolve:
                raise RuntimeError(f"family '{family}' made {len(records)} solves for sample {sample.index}, "
                                   f"expected solves_per_sample={nsolve}")
            values = {**sample.fields, **outputs}
            for var, (attr, *_rest) in SOLVER_STATS.items():
                values[var] = np.array([getattr(r, attr) for r in records])
            writer.append(values)
            totals.add(records)
            if on_sample is not None:
                on_sample(sample.index, records)
    totals["wall_seconds"] = time.perf_counter() - t0
    totals["num_samples"] = int(num_samples)
    totals["num_solves"] = int(num_samples * nsolve)
    totals["digest"] = dataset_digest(out_path)
    if totals["flagged"]:
        log.warning("%s: %d solves missed the tolerance and are flagged (solver_converged=0)",
                    out_path, totals["flagged"])
    return dict(totals)
