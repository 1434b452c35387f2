"""One of several solver strategies per system, chosen online: ``solver.method: choose``.

A :class:`StrategyChoice` holds one :class:`~._sequence.SequenceSolver` per strategy (each with its
own carried state: factors, set-ups, recycle spaces) and a Tsallis-INF bandit (:mod:`._bandit`)
that picks the strategy of each new system from the wall seconds of the solves so far (one-time
set-up seconds left out: a strategy is not judged by loading its library): the second
use of "Learning to Relax" (Khodak et al.), where the arms are whole strategies instead of ω.
Seconds are the only cost that compares strategies (a direct solve has no iterations).

The choice is made per matrix, not per solve: the solves that share one matrix (the time steps
of a heat trajectory) go to the strategy chosen for it, and their summed cost is its feedback, so
that a strategy whose set-up serves many solves (a factorization) is judged on what it costs over
all of them (measured: chosen per solve, the learner penalised CHOLMOD for refactorizing after every
switch and settled on Jacobi-PCG, 4.6x slower on heat CN 100²). A strategy that was not chosen for
the previous matrix is told the matrix changed; the warm start is the sequence's previous
solution, whichever strategy found it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from kryflow._registry import Param, ParameterError

from ._bandit import TsallisINF
from ._common import SolveInfo
from ._methods import COMMON_OPTIONS, check_solver_options
from ._sequence import SequenceSolver

__all__ = ["StrategyChoice", "CHOICE_OPTIONS", "check_choice"]

# the options of method "choose" besides its strategies; the common solver options (rtol, maxiter,
# ...) given beside them apply to every strategy
CHOICE_PARAMS = {"choose_seed": Param.integer(0, 0, doc="seed of the strategy learner's draws"),
                 "choose_rate": Param.number(16.0, 0.0, low_open=True,
                                             doc="learning-rate constant of the strategy learner")}
CHOICE_OPTIONS = ("strategies", *CHOICE_PARAMS)


def check_choice(solver: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The strategies of a ``method: choose`` config, each checked and with the shared options
    (``rtol``, ``maxiter``, ... given beside ``strategies``) filled in. Raises
    :class:`ParameterError` naming the key (``strategies``, ``strategies.<i>.<option>``,
    ``choose_seed``, ``choose_rate``)."""
    strategies = solver.get("strategies")
    if not isinstance(strategies, (list, tuple)) or len(strategies) < 2:
        raise ParameterError(f"method 'choose' needs a list of at least 2 strategies ({{method, preconditioner, "
                             f"...}} each), got {strategies!r}", "strategies")
    for key, param in CHOICE_PARAMS.items():
        param.validate(key, solver.get(key, param.default))
    stray = [k for k in solver if k not in (*COMMON_OPTIONS, *CHOICE_OPTIONS, "method", "order", "initial_guess",
                                            "surrogate")]
    if stray:
        raise ParameterError(f"{stray[0]!r} beside method 'choose' applies to no strategy; give it inside the "
                             f"strategies that take it (shared here are only {', '.join(COMMON_OPTIONS)})", stray[0])
    shared = {k: v for k, v in solver.items() if k in COMMON_OPTIONS}
    out = []
    for i, strat in enumerate(strategies):
        if not isinstance(strat, Mapping) or strat.get("method", "auto") in ("auto", "choose"):
            raise ParameterError(f"strategy {i} must name its method (not auto or choose), got {strat!r}",
                                 f"strategies.{i}.method")
        cfg = {**shared, **strat}
        cfg.setdefault("preconditioner", "none")
        try:
            check_solver_options(cfg["method"], cfg["preconditioner"], cfg)
        except ParameterError as exc:
            raise ParameterError(f"strategy {i}: {exc}", f"strategies.{i}.{exc.param}") from None
        out.append(cfg)
    return out


def steady_seconds(info: SolveInfo) -> float:
    """A solve's seconds without its one-time set-up (a strategy is not judged by loading its library)."""
    return max(float(info.seconds - info.setup_seconds), 0.0)


class StrategyChoice:
    """Solve a sequence choosing, per system, one of ``strategies`` (SequenceSolver arguments).

    **Arguments:**
        strategies: at least two dicts of :class:`SequenceSolver` arguments.
        seed, rate: the bandit's seed and learning-rate constant (:class:`~._bandit.TsallisINF`).
        cost: ``cost(info) -> float`` of a solve (default :func:`steady_seconds`: its seconds less
            one-time set-up).

    Called like a :class:`SequenceSolver` (``x = choice(A, b, matrix_changed=...)``); each solve's
    :class:`SolveInfo` is appended to ``records`` with ``parameter`` = the index of the strategy
    used and ``regret_estimate`` the bandit's estimate so far (seconds, per matrix). A new
    choice is made when the matrix changes; the learner is told a matrix's cost when the next
    matrix arrives.
    """

    def __init__(self, strategies: Sequence[Mapping[str, Any]], seed: int = 0, rate: float = 16.0,
                 cost: Callable[[SolveInfo], float] | None = None):
        if len(strategies) < 2:
            raise ValueError(f"StrategyChoice needs at least 2 strategies, got {len(strategies)}")
        self.solvers = [SequenceSolver(**cfg) for cfg in strategies]  # each checks its own options
        self.labels = [f"{s.method}+{s.preconditioner}" for s in self.solvers]
        self.learner = TsallisINF(self.labels, seed, rate)
        self.cost = cost or steady_seconds
        self.method, self.preconditioner = "choose", "none"
        self.warm_start = any(s.warm_start for s in self.solvers)
        self.records: list[SolveInfo] = []
        self._popped = 0
        self._matrix = 0  # how many distinct matrices so far
        self._seen = [-1] * len(self.solvers)  # the matrix each strategy last solved with
        self._x: np.ndarray | None = None
        self._current: int | None = None  # the strategy of the current matrix
        self._pending = 0.0  # its cost on the current matrix so far

    @classmethod
    def from_config(cls, solver: Mapping[str, Any]) -> StrategyChoice:
        """The choice a ``method: choose`` config describes (checked by :func:`check_choice`)."""
        return cls(check_choice(solver), *(solver.get(k, p.default) for k, p in CHOICE_PARAMS.items()))

    def __repr__(self) -> str:
        return f"StrategyChoice({self.labels})"

    def pop_records(self) -> list[SolveInfo]:
        out = self.records[self._popped:]
        self._popped = len(self.records)
        return out

    def __call__(self, A, b, *, matrix_changed: bool, x0: np.ndarray | None = None) -> np.ndarray:
        if matrix_changed or self._current is None:
            self._matrix += 1
            if self._current is not None:
                self.learner.observe(self._pending)
            self._current, self._pending = self.learner.choose(), 0.0
        i = self._current
        solver = self.solvers[i]
        changed = self._seen[i] != self._matrix
        start = x0
        # a strategy that keeps its matrix starts from its own previous solutions (its start_window)
        if start is None and changed and solver.warm_start and self._x is not None and self._x.shape == np.shape(b):
            start = self._x
        x = solver(A, b, matrix_changed=changed, x0=start)
        self._seen[i] = self._matrix
        info = solver.records[-1]
        self._pending += float(self.cost(info))
        info.parameter, info.parameter_name = float(i), "strategy"
        info.regret_estimate = self.learner.estimated_regret()
        self.records.append(info)
        if np.all(np.isfinite(x)):
            self._x = np.asarray(x, dtype=np.float64).copy()
        return x
