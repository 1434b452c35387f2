"""Online choice of a solver parameter along a sequence: Tsallis-INF bandits.

A sequence of related systems is a repeated game: before each solve a learner picks one arm (a
value of a parameter such as SSOR's relaxation ω, or one of several strategies), the solve's cost
(iterations or seconds) is the only feedback, and the aim is a total cost close to that of the
best fixed arm in hindsight. Khodak et al. ("Learning to Relax", 2024) show that Tsallis-INF
(Zimmert and Seldin, 2021: follow the regularised leader with the 1/2-Tsallis entropy, optimal in
both the adversarial and the stochastic regime) does this for SSOR-preconditioned CG.

* :class:`TsallisINF`: the learner over ``k`` arms. Costs are scaled to losses in [0, 1] by the
  largest cost seen so far (no bound needs to be known in advance); the loss estimates are the
  importance-weighted, reduced-variance ones of Zimmert and Seldin (baseline 1/2).
* :class:`ContextualTsallisINF`: the same, one learner per context cell, where the context is a
  cheap positive feature of the system (for a matrix: how far it is from diagonal dominance,
  :func:`dominance_feature`) and a cell is a factor ``cell_ratio`` of it (log-spaced bins, found
  as the feature values arrive). Systems that look alike share what was learnt.
* :func:`replay`: run a learner on a table of costs ``(T, k)`` (each arm's cost on each system,
  measured or synthetic) and return its choices and its regret against the best fixed arm.

Everything is seeded, so the same sequence and seed give the same choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["TsallisINF", "ContextualTsallisINF", "dominance_feature", "replay"]


def _tsallis_weights(losses: np.ndarray, eta: float) -> np.ndarray:
    """Probabilities ``p_i = 4 / (eta (L_i - x))^2`` with ``x < min L`` chosen so that they sum to
    one (Newton's method from the left: the sum is increasing and convex in ``x``)."""
    x = float(losses.min()) - 2.0 / eta  # there the smallest term is 1, so the sum is >= 1
    for _ in range(60):
        gap = eta * (losses - x)
        w = 4.0 / gap**2
        f = w.sum() - 1.0
        if abs(f) < 1e-12:
            break
        x -= f / (eta * (w / gap).sum() * 2.0)  # d/dx of 4 (eta (L - x))^-2 = 8 eta / (eta (L - x))^3
    w = 4.0 / (eta * (losses - x)) ** 2
    return w / w.sum()


class TsallisINF:
    """Tsallis-INF over ``arms`` (any labels), learning rate ``rate / sqrt(t)``.

    **Arguments:**
        arms: the choices, e.g. ω values.
        seed: seeds the draws (a ``numpy.random.Generator`` is also accepted).
        rate: the learning-rate constant; 2 is Zimmert and Seldin's worst-case choice for losses
            spread over [0, 1]. Solve costs differ between arms by a few tens of per cent of the
            largest cost, so their losses span a small part of [0, 1] and a larger constant learns
            faster (:class:`~._ssor.SSORPreconditioner` uses 16, chosen on small grids).

    Use :meth:`choose` before a solve and :meth:`observe` with its cost after it; ``history``
    keeps ``(arm index, cost, probability)`` per round.
    """

    def __init__(self, arms: Sequence[Any], seed: int | np.random.Generator = 0, rate: float = 2.0):
        if len(arms) < 1:
            raise ValueError("a bandit needs at least one arm")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        self.arms = list(arms)
        self.rate = float(rate)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        k = len(self.arms)
        self._cost_sum = np.zeros(k)  # sum of cost 1[I_t = i] / p_t,i
        self._inv_prob_sum = np.zeros(k)  # sum of 1[I_t = i] / p_t,i
        self._scale = 0.0
        self._pending: tuple[int, float] | None = None
        self.history: list[tuple[int, float, float]] = []

    @property
    def rounds(self) -> int:
        return len(self.history)

    def probabilities(self) -> np.ndarray:
        """The distribution the next choice is drawn from."""
        k = len(self.arms)
        if self._scale == 0.0:
            return np.full(k, 1.0 / k)
        losses = self._cost_sum / self._scale - 0.5 * self._inv_prob_sum  # baseline 1/2 (reduced variance)
        return _tsallis_weights(losses, self.rate / math.sqrt(self.rounds + 1))

    def choose(self) -> int:
        """Draw the arm of the next round; returns its index into ``arms``."""
        p = self.probabilities()
        i = int(self._rng.choice(len(p), p=p))
        self._pending = (i, float(p[i]))
        return i

    def observe(self, cost: float) -> None:
        """The cost (>= 0; lower is better) of the arm :meth:`choose` returned."""
        if self._pending is None:
            raise RuntimeError("observe() without a choose() before it")
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"a cost must be a finite number >= 0, got {cost!r}")
        i, p = self._pending
        self._pending = None
        self._scale = max(self._scale, float(cost))
        self._cost_sum[i] += cost / p
        self._inv_prob_sum[i] += 1.0 / p
        self.history.append((i, float(cost), p))

    def estimated_regret(self, min_plays: int = 3) -> float:
        """The cost paid so far minus what the best-looking arm would have cost: rounds x the
        smallest mean observed cost among arms played at least ``min_plays`` times (a plug-in
        estimate; the importance-weighted totals are unbiased per arm, but their minimum over
        arms is far too low while rare arms have few plays). The true regret needs every arm's
        cost on every system (:func:`replay` on a measured table). NaN before any arm has
        ``min_plays`` plays."""
        idx = np.array([i for i, _, _ in self.history], dtype=int)
        cost = np.array([c for _, c, _ in self.history])
        means = [cost[idx == i].mean() for i in range(len(self.arms)) if np.sum(idx == i) >= min_plays]
        if not means:
            return float("nan")
        return float(cost.sum() - len(cost) * min(means))


