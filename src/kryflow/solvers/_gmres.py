"""Restarted GMRES: the method ``"gmres"`` and scipy-style :func:`gmres`."""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable

import numpy as np

from kryflow._registry import Param

from ._arnoldi import ArnoldiCycle
from ._common import SolveInfo, nrm2, python_scalar, tolerance
from ._methods import RESTART, MethodResult, SequenceMethod
from ._system import LinearSystem

__all__ = ["RestartedGMRES", "gmres"]

_CALLBACK_TYPE = Param.choice("pr_norm", "x", "pr_norm", "legacy")
_MAXITER_COUNTS = Param.choice("iterations", "iterations", "cycles")
_CONVENTION = Param.choice("kryflow", "kryflow", "scipy")
_EPS = float(np.finfo(np.float64).eps)


class RestartedGMRES(SequenceMethod, name="gmres"):
    """Right-preconditioned restarted GMRES(restart) for general ``A``; nothing carried between solves.

    Right preconditioning keeps the monitored residual the true (unpreconditioned) one.

    **Arguments:**
        restart: Krylov dimension per cycle (``None``: 20, as scipy); at most N.
        maxiter_counts: what ``maxiter`` counts: ``"iterations"`` (inner iterations = matvecs, the
            sequence driver's meaning) or ``"cycles"`` (restart cycles, scipy's).
        callback_type: ``"pr_norm"`` or ``"legacy"``: ``callback(residual estimate / ||b||)`` after
            each inner iteration; ``"x"``: ``callback(x)`` after each cycle.
        convention: ``"kryflow"`` (right preconditioning, the inner iteration monitors the true
            residual, a breakdown raises) or ``"scipy"`` (what :func:`gmres` runs: left
            preconditioning as scipy's, see :meth:`_iterate_scipy`).
    """

    OPTIONS = {"restart": RESTART}

    def __init__(self, restart: int | None = 30, maxiter_counts: str = "iterations", callback_type: str = "pr_norm",
                 convention: str = "kryflow"):
        restart = python_scalar(restart)
        if restart is not None:
            RESTART.validate("restart", restart)
        self.restart = restart
        self.maxiter_counts = _MAXITER_COUNTS.validate("maxiter_counts", maxiter_counts)
        self.callback_type = _CALLBACK_TYPE.validate("callback_type", callback_type)
        self.convention = _CONVENTION.validate("convention", convention)

    @classmethod
    def from_options(cls, recycle_dim: int, restart: int = 30) -> RestartedGMRES:
        return cls(restart)

    def _limits(self, n: int, maxiter: int, callback: Callable | None) -> tuple[int, int, int, Callable | None,
                                                                                Callable | None]:
        """``(restart, most inner iterations, most cycles, per-step callback, per-cycle callback)``."""
        m = min(20 if self.restart is None else self.restart, n)
        per_cycle = self.maxiter_counts == "cycles"
        max_inner, max_cycles = (sys.maxsize, maxiter) if per_cycle else (maxiter, sys.maxsize)
        each_step = callback if self.callback_type != "x" else None
        each_cycle = callback if self.callback_type == "x" else None
        return m, max_inner, max_cycles, each_step, each_cycle

    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        if self.convention == "scipy":
            return self._iterate_scipy(system, rtol, atol, maxiter, callback)
        M = system.M
        bnorm = system.bnorm
        tol = tolerance(bnorm, rtol, atol)
        m, max_inner, max_cycles, each_step, each_cycle = self._limits(system.n, maxiter, callback)
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

    def _iterate_scipy(self, system: LinearSystem, rtol: float, atol: float, maxiter: int,
                       callback: Callable | None) -> MethodResult:
        """GMRES as scipy runs it: Arnoldi on ``M A`` (left preconditioning), so the inner iteration
        and ``"pr_norm"`` callbacks see the preconditioned residual ``||M r||`` (divided by ``||b||``),
        and each cycle ends with the true residual. The inner target starts at the relative
        tolerance of ``||M b||``; after a cycle it is rescaled by how the true residual compares with
        the preconditioned one, with a safety factor that tightens while cycles meet the inner target
        but not the true one (and relaxes otherwise). A breakdown (an invariant Krylov space, M r = 0)
        ends the solve with the least-squares iterate; the caller sees the true residual.
        """
        M, bnorm = system.M, system.bnorm
        tol = tolerance(bnorm, rtol, atol)
        m, max_inner, max_cycles, each_step, each_cycle = self._limits(system.n, maxiter, callback)
        products = system.with_start(system.x0, None)  # A alone: M follows each product (left)
        precondition = None if M is None else (lambda w, j: M(w))
        x, r, mv = system.start()
        rnorm = nrm2(r)
        target = (bnorm if M is None else nrm2(M(system.b))) * min(1.0, tol / bnorm)
        safety = 1.0
        its = cycles = 0
        while rnorm > tol and its < max_inner and cycles < max_cycles:
            z = r if M is None else M(r)
            beta = nrm2(z)
            if not beta > 0.0:  # M r = 0 (or not finite): M's null space holds the residual
                break
            cycle = ArnoldiCycle(z, beta, m, breakdown_tol=_EPS)
            j = cycle.run(products, target, min(m, max_inner - its), bnorm, each_step, precondition)
            its += j
            x += cycle.coefficients("GMRES", singular="least_squares") @ cycle.V[:j]
            r = system.residual(x)
            mv += j + 1
            rnorm = nrm2(r)
            cycles += 1
            if each_cycle is not None:
                each_cycle(x)
            if rnorm <= tol or cycle.breakdown:
                break
            reached = abs(cycle.g[j])
            safety = max(_EPS, 0.25 * safety) if reached <= target else min(1.0, 1.5 * safety)
            target = reached * min(safety, tol / rnorm)
        return MethodResult(x, its, mv, 0)


