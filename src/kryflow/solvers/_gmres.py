"""Restarted GMRES: the method ``"gmres"`` and scipy-style :func:`gmres`."""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

from kryflow._registry import Param

from ._arnoldi import ArnoldiCycle
from ._common import SolveInfo, nrm2, python_scalar, scipy_failure_code, tolerance
from ._methods import RESTART, MethodResult, SequenceMethod
from ._system import LinearSystem

__all__ = ["RestartedGMRES", "gmres"]

_CALLBACK_TYPE = Param.choice("pr_norm", "x", "pr_norm", "legacy")
_MAXITER_COUNTS = Param.choice("iterations", "iterations", "cycles")


class RestartedGMRES(SequenceMethod, name="gmres"):
    """Right-preconditioned restarted GMRES(restart) for general ``A``; nothing carried between solves.

    Right preconditioning keeps the monitored residual the true (unpreconditioned) one.

    **Arguments:**
        restart: Krylov dimension per cycle (``None``: 20, as scipy); at most N.
        maxiter_counts: what ``maxiter`` counts: ``"iterations"`` (inner iterations = matvecs, the
            sequence driver's meaning) or ``"cycles"`` (restart cycles, scipy's).
        callback_type: ``"pr_norm"`` or ``"legacy"``: ``callback(residual estimate / ||b||)`` after
            each inner iteration; ``"x"``: ``callback(x)`` after each cycle.
    """

    OPTIONS = {"restart": RESTART}

    def __init__(self, restart: int | None = 30, maxiter_counts: str = "iterations", callback_type: str = "pr_norm"):
        restart = python_scalar(restart)
        if restart is not None:
            RESTART.validate("restart", restart)
        self.restart = restart
        self.maxiter_counts = _MAXITER_COUNTS.validate("maxiter_counts", maxiter_counts)
        self.callback_type = _CALLBACK_TYPE.validate("callback_type", callback_type)

    @classmethod
    def from_options(cls, recycle_dim: int, restart: int = 30) -> RestartedGMRES:
        return cls(restart)

    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        n, M = system.n, system.M
        bnorm = system.bnorm
        tol = tolerance(bnorm, rtol, atol)
        m = min(20 if self.restart is None else self.restart, n)
        per_cycle = self.maxiter_counts == "cycles"
        max_inner, max_cycles = (sys.maxsize, maxiter) if per_cycle else (maxiter, sys.maxsize)
        each_step = callback if self.callback_type != "x" else None
        each_cycle = callback if self.callback_type == "x" else None
        x, r, mv = system.start()
        its = cycles = 0
        beta = nrm2(r)
        while beta > tol and its < max_inner and cycles < max_cycles:
            cycle = ArnoldiCycle(r, beta, m)
            j = cycle.run(system, tol, min(m, max_inner - its), bnorm, each_step)
            its += j
            update = cycle.coefficients("GMRES") @ cycle.V[:j]
            x += update if M is None else M(update)
            r = system.residual(x)
            mv += j + 1
            beta = nrm2(r)
            cycles += 1
            if each_cycle is not None:
                each_cycle(x)
            cycle.check_invariant(beta, tol, bnorm, "GMRES")
        return MethodResult(x, its, mv, 0)


def gmres(A: Any, b: Any, x0: Any = None, *, rtol: float = 1e-8, atol: float = 0.0, restart: int | None = None,
          maxiter: int | None = None, M: Any = None, callback: Callable | None = None,
          callback_type: str | None = None, full_output: bool = False) -> tuple[np.ndarray, int | SolveInfo]:
    """Right-preconditioned restarted GMRES for general ``A``, called as ``scipy.sparse.linalg.gmres``.

    **Arguments:**
        A: ``(N, N)`` scipy sparse matrix, dense array or ``LinearOperator``. b: ``(N,)`` or ``(N, 1)``.
        x0: start ``(N,)`` / ``(N, 1)``, ``None`` (zeros) or ``"Mb"`` (``M @ b``).
        rtol, atol: stop when ``||b - A x|| <= max(rtol ||b||, atol)`` (true residual; kryflow's
            default ``rtol`` is 1e-8, scipy's 1e-5).
        restart: Krylov dimension per cycle (default ``min(20, N)``, as scipy).
        maxiter: restart cycles (default ``10 N``); with ``callback_type="legacy"``: inner iterations.
        M: approximate inverse of A (matrix, dense array, LinearOperator or callable), applied on the
            right, so the residual monitored (and passed to ``"pr_norm"`` callbacks) is the true one,
            where scipy's left preconditioning monitors the preconditioned residual.
        callback, callback_type: as scipy: ``"x"``: ``callback(x)`` after each cycle; ``"pr_norm"``:
            ``callback(residual estimate / ||b||)`` after each inner iteration; ``"legacy"`` (what
            ``None`` means when a callback is given): as ``"pr_norm"``, and ``maxiter`` counts inner
            iterations.
        full_output: return a :class:`SolveInfo` instead of the scipy-style integer.

    **Returns:**
        ``(x, info)``: x ``(N,)``; info 0 on convergence, else ``maxiter`` (as scipy: cycles, or
        inner iterations with "legacy"); a :class:`SolveInfo` when ``full_output``.

    Unlike scipy, which returns its last iterate there, a breakdown short of the tolerance
    (A singular) raises ``ValueError``.
    """
    if callback_type is not None:
        _CALLBACK_TYPE.validate("callback_type", callback_type)
    legacy = callback is not None and callback_type in (None, "legacy")
    method = RestartedGMRES(restart, "iterations" if legacy else "cycles", callback_type or "legacy")
    x, info = method.solve(A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, callback=callback)
    if full_output:
        return x, info
    return x, 0 if info.converged else scipy_failure_code(maxiter, b)