class ContextualTsallisINF:
    """One :class:`TsallisINF` per context cell: the context is a positive feature of the system,
    binned by factors of ``cell_ratio`` (cell ``floor(log(feature) / log(cell_ratio))``).

    **Arguments:**
        arms, seed, rate: as :class:`TsallisINF` (one generator drives every cell's draws).
        cell_ratio: > 1, the width of a cell as a factor of the feature.
    """

    def __init__(self, arms: Sequence[Any], seed: int | np.random.Generator = 0, rate: float = 2.0,
                 cell_ratio: float = 2.0):
        if not cell_ratio > 1.0:
            raise ValueError(f"cell_ratio must be > 1, got {cell_ratio!r}")
        self.arms = list(arms)
        self.rate = rate
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._log_ratio = math.log(cell_ratio)
        self.cells: dict[int, TsallisINF] = {}
        self._current: TsallisINF | None = None
        self.history: list[tuple[int, float, float]] = []

    def cell(self, feature: float) -> int:
        if not (math.isfinite(feature) and feature > 0):
            raise ValueError(f"a context feature must be a finite number > 0, got {feature!r}")
        return math.floor(math.log(feature) / self._log_ratio)

    def choose(self, feature: float) -> int:
        """The arm index for a system whose feature is ``feature``."""
        c = self.cell(feature)
        if c not in self.cells:
            self.cells[c] = TsallisINF(self.arms, self._rng, self.rate)
        self._current = self.cells[c]
        return self._current.choose()

    def observe(self, cost: float) -> None:
        if self._current is None:
            raise RuntimeError("observe() without a choose() before it")
        self._current.observe(cost)
        self.history.append(self._current.history[-1])
        self._current = None

    def estimated_regret(self) -> float:
        """Sum over cells of each cell's estimated regret (against the best arm per cell; cells
        without an estimate yet count 0)."""
        return float(sum(np.nan_to_num(b.estimated_regret()) for b in self.cells.values()))


def dominance_feature(A: Any) -> float:
    """``1 - mean_i(sum_{j != i} |a_ij| / a_ii)``: how far the rows of ``A`` are from losing
    diagonal dominance (near 1: close to the identity, where ω = 1 is best; near 0: a stiff
    operator, where over-relaxation pays). One pass over the entries; > 0 for the M-matrices of
    the families, floored at 1e-12 otherwise."""
    A = A.tocsr() if sp.issparse(A) else sp.csr_matrix(A)
    d = A.diagonal()
    off = np.asarray(abs(A).sum(axis=1)).ravel() - np.abs(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d != 0, off / np.abs(d), np.inf)
    return max(1.0 - float(np.mean(ratio)), 1e-12)


def replay(costs: np.ndarray, learner: Any, features: Sequence[float] | None = None) -> dict[str, Any]:
    """Run ``learner`` (a fresh :class:`TsallisINF` or :class:`ContextualTsallisINF`) on a cost
    table ``(T, k)``: round t costs ``costs[t, chosen arm]``.

    **Returns:** ``choices`` ``(T,)``, ``cost`` (the learner's total), ``best_fixed`` (the
    smallest column total) and its arm, ``regret`` ``(T,)`` (cumulative cost minus the best fixed
    arm's cumulative cost up to t, judged at the end's best arm) and ``regret_per_round``
    (``regret[-1] / T``).
    """
    costs = np.asarray(costs, dtype=float)
    if costs.ndim != 2:
        raise ValueError(f"costs must be a (T, k) table, got shape {costs.shape}")
    if features is not None and len(features) != costs.shape[0]:
        raise ValueError(f"{len(features)} features for {costs.shape[0]} rounds")
    choices = np.empty(costs.shape[0], dtype=int)
    for t in range(costs.shape[0]):
        i = learner.choose(features[t]) if features is not None else learner.choose()
        learner.observe(float(costs[t, i]))
        choices[t] = i
    paid = costs[np.arange(costs.shape[0]), choices]
    best = int(np.argmin(costs.sum(axis=0)))
    regret = np.cumsum(paid) - np.cumsum(costs[:, best])
    return {"choices": choices, "cost": float(paid.sum()), "best_fixed": float(costs[:, best].sum()),
            "best_arm": best, "regret": regret, "regret_per_round": float(regret[-1] / costs.shape[0])}
