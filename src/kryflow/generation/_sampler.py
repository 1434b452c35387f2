"""The one per-index sample generator: the sample of ``(family, params, seed)`` at an index, drawn
and solved by a sequence solver that keeps its state (warm starts, solution windows, recycle
spaces, factorizations) from one solve to the next over a block of indices.

Offline generation (:func:`~kryflow.generation.generate_dataset`) writes what it hands on into a
store; the online stream (:class:`~kryflow.generation.OnlineStream`) hands it to a trainer. Both
draw sample ``k`` from ``(seed, k)`` alone, so a streamed sample is the stored one of that index
(inputs value for value, outputs within the solver's tolerance: the solver's state, and so the
start of each solve, depends on which samples it solved before).

Nothing here imports torch or the storage layer: a generator process of the stream loads only the
PDE families and the solvers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SampleGenerator", "SolvedSample", "in_solve_order", "solver_config"]


@dataclass
class SolvedSample:
    """One sample, drawn and solved.

    **Attributes:**
        index: the sample index in the sequence ``(family, params, seed)``.
        position: its place in the generator's solve order (0 for the first sample solved).
        inputs: the family's input fields, name -> grid-shaped float64 array.
        outputs: every output variable (grid-shaped, time-major where it has a ``time`` dimension).
        records: the :class:`~kryflow.solvers.SolveInfo` of its solves, in order
            (``solves_per_sample`` of them).
    """

    index: int
    position: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    records: list = field(default_factory=list)

    @property
    def converged(self) -> bool:
        """Whether every solve met its tolerance."""
        return all(r.converged for r in self.records)

    @property
    def max_rel_residual(self) -> float:
        return max((float(r.rel_residual) for r in self.records), default=0.0)

    @property
    def seconds(self) -> float:
        """Seconds of its solves (one-time set-ups included)."""
        return float(sum(r.seconds for r in self.records))


class SampleGenerator:
    """Draws and solves the samples of one sequence ``(family, params, seed)`` at any indices, with
    one sequence solver whose state carries from each solve to the next (final).

    **Arguments:**
        family, params: PDE family name and parameters (:func:`kryflow.pdes.build_family`).
        seed: the sequence's seed; sample ``k`` draws from ``(seed, k)`` alone.
        solver: a dataset's ``solver`` section (method ``auto`` resolved by
            :func:`~kryflow.generation.solver_config`; ``order``, ``initial_guess``, ``surrogate``).
        start_model: a checked surrogate (:func:`~kryflow.generation.load_start_model`) for
            ``initial_guess: surrogate``; loaded here from ``solver.surrogate`` when None.
        on_nonconvergence: overrides ``solver.on_nonconvergence`` (the stream flags a solve that
            misses its tolerance and drops the sample, instead of raising).

    **Attributes:** ``family`` (the built family), ``solver_config`` (the resolved strategy),
    ``start_model`` (None without a surrogate start), ``sequence_solver``.
    """

    def __init__(self, family: str, params: Mapping[str, Any] | None, seed: int,
                 solver: Mapping[str, Any] | None = None, *, start_model: Any = None,
                 on_nonconvergence: str | None = None):
        from kryflow.pdes import build_family

        self.family = build_family(family, **dict(params or {}))
        self.seed = int(seed)
        self.solver = dict(solver or {})
        self.solver_config = solver_config(self.family, self.solver)
        if on_nonconvergence is not None:
            self.solver_config["on_nonconvergence"] = on_nonconvergence
        self.start_model = start_model if start_model is not None else _start_model(self.family, self.solver,
                                                                                   self.solver_config)
        self.sequence_solver = _sequence_solver(self.solver_config, self.start_model)
        self.solves_per_sample = int(self.family.solves_per_sample)
        self._position = 0

    def warm_up(self) -> float:
        """Load the compiled kernels the strategy runs (a one-time cost); returns its seconds."""
        from kryflow.solvers import warm_up

        return warm_up([self.solver_config], self.family.shape)

    def draw(self, start: int, stop: int) -> Iterator[Any]:
        """The samples ``start .. stop-1`` (:class:`~kryflow.pdes.Sample`: inputs drawn, not solved)."""
        return self.family.samples(int(stop), self.seed, int(start), int(stop))

    def solve(self, sample: Any) -> SolvedSample:
        """Solve one drawn sample with the sequence solver (its state carries on to the next)."""
        seq = self.sequence_solver
        # a surrogate start predicts the sample's solution from its inputs first
        outputs = sample.solve(seq.for_sample(sample, self.solves_per_sample) if hasattr(seq, "for_sample") else seq)
        records = seq.pop_records()
        if len(records) != self.solves_per_sample:
            raise RuntimeError(f"family '{self.family.name}' made {len(records)} solves for sample {sample.index}, "
                               f"expected solves_per_sample={self.solves_per_sample}")
        solved = SolvedSample(int(sample.index), self._position, dict(sample.fields), outputs, records)
        self._position += 1
        return solved

    def solve_all(self, samples: Iterable[Any]) -> Iterator[SolvedSample]:
        """Solve ``samples`` in the order given."""
        for sample in samples:
            yield self.solve(sample)

    def block(self, start: int, stop: int, order: str = "as_sampled") -> tuple[Iterator[SolvedSample], float]:
        """The samples ``start .. stop-1`` solved in ``order`` (``as_sampled``, or ``similarity``: a
        nearest-neighbour chain of their inputs, :func:`~kryflow.generation.solve_order`).

        **Returns:** the solved samples in solve order (lazily), and the seconds spent finding the
        order (0 for ``as_sampled``, which streams the block without holding it)."""
        samples, seconds = in_solve_order(order, self.draw(start, stop))
        return self.solve_all(samples), seconds


def solver_config(fam: Any, solver: Mapping[str, Any] | None) -> dict[str, Any]:
    """``SequenceSolver`` arguments for family ``fam``: method ``"auto"`` (the default) becomes the
    measured fastest strategy for the family and size (``kryflow.solvers.default_strategy``);
    ``order`` (how samples are sequenced, not a solver option) is left out, and so are
    ``initial_guess`` and ``surrogate`` (how solves start: ``warm_start``, see
    :func:`~._surrogate_start.initial_guess_options`)."""
    from kryflow.solvers import default_strategy

    from ._surrogate_start import START_KEYS, check_start_method, initial_guess_options

    cfg = {k: v for k, v in dict(solver or {}).items() if k not in ("order", *START_KEYS)}
    cfg.update(initial_guess_options(solver))
    if cfg.get("method") == "choose":  # one of several strategies per system (kryflow.solvers.StrategyChoice)
        return cfg
    if cfg.get("method", "auto") == "auto":
        strategy = default_strategy(fam)
        cfg["method"] = strategy["method"]
        cfg.setdefault("preconditioner", strategy["preconditioner"])
        if "warm_start" in strategy:
            cfg.setdefault("warm_start", strategy["warm_start"])
    if dict(solver or {}).get("initial_guess") == "surrogate":
        check_start_method(cfg["method"])
    return cfg


def _sequence_solver(solver_cfg: Mapping[str, Any], start_model: Any) -> Any:
    """The sequence solver of ``solver_cfg`` (``method: choose``: a strategy choice), started from a
    surrogate's predictions where ``start_model`` is given."""
    from kryflow.solvers import make_sequence_solver

    from ._surrogate_start import SurrogateStart

    seq_solver = make_sequence_solver(dict(solver_cfg))
    return seq_solver if start_model is None else SurrogateStart(seq_solver, start_model)


def _start_model(fam: Any, solver: Mapping[str, Any] | None, solver_cfg: Mapping[str, Any]) -> Any:
    """The checked surrogate of ``solver.initial_guess: surrogate`` (None for other starts)."""
    from ._surrogate_start import load_start_model

    solver = dict(solver or {})
    if solver.get("initial_guess") != "surrogate":
        return None
    return load_start_model(solver["surrogate"], fam, threads=solver_cfg.get("blas_threads", 1))


def in_solve_order(kind: str, samples: Iterable[Any]) -> tuple[Iterable[Any], float]:
    """The samples in solve order, and the seconds it took to find it. ``as_sampled`` streams them;
    ``similarity`` holds the block's inputs to chain them by nearest neighbours."""
    from ._order import ORDERS, input_sketch, solve_order

    if kind not in ORDERS:
        raise ValueError(f"solver.order must be one of {ORDERS}, got {kind!r}")
    if kind == "as_sampled":
        return samples, 0.0
    samples = list(samples)
    t0 = time.perf_counter()
    order = solve_order(kind, [input_sketch(s.fields) for s in samples])
    return [samples[int(j)] for j in order], time.perf_counter() - t0
