"""pyamg's smoothed-aggregation solver with its own Krylov accelerator: the baseline ``"pyamg"``."""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from ._common import MatrixFingerprint, SparsityPattern, nrm2, stale_matrix_check
from ._methods import MethodResult, SequenceMethod
from ._system import LinearSystem

__all__ = ["PyAMGSolver"]

_RESTART = 40  # pyamg GMRES inner iterations per restart (its default without one is unrestarted)


class PyAMGSolver(SequenceMethod, name="pyamg"):
    """``pyamg.smoothed_aggregation_solver(A).solve(b, accel=...)``, as pyamg's users run it.

    A new hierarchy per new matrix (symmetric smoothing for a symmetric A); CG as the accelerator
    for a symmetric A, GMRES(40) otherwise. pyamg's Krylov methods stop on their own residual
    recurrence (GMRES: the preconditioned residual), so the solve is resumed from its iterate
    with a tighter tolerance until the true ``||b - A x|| <= max(rtol ||b||, atol)`` or
    ``maxiter`` iterations. Iterations and matvecs are the accelerator's (one A product each,
    plus the true-residual checks).
    """

    uses_preconditioner = False
    baseline = True

    @classmethod
    def _load(cls):
        import scipy.sparse as sp

        cls().solve(sp.random(60, 60, density=0.05, random_state=0) + 4 * sp.identity(60, format="csr"), np.ones(60))

    def __init__(self) -> None:
        self._ml = None
        self._pattern = SparsityPattern()
        self._fingerprint = MatrixFingerprint()
        self._fp: tuple | None = None

    def reset(self) -> None:
        self._ml = self._fp = None

    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        import pyamg

        A = system.assembled(self.name)
        self._fp = stale_matrix_check(self._fingerprint, A, self._fp if self._ml is not None else None,
                                      matrix_changed, "AMG hierarchy")
        if self._ml is None or matrix_changed:
            self._ml = None
            self._pattern.changed(A)
            self._symmetric = self._pattern.symmetric(A)
            self._ml = pyamg.smoothed_aggregation_solver(
                A, symmetry="symmetric" if self._symmetric else "nonsymmetric", max_coarse=50)
        goal = max(rtol, atol / system.bnorm)
        x, _, mv = system.start()
        its = 0
        tol = goal
        while True:
            residuals: list[float] = []
            budget = maxiter - its
            accel = "cg" if self._symmetric else functools.partial(pyamg.krylov.gmres, restart=_RESTART)
            x = self._ml.solve(system.b, x0=x, tol=tol, accel=accel, residuals=residuals,
                               maxiter=budget if self._symmetric else max(1, -(-budget // _RESTART)))
            its += max(len(residuals) - 1, 1)
            rel = float(nrm2(system.residual(x))) / system.bnorm
            mv += max(len(residuals) - 1, 1) + 1
            if not np.isfinite(rel) or rel <= goal or its >= maxiter:
                return MethodResult(x, its, mv, 0)
            tol *= max(0.01, 0.5 * goal / rel)