def gmres(A: Any, b: Any, x0: Any = None, *, rtol: float = 1e-8, atol: float = 0.0, restart: int | None = None,
          maxiter: int | None = None, M: Any = None, callback: Callable | None = None,
          callback_type: str | None = None, full_output: bool = False) -> tuple[np.ndarray, int | SolveInfo]:
    """Restarted GMRES for general ``A``, called as ``scipy.sparse.linalg.gmres`` and run as it is.

    **Arguments:**
        A: ``(N, N)`` scipy sparse matrix, dense array or ``LinearOperator``. b: ``(N,)`` or ``(N, 1)``.
        x0: start ``(N,)`` / ``(N, 1)``, ``None`` (zeros) or ``"Mb"`` (``M @ b``).
        rtol, atol: stop when ``||b - A x|| <= max(rtol ||b||, atol)`` (the true residual, checked
            after each cycle); any values >= 0 scipy accepts (``rtol=1.0``, ``atol=inf``, both 0).
            kryflow's default ``rtol`` is 1e-8, scipy's 1e-5.
        restart: Krylov dimension per cycle (default ``min(20, N)``, as scipy).
        maxiter: restart cycles (default ``10 N``); with ``callback_type="legacy"``: inner iterations.
        M: approximate inverse of A (matrix, dense array, LinearOperator or callable), applied on the
            left as scipy does: the inner iteration (and ``"pr_norm"`` callbacks) monitor the
            preconditioned residual ``||M r||``. The sequence method ``"gmres"`` preconditions on the
            right, where the monitored residual is the true one.
        callback, callback_type: as scipy: ``"x"``: ``callback(x)`` after each cycle; ``"pr_norm"``:
            ``callback(||M r|| estimate / ||b||)`` after each inner iteration; ``"legacy"`` (what
            ``None`` means when a callback is given, with scipy's ``DeprecationWarning``): as
            ``"pr_norm"``, and ``maxiter`` counts inner iterations.
        full_output: return a :class:`SolveInfo` instead of the scipy-style integer.

    **Returns:**
        ``(x, info)``: x ``(N,)``; info 0 on convergence, else ``maxiter`` (as scipy: cycles, or
        inner iterations with "legacy"); a :class:`SolveInfo` when ``full_output``. A breakdown
        (A or M singular) returns the least-squares iterate with the failure code, as scipy does.
    """
    if callback is not None and callback_type is None:
        warnings.warn("kryflow.solvers.gmres called without specifying `callback_type`: as with scipy's gmres it "
                      "means 'legacy' (maxiter counts inner iterations), a default scipy will change; pass "
                      "callback_type='pr_norm', 'x' or 'legacy'", DeprecationWarning, stacklevel=2)
    if callback_type is not None:
        _CALLBACK_TYPE.validate("callback_type", callback_type)
    legacy = callback is not None and callback_type in (None, "legacy")
    method = RestartedGMRES(restart, "iterations" if legacy else "cycles", callback_type or "legacy", "scipy")
    return method.solve_as_scipy(A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M, callback=callback,
                                 full_output=full_output)
