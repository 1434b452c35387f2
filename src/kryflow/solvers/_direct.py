"""Direct methods that factorize each new matrix and reuse the factors while it does not change:
the shared :class:`FactorizedMethod`, and sparse LU (SuperLU), the method ``"direct"``."""

from __future__ import annotations

import abc
from typing import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._common import MatrixFingerprint, SparsityPattern, stale_matrix_check
from ._methods import MethodResult, SequenceMethod
from ._system import LinearSystem

__all__ = ["FactorizedMethod", "SparseLU"]


class FactorizedMethod(SequenceMethod):
    """A direct solve: factorized once per matrix, the factors reused for every right-hand side
    while the matrix does not change (``matrix_changed=False``), the sparsity pattern's symbolic
    work (if any) reused while the pattern does not change.

    Subclasses implement :meth:`_analyze` (optional), :meth:`_factorize` and :meth:`_solve_factored`.
    Needs an assembled matrix (a ``LinearOperator`` raises ValueError); ignores ``x0``, ``M``,
    ``maxiter`` and ``callback``. ``matrix_changed=False`` with a changed matrix raises
    ValueError (stale factors).
    """

    uses_preconditioner = False
    factors: str = "factors"  # what the stale-matrix message calls them

    def __init__(self) -> None:
        self._factored = False
        self._fingerprint = MatrixFingerprint()
        self._fp: tuple | None = None
        self.pattern = SparsityPattern()

    def reset(self) -> None:
        self._factored = False
        self._fp = None
        self.pattern = SparsityPattern()

    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        A = system.assembled(self.name)
        self._fp = stale_matrix_check(self._fingerprint, A, self._fp if self._factored else None,
                                      matrix_changed, self.factors)
        if not self._factored or matrix_changed:
            self._factored = False
            if self.pattern.changed(A):
                self._analyze(A)
            self._factorize(A)
            self._factored = True
        return MethodResult(self._solve_factored(system.b), 0, 0, 0)

    def _analyze(self, A: sp.csr_matrix) -> None:
        """Symbolic work for a new sparsity pattern (adds its time to ``self._setup_seconds``)."""

    @abc.abstractmethod
    def _factorize(self, A: sp.csr_matrix) -> None:
        """Numeric factorization of A ``(N, N)``; ValueError if A is singular (or not SPD where required)."""

    @abc.abstractmethod
    def _solve_factored(self, b: np.ndarray) -> np.ndarray:
        """``A^{-1} b`` ``(N,)`` from the factors."""


class SparseLU(FactorizedMethod, name="direct"):
    """Direct solve by sparse LU (scipy's SuperLU, ``splu``), factorized once per matrix."""

    factors = "LU factors"

    def _factorize(self, A):
        try:
            self._lu = spla.splu(A.tocsc())
        except RuntimeError as exc:
            raise ValueError(f"direct solver: LU factorization failed ({exc}); A is singular") from exc

    def _solve_factored(self, b):
        return self._lu.solve(b)
