"""Sparse LU (SuperLU) kept across the sequence: the method ``"direct"``."""

from __future__ import annotations

from typing import Callable

import scipy.sparse.linalg as spla

from ._common import MatrixFingerprint, stale_matrix_check
from ._methods import MethodResult, SequenceMethod
from ._system import LinearSystem

__all__ = ["SparseLU"]


class SparseLU(SequenceMethod, name="direct"):
    """Direct solve by sparse LU, factorized once per matrix and reused while it does not change.

    Needs an assembled matrix (a ``LinearOperator`` raises ValueError); ignores ``x0``, ``M``,
    ``maxiter`` and ``callback``. ``matrix_changed=False`` with a changed matrix raises
    ValueError (stale LU factors).
    """

    uses_preconditioner = False

    def __init__(self) -> None:
        self._lu = None
        self._fingerprint = MatrixFingerprint()
        self._fp: tuple | None = None

    def reset(self) -> None:
        self._lu = self._fp = None

    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        A = system.csr
        if A is None:
            raise ValueError(
                f"method 'direct' factorizes A and needs an assembled matrix, got a {type(system.operator).__name__}; "
                "pass A as a scipy sparse matrix, or use an iterative method ('cg', 'gmres', ...)"
            )
        self._fp = stale_matrix_check(self._fingerprint, A, self._fp if self._lu is not None else None,
                                      matrix_changed, "LU factors")
        if self._lu is None or matrix_changed:
            try:
                self._lu = spla.splu(A.tocsc())
            except RuntimeError as exc:
                raise ValueError(f"direct solver: LU factorization failed ({exc}); A is singular") from exc
        return MethodResult(self._lu.solve(system.b), 0, 0, 0)
