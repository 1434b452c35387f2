"""Symmetric successive over-relaxation (SSOR) as a CG preconditioner: the preconditioner ``"ssor"``,
with its relaxation ω fixed or learnt along the sequence (option ``omega: learn``).

``M = (D/ω + L) (D/ω)^-1 (D/ω + U) / (2 - ω)`` for ``A = L + D + U``: symmetric positive definite
for SPD A and 0 < ω < 2, so CG may use it. Applying ``M^-1`` is a forward and a backward
Gauss–Seidel sweep over the CSR rows (compiled, about two matrix-vector products).

With ``omega: learn`` a Tsallis-INF bandit (:mod:`._bandit`) picks ω from ``omega_grid`` before each
solve and is told the solve's cost afterwards (``omega_feedback``: iterations or seconds); with
``omega_context: dominance`` one bandit per cell of :func:`~._bandit.dominance_feature` (systems
that look alike share what was learnt), as in Khodak et al.'s "Learning to Relax". The ω of each
solve and the learner's running regret estimate are written on the solve's :class:`SolveInfo`
(``parameter``, ``regret_estimate``), and from there into the dataset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numba import njit

from kryflow._registry import Param

from ._bandit import ContextualTsallisINF, TsallisINF, dominance_feature
from ._preconditioners import Preconditioner, _assembled

__all__ = ["SSORPreconditioner", "DEFAULT_OMEGA_GRID", "warm_up"]

DEFAULT_OMEGA_GRID = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9)


@njit(cache=True)
def _ssor_apply(lp, li, lv, up, ui, uv, wd, omega, r, z):
    """``z = M^-1 r`` in place, from the strictly lower (``lp, li, lv``) and strictly upper
    (``up, ui, uv``) triangles in CSR and ``wd = ω / diag A``: the forward sweep solves
    ``(D/ω + L) y = (2 - ω) r``, the backward sweep ``(D/ω + U) z = (D/ω) y``, i.e.
    ``z_i = y_i - (ω / d_i) sum_{j > i} a_ij z_j``."""
    n = r.shape[0]
    scale = 2.0 - omega
    for i in range(n):
        s = scale * r[i]
        for k in range(lp[i], lp[i + 1]):
            s -= lv[k] * z[li[k]]
        z[i] = s * wd[i]
    for i in range(n - 1, -1, -1):
        s = 0.0
        for k in range(up[i], up[i + 1]):
            s += uv[k] * z[ui[k]]
        z[i] -= s * wd[i]


def _omega_value(v: Any) -> bool:
    return v == "learn" or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v < 2.0)


def _omega_grid(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) >= 2 and len(set(v)) == len(v)
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0.0 < w < 2.0 for w in v))


class SSORPreconditioner(Preconditioner, name="ssor"):
    """SSOR with relaxation ω (option ``omega``: a number in (0, 2), or ``"learn"``).

    **Arguments:**
        omega: the relaxation, or ``"learn"``.
        grid: option ``omega_grid``, the values a learner picks from (at least 2, each in (0, 2)).
        feedback: option ``omega_feedback``, the cost the learner minimises: ``"iterations"``
            (machine-independent, the default) or ``"seconds"`` (the solve's wall time).
        context: option ``omega_context``: ``"none"`` or ``"dominance"`` (contextual).
        seed: option ``omega_seed``, seeds the learner's draws (same sequence, same choices).
        rate: option ``omega_rate``, the learner's learning-rate constant (:class:`~._bandit.TsallisINF`;
            16 was chosen on heat Crank–Nicolson 32² and 64² sequences, replaying the learner on their
            measured cost tables, before the larger grids were measured).
    """

    OPTIONS = {
        "omega": Param(1.0, _omega_value, "a number in (0, 2) or 'learn'",
                       doc="SSOR relaxation, or 'learn': chosen per solve by a Tsallis-INF bandit"),
        "omega_grid": Param(list(DEFAULT_OMEGA_GRID), _omega_grid, "a list of at least 2 distinct numbers in (0, 2)",
                            doc="SSOR omega: the values the learner picks from"),
        "omega_feedback": Param.choice("iterations", "iterations", "seconds",
                                       doc="SSOR omega learner: the solve cost it minimises"),
        "omega_context": Param.choice("none", "none", "dominance",
                                      doc="SSOR omega learner: contextual on the matrix's diagonal dominance"),
        "omega_seed": Param.integer(0, 0, doc="SSOR omega learner: seed of its draws"),
        "omega_rate": Param.number(16.0, 0.0, low_open=True,
                                   doc="SSOR omega learner: learning-rate constant (eta_t = rate / sqrt(t))"),
    }

    @classmethod
    def from_options(cls, symmetric: bool, omega: Any = 1.0, omega_grid: Any = DEFAULT_OMEGA_GRID,
                     omega_feedback: str = "iterations", omega_context: str = "none", omega_seed: int = 0,
                     omega_rate: float = 16.0):
        return cls(omega, omega_grid, omega_feedback, omega_context, omega_seed, omega_rate)

    def __init__(self, omega: Any = 1.0, grid: Any = DEFAULT_OMEGA_GRID, feedback: str = "iterations",
                 context: str = "none", seed: int = 0, rate: float = 16.0):
        super().__init__()
        for key, value in (("omega", omega), ("omega_grid", grid), ("omega_feedback", feedback),
                           ("omega_context", context), ("omega_seed", seed), ("omega_rate", rate)):
            self.OPTIONS[key].validate(key, value)
        self.learn = omega == "learn"
        self.omega = float(grid[0]) if self.learn else float(omega)
        self.grid = tuple(float(w) for w in grid)
        self.feedback_kind, self.context = feedback, context
        self.learner: TsallisINF | ContextualTsallisINF | None = None
        if self.learn:
            self.learner = (ContextualTsallisINF(self.grid, seed, rate) if context == "dominance"
                            else TsallisINF(self.grid, seed, rate))
        self._feature = 1.0

    def setup(self, A):
        A = _assembled(A, self.name)
        d = A.diagonal().astype(np.float64)
        if np.any(d <= 0):
            raise ValueError(f"preconditioner 'ssor': A has {int(np.sum(d <= 0))} non-positive diagonal entries; "
                             "SSOR-PCG needs an SPD matrix (use method 'gmres' with 'ilu' or 'gmg' otherwise)")
        lower, upper = sp.tril(A, -1, format="csr"), sp.triu(A, 1, format="csr")
        self._arrays = (lower.indptr, lower.indices, np.asarray(lower.data, dtype=np.float64),
                        upper.indptr, upper.indices, np.asarray(upper.data, dtype=np.float64))
        self._diag = d
        self._wd_omega = None
        if self.learn and self.context == "dominance":
            self._feature = dominance_feature(A)

    def update(self, A, matrix_changed):
        rebuilt = super().update(A, matrix_changed)
        if self.learn:  # a new choice for every system, also when only the right-hand side changed
            i = self.learner.choose(self._feature) if self.context == "dominance" else self.learner.choose()
            self.omega = self.grid[i]
        return rebuilt

    def feedback(self, info):
        info.parameter, info.parameter_name = self.omega, "omega"
        if self.learn:
            cost = info.iterations if self.feedback_kind == "iterations" else max(info.seconds - info.setup_seconds, 0)
            self.learner.observe(float(cost))
            info.regret_estimate = self.learner.estimated_regret()

    def __call__(self, r):
        z = np.empty_like(r, dtype=np.float64)
        if self._wd_omega != self.omega:  # ω / diag A, recomputed only when ω or A changes
            self._wd, self._wd_omega = self.omega / self._diag, self.omega
        _ssor_apply(*self._arrays, self._wd, self.omega, np.ascontiguousarray(r, dtype=np.float64), z)
        return z


def warm_up() -> None:
    """Load the sweep kernel's specialisations (int32 and int64 indices)."""
    A = sp.csr_matrix(np.array([[2.0, -1.0], [-1.0, 2.0]]))
    for idx in (np.int32, np.int64):
        lower, upper = sp.tril(A, -1, format="csr"), sp.triu(A, 1, format="csr")
        parts = [(m.indptr.astype(idx), m.indices.astype(idx), m.data) for m in (lower, upper)]
        _ssor_apply(*parts[0], *parts[1], 1.0 / A.diagonal(), 1.0, np.ones(2), np.empty(2))
