"""Plain preconditioned conjugate gradients: the method ``"cg"`` and scipy-style :func:`cg`."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._common import SolveInfo
from ._methods import MethodResult, SequenceMethod
from ._pcg import pcg
from ._system import LinearSystem

__all__ = ["ConjugateGradient", "cg"]


class ConjugateGradient(SequenceMethod, name="cg"):
    """Preconditioned CG for SPD systems; nothing is carried between solves.

    ``solve(..., callback=f)`` calls ``f(x)`` (x ``(N,)``) after each iteration.
    """

    symmetric = True

    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        x, its, mv, _ = pcg(system, rtol, atol, maxiter, callback=callback)
        return MethodResult(x, its, mv, 0)


def cg(A: Any, b: Any, x0: Any = None, *, rtol: float = 1e-8, atol: float = 0.0, maxiter: int | None = None,
       M: Any = None, callback: Callable[[np.ndarray], Any] | None = None,
       full_output: bool = False) -> tuple[np.ndarray, int | SolveInfo]:
    """Preconditioned conjugate gradients for SPD ``A``, called as ``scipy.sparse.linalg.cg``.

    **Arguments:**
        A: SPD ``(N, N)``: scipy sparse matrix (CSR runs the compiled kernels), dense array, or
            ``LinearOperator``. b: ``(N,)`` or ``(N, 1)``.
        x0: start ``(N,)`` / ``(N, 1)``, ``None`` (zeros) or ``"Mb"`` (``M @ b``).
        rtol, atol: stop when ``||b - A x|| <= max(rtol ||b||, atol)`` (true, unpreconditioned
            2-norm, recomputed before stopping); any values >= 0 scipy accepts (``rtol=1.0``,
            ``atol=inf``, both 0). kryflow's default ``rtol`` is 1e-8 (scipy: 1e-5).
        maxiter: iteration limit (default ``10 N``).
        M: approximate inverse of A: matrix, dense array, LinearOperator or callable ``r -> z``.
        callback: ``callback(xk)`` after each iteration.
        full_output: return a :class:`SolveInfo` instead of the scipy-style integer.

    **Returns:**
        ``(x, info)``: x ``(N,)``; info 0 on convergence, else ``maxiter`` (the iterations done),
        as scipy; a :class:`SolveInfo` when ``full_output``. A breakdown (``pᵀ A p <= 0`` or an
        overflowing step: A or M singular, or not SPD) returns the last iterate before it with the
        failure code, as scipy returns what it reached (the sequence methods raise instead).
    """
    return ConjugateGradient().solve_as_scipy(A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M,
                                              callback=callback, full_output=full_output)

