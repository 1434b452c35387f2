"""Offline generation: a PDE family's samples, drawn and solved by the one per-index generator
(:class:`~kryflow.generation.SampleGenerator`), streamed into a zarr store with per-solve
statistics; sharded generation writes parts that :func:`kryflow.data.merge_dataset` joins.

What a dataset holds is decided by the family, its parameters and the seed: every sample's
random draws come from (seed, sample index) alone (see ``PDEFamily.samples``). The solver, the
solve order (``solver.order``: as sampled, or a nearest-neighbour chain of the inputs so that
recycling meets similar neighbours) and the split into shards only change how fast it is made;
the store keeps sample order and records how each sample was solved (``solve_position``,
``shard``, the per-solve statistics). A solve that misses its tolerance either raises (default)
or, with ``on_nonconvergence: flag``, is stored with ``solver_converged = 0`` and counted.

One-time costs (the compiled kernels' first load, symbolic analyses and set-ups reused by later
solves, the solve-order computation) are kept apart from per-solve time, so that the solver's
steady-state cost per sample is what the statistics say.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import kryflow

log = logging.getLogger(__name__)

__all__ = ["generate_dataset", "shard_range", "solve_stats", "SOLVER_STATS",
           "LEARNER_STATS", "CHOICE_STATS", "SAMPLE_STATS"]

# per-solve statistics stored along ("sample", "solve"): store name -> (SolveInfo field, long name, units, dtype)
SOLVER_STATS = {
    "solver_iterations": ("iterations", "Krylov iterations", "1", "int32"),
    "solver_matvecs": ("matvecs", "matrix-vector products incl. recycle-space rebuilds", "1", "int32"),
    "solver_rel_residual": ("rel_residual", "true relative residual ||b-Ax||/||b||", "1", "float64"),
    "solver_seconds": ("seconds", "wall-clock seconds of the solve, its one-time set-up included", "s", "float64"),
    "solver_setup_seconds": ("setup_seconds", "one-time set-up within the solve (symbolic analysis, set-ups "
                             "reused by later solves), part of solver_seconds", "s", "float64"),
    "solver_recycle_dim": ("recycle_dim", "recycle-space dimension", "1", "int32"),
    "solver_converged": ("converged", "1 if the solve met its tolerance", "1", "int8"),
}
# per-solve statistics of the SSOR preconditioner: its ω and, with omega: learn, the learner's regret
LEARNER_STATS = {
    "solver_omega": ("parameter", "SSOR relaxation omega of the solve (chosen per solve with omega: learn)", "1",
                     "float64"),
    "solver_regret_estimate": ("regret_estimate", "omega learner's estimated regret after the solve: its cost so far "
                               "minus the best fixed omega's estimated cost (NaN: fixed omega)", "1", "float64"),
}
# per-solve statistics of method: choose (one of several strategies per system, chosen online)
CHOICE_STATS = {
    "solver_strategy": ("parameter", "index of the strategy that solved it (the store's solver.strategies)", "1",
                        "float64"),
    "solver_regret_estimate": ("regret_estimate", "strategy learner's estimated regret after the solve, in seconds",
                               "s", "float64"),
}
# per-sample record of how it was solved: store name -> (long name, dtype)
SAMPLE_STATS = {
    "solve_position": ("position of the sample in its shard's solve order", "int32"),
    "shard": ("generation shard that solved the sample", "int16"),
}
_RELATION_NOTE = {
    "iid": "independent samples: every sample's draws come from (seed, sample index) alone",
    "drift": "a correlated path: each sample's white noise is cos(drift_angle) x the previous one's plus "
             "sin(drift_angle) x fresh noise, so neighbouring samples correlate at cos(drift_angle)",
}


def shard_range(num_samples: int, chunk_samples: int, shards: int, shard: int) -> tuple[int, int]:
    """Samples ``[start, stop)`` of shard ``shard`` of ``shards``: contiguous blocks of whole
    chunks, as even as the chunks allow, so no two shards write one chunk."""
    chunks = -(-num_samples // chunk_samples)
    if not 1 <= shards <= chunks:
        raise ValueError(f"shards must be between 1 and the number of chunks ({chunks}), got {shards}")
    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard}")
    bounds = [round(i * chunks / shards) * chunk_samples for i in range(shards + 1)]
    return min(bounds[shard], num_samples), min(bounds[shard + 1], num_samples)


def solve_stats(solver_cfg: Mapping[str, Any]) -> dict:
    """The per-solve statistics a store keeps: :data:`SOLVER_STATS`, and :data:`LEARNER_STATS` for
    the SSOR preconditioner or :data:`CHOICE_STATS` for ``method: choose``."""
    if solver_cfg.get("method") == "choose":
        return {**SOLVER_STATS, **CHOICE_STATS}
    return {**SOLVER_STATS, **(LEARNER_STATS if solver_cfg.get("preconditioner") == "ssor" else {})}


def _variables(fam: Any, stats: Mapping[str, tuple]) -> dict:
    from kryflow.data import VariableSpec

    variables = {
        name: VariableSpec(dims=tuple(spec["dims"]), long_name=spec["long_name"], units=spec["units"],
                           role=spec["role"], dtype="float32")
        for name, spec in fam.variables().items()
    }
    for var, (_, long_name, units, dtype) in stats.items():
        variables[var] = VariableSpec(dims=("solve",), long_name=long_name, units=units, role="solver_stat",
                                      dtype=dtype)
    for var, (long_name, dtype) in SAMPLE_STATS.items():
        variables[var] = VariableSpec(dims=(), long_name=long_name, units="1", role="solver_stat", dtype=dtype)
    return variables


def _coords(fam: Any) -> dict:
    coords = {k: ((k,), np.asarray(v), {"units": "1", "long_name": f"{k} (cell centre)"})
              for k, v in fam.coords().items()}
    coords.update(fam.extra_coords())
    coords["solve"] = (("solve",), np.arange(int(fam.solves_per_sample)), {"long_name": "solve index within a sample"})
    return coords


class _Totals(dict):
    """Running totals of the solves of a dataset (or of one shard)."""

    def __init__(self) -> None:
        super().__init__(iterations=0, matvecs=0, seconds=0.0, setup_seconds=0.0, flagged=0, max_rel_residual=0.0)

    def add(self, records: list) -> None:
        self["iterations"] += sum(r.iterations for r in records)
        self["matvecs"] += sum(r.matvecs for r in records)
        self["seconds"] += sum(r.seconds for r in records)
        self["setup_seconds"] += sum(getattr(r, "setup_seconds", 0.0) for r in records)
        self["flagged"] += sum(0 if r.converged else 1 for r in records)
        self["max_rel_residual"] = max(self["max_rel_residual"], max(r.rel_residual for r in records))


def _solved(gen: Any, samples: Iterable, start: int, shard: int, on_sample, totals: _Totals,
            stats: Mapping[str, tuple]):
    """Solve ``samples`` (in solve order) with the generator ``gen``; yield each sample's values in
    storage order as soon as the samples before it are done (memory: the samples solved ahead of
    the next one to store)."""
    pending: dict[int, dict] = {}
    next_index = start
    for solved in gen.solve_all(samples):
        records = solved.records
        values = {**solved.inputs, **solved.outputs, "solve_position": solved.position, "shard": shard}
        for var, (attr, *_rest) in stats.items():
            values[var] = np.array([getattr(r, attr, 0.0) for r in records])
        pending[solved.index] = values
        totals.add(records)
        if on_sample is not None:
            on_sample(solved.index, records)
        while next_index in pending:
            yield pending.pop(next_index)
            next_index += 1


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
    shards: int = 1,
    shard: int = 0,
) -> dict:
    """Generate a dataset (or, with ``shards > 1``, the part ``shard`` of it) into ``out_path``.

    Arguments:
        family, params: PDE family name and parameters (see ``kryflow.pdes``).
        num_samples, seed: dataset size and seed (sample k is the same whatever the shard).
        splits: train/val/test fractions, or a string ``"test"`` to put every sample in test.
        split_block: assign runs of this many consecutive samples to one split (see
            ``kryflow.data.assign_splits``); 1 = per sample.
        solver: ``SequenceSolver`` options (method, preconditioner, rtol, ...) and ``order``
            (``"as_sampled"`` or ``"similarity"``); method ``"auto"`` (the default) takes
            ``kryflow.solvers.default_strategy(family)``. ``initial_guess``: ``"zero"``,
            ``"previous"`` or ``"surrogate"`` with ``surrogate`` a trained model (run folder,
            ``model.pt``, MLflow model URI; see :mod:`kryflow.generation._surrogate_start`), loaded and
            checked against the family before any solve, its inference counted in the solves' seconds.
        shards, shard: write the chunk-aligned block ``shard_range(...)`` as a part store (its
            ``sample`` coordinate keeps the dataset's indices); :func:`kryflow.data.merge_dataset` joins them.
        on_sample: called as ``on_sample(index, records)`` after each sample, in solve order.

    Returns:
        a summary dict: totals of iterations/matvecs/seconds (one-time set-up included) and
        ``one_time_seconds``, flagged solves, digest.
    """
    from tqdm.auto import tqdm

    from kryflow.data import ZarrDatasetWriter, dataset_digest

    from ._sampler import SampleGenerator, in_solve_order

    gen = SampleGenerator(family, params, seed, solver)  # a surrogate start is checked before any solve
    fam, solver_cfg, start_model = gen.family, gen.solver_config, gen.start_model
    order_kind = _order_kind(solver)
    start, stop = shard_range(num_samples, chunk_samples, shards, shard)
    split_arr = _split_array(num_samples, splits, seed, split_block)
    totals = _Totals()
    t0 = time.perf_counter()
    warm = gen.warm_up()  # the compiled kernels the chosen strategy runs: a one-time cost
    samples, order_seconds = in_solve_order(order_kind, fam.samples(num_samples, seed, start, stop))
    attrs = _store_attrs(fam, {**solver_cfg, "order": order_kind, **_start_attrs(solver, start_model)}, num_samples,
                         seed, split_block, provenance)
    if shards > 1:
        attrs["dataset_part"] = {"shard": shard, "shards": shards, "start": start, "stop": stop,
                                 "num_samples": int(num_samples)}
    stats = solve_stats(solver_cfg)
    variables = _variables(fam, stats)
    with ZarrDatasetWriter(out_path, coords=_coords(fam), variables=variables, num_samples=stop - start,
                           chunk_samples=chunk_samples, splits=split_arr[start:stop], inputs=list(fam.inputs),
                           targets=list(fam.targets), attrs=attrs, overwrite=overwrite, first_sample=start,
                           nondeterministic=[v for v, spec in variables.items() if spec.role == "solver_stat"],
                           ) as writer:
        for values in tqdm(_solved(gen, samples, start, shard, on_sample, totals, stats), total=stop - start,
                           desc=f"generate {Path(out_path).stem}", disable=not progress, mininterval=2.0):
            writer.append(values)
        one_time = _one_time(warm, order_seconds, totals["setup_seconds"], start_model)
        writer.attrs.update(one_time)
    totals.update(one_time, wall_seconds=time.perf_counter() - t0, num_samples=stop - start,
                  num_solves=(stop - start) * int(fam.solves_per_sample), digest=dataset_digest(out_path))
    if totals["flagged"]:
        log.warning("%s: %d solves missed the tolerance and are flagged (solver_converged=0)",
                    out_path, totals["flagged"])
    return dict(totals)


def _order_kind(solver: Mapping[str, Any] | None) -> str:
    from ._order import ORDERS

    order_kind = dict(solver or {}).get("order", "as_sampled")
    if order_kind not in ORDERS:
        raise ValueError(f"solver.order must be one of {ORDERS}, got {order_kind!r}")
    return order_kind


def _split_array(num_samples: int, splits: Any, seed: int, split_block: int) -> np.ndarray:
    """Every sample's split: ``splits`` fractions assigned in blocks, or one split name for all."""
    from kryflow.data import assign_splits

    if isinstance(splits, str):
        return np.array([splits] * num_samples)
    return assign_splits(num_samples, tuple(splits), seed=seed, block=split_block)


def _store_attrs(fam: Any, solver: Mapping[str, Any], num_samples: int, seed: int, split_block: int,
                 provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    """A store's attributes: what was drawn (family, parameters, how samples relate, seed), how it
    was solved, the code version and the caller's provenance."""
    relation = fam.params["relation"]
    return {
        "title": f"kryflow {fam.name} dataset", "pde_family": fam.name, "pde_params": dict(fam.params),
        "sample_relation": relation, "sample_relation_note": _RELATION_NOTE[relation],
        "solver": {**solver, "matrix_kind": fam.matrix_kind}, "num_samples": int(num_samples),
        "seed": int(seed), "split_block": int(split_block), "code_version": f"kryflow {kryflow.__version__}",
        **dict(provenance or {}),
    }


def _start_attrs(solver: Mapping[str, Any] | None, start_model: Any) -> dict[str, Any]:
    """How solves started, for the store's ``solver`` attribute (nothing when not configured)."""
    guess = dict(solver or {}).get("initial_guess")
    if guess is None:
        return {}
    return {"initial_guess": guess, **({"surrogate": start_model.label} if start_model is not None else {})}


def _one_time(warm_up: float, order: float, setup: float, start_model: Any = None) -> dict[str, float]:
    out = {"solver_warm_up_seconds": warm_up, "solve_order_seconds": order, "solver_setup_seconds": setup,
           "solver_one_time_seconds": warm_up + order + setup}
    if start_model is not None:  # loading the surrogate of a surrogate start and its first inference
        out["surrogate_load_seconds"] = start_model.load_seconds
        out["solver_one_time_seconds"] += start_model.load_seconds
    return out
