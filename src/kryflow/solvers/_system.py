"""One normaliser for every solver's ``(A, b, x0, M)``, after scipy's ``_isolve.utils.make_system``.

``A`` may be any scipy sparse matrix or array, a dense 2-D array, or anything
:func:`scipy.sparse.linalg.aslinearoperator` takes (a ``LinearOperator``, an object with
``shape`` and ``matvec``). Matrices become CSR float64, which keeps the compiled kernels of
:mod:`._kernels`; operators are applied through their ``matvec``. An operator cannot be
fingerprinted, so with one the caller's ``matrix_changed`` is trusted, and what needs entries
(AMG, ILU, LU) needs a matrix.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from . import _kernels as _k
from ._common import nrm2

__all__ = ["LinearSystem", "make_system", "as_preconditioner"]

Preconditioner = Callable[[np.ndarray], np.ndarray]

# a fixed probe vector for scale estimates of operators without a diagonal (Rademacher signs:
# u.u = N exactly and E[u.A u] = trace A)
_PROBE_SEED = 20240917


class LinearSystem:
    """``A x = b`` with a start and a preconditioner, as every solver here takes it (final; made
    by :func:`make_system`, which checks what it is given).

    **Attributes:**
        operator: ``A``, ``(N, N)``: CSR float64 matrix, or a ``LinearOperator``.
        csr: ``A`` when it is an assembled CSR matrix, else ``None``.
        b: right-hand side, ``(N,)`` float64, finite; n: N; bnorm: ``||b||``.
        x0: start ``(N,)`` float64, or ``None`` for zeros (which saves the first residual matvec).
        M: ``r -> z ≈ A⁻¹ r`` on ``(N,)`` vectors, or ``None``.
    """

    __slots__ = ("operator", "csr", "b", "n", "bnorm", "x0", "M")

    def __init__(self, operator: Any, b: np.ndarray, x0: np.ndarray | None = None, M: Preconditioner | None = None):
        self.operator = operator
        self.csr = operator if sp.issparse(operator) else None
        self.b = b
        self.n = b.shape[0]
        self.bnorm = float(nrm2(b))
        self.x0 = x0
        self.M = M

    def with_start(self, x0: np.ndarray | None, M: Preconditioner | None) -> LinearSystem:
        """The same ``A, b`` with another start ``x0`` ``(N,)`` (not checked) and preconditioner."""
        other = object.__new__(LinearSystem)
        for name in ("operator", "csr", "b", "n", "bnorm"):
            setattr(other, name, getattr(self, name))
        other.x0, other.M = x0, M
        return other

    def start(self) -> tuple[np.ndarray, np.ndarray, int]:
        """**Returns:** ``(x, r, matvecs)``: a copy of the start x ``(N,)``, its residual r ``(N,)``,
        and the matvecs that cost (0 from ``x0=None``, 1 otherwise)."""
        if self.x0 is None:
            return np.zeros(self.n), self.b.copy(), 0
        x = np.array(self.x0, dtype=np.float64)
        return x, self.residual(x), 1

    def assembled(self, method: str) -> sp.csr_matrix:
        """A as CSR, or a ValueError saying that ``method`` (a direct or algebraic solver) needs
        the matrix entries."""
        if self.csr is None:
            raise ValueError(
                f"method {method!r} needs an assembled matrix, got a {type(self.operator).__name__}; pass A as a "
                "scipy sparse matrix, or use an iterative method ('cg', 'gmres', ...)")
        return self.csr

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """``A v`` for ``v`` of shape ``(N,)`` or ``(N, K)``."""
        return self.operator @ v

    def matvec_dot(self, p: np.ndarray, q: np.ndarray) -> float:
        """``q[:] = A p`` and ``p . q`` (fused in one pass for a matrix)."""
        if self.csr is not None:
            return _k.matvec_dot(self.operator, p, q)
        q[:] = self.operator @ p
        return _k.dot(p, q)

    def residual(self, x: np.ndarray) -> np.ndarray:
        """``b - A x``, shape ``(N,)``; with the product that M offers for this very A, if any
        (``M.matvec_dot_for(A)``: the same entries read from the multigrid's stencil, faster than CSR)."""
        product = self.offered_product()
        if product is None:
            return self.b - self.operator @ x
        q = np.empty(self.n)
        product(np.ascontiguousarray(x, dtype=np.float64), q)
        return self.b - q

    def offered_product(self) -> Callable[[np.ndarray, np.ndarray], float] | None:
        """``(p, q) -> (q[:] = A p; p . q)`` from the preconditioner, where it was set up with this
        very matrix and offers one, else None."""
        offered = getattr(self.M, "matvec_dot_for", None)
        return None if offered is None or self.csr is None else offered(self.csr)

    def diagonal(self) -> np.ndarray | None:
        """``diag A`` ``(N,)`` for a matrix or an operator with a ``diagonal()`` method, else None."""
        get = getattr(self.operator, "diagonal", None)
        return None if get is None else np.asarray(get(), dtype=np.float64)

    def diagonal_scale(self) -> tuple[float, int]:
        """``max |diag A|``; for an operator without a diagonal the cheap estimate ``||A u|| / ||u||``
        of a fixed random sign vector u. **Returns:** ``(scale, matvecs spent)``."""
        d = self.diagonal()
        if d is not None:
            return float(np.abs(d).max()), 0
        u = self._probe()
        return float(nrm2(self.operator @ u) / nrm2(u)), 1

    def diagonal_mean(self) -> tuple[float, int]:
        """``trace(A) / N``; for an operator without a diagonal the one-sample estimate
        ``u.A u / N`` of a fixed random sign vector u. **Returns:** ``(mean, matvecs spent)``."""
        d = self.diagonal()
        if d is not None:
            return float(d.mean()), 0
        u = self._probe()
        return float(u @ (self.operator @ u)) / self.n, 1

    def _probe(self) -> np.ndarray:
        return np.random.default_rng(_PROBE_SEED).choice([-1.0, 1.0], size=self.n)


def make_system(A: Any, b: Any, x0: Any = None, M: Any = None) -> LinearSystem:
    """Check and normalise a solver's arguments.

    **Arguments:**
        A: ``(N, N)``: scipy sparse matrix/array, dense 2-D array, or ``LinearOperator`` (anything
            ``aslinearoperator`` takes). Real entries; a matrix must be finite.
        b: ``(N,)`` or ``(N, 1)``, finite.
        x0: ``None`` (zeros), an array ``(N,)`` or ``(N, 1)``, or ``"Mb"`` (start from ``M b``).
        M: approximate inverse of A: matrix, dense array, ``LinearOperator`` or callable ``r -> z``.

    **Returns:** a :class:`LinearSystem`. Raises ``ValueError`` naming what is wrong.
    """
    A = _as_operator(A)
    n = A.shape[0]
    b = _as_vector(b, n, "b")
    if not np.all(np.isfinite(b)):
        raise ValueError("b contains NaN or inf; check the right-hand side / previous state")
    Mf = as_preconditioner(M, n)
    if isinstance(x0, str):
        if x0 != "Mb":
            raise ValueError(f"x0 must be None, 'Mb' or an array of shape ({n},), got {x0!r}")
        x0 = b.copy() if Mf is None else np.array(Mf(b.copy()), dtype=np.float64).ravel()
    elif x0 is not None:
        x0 = np.array(_as_vector(x0, n, "x0"), dtype=np.float64)
    return LinearSystem(A, b, x0, Mf)


def _as_operator(A: Any) -> Any:
    """CSR float64 for a matrix (finite entries checked, ``grid_shape`` kept), a ``LinearOperator``
    otherwise."""
    if not (type(A) is sp.csr_matrix and A.dtype == np.float64):  # else the common case: nothing to convert
        grid = getattr(A, "grid_shape", None)
        if isinstance(A, np.ndarray) and A.ndim == 2 or isinstance(A, np.matrix):
            A = sp.csr_matrix(np.asarray(A, dtype=np.float64))
        if not sp.issparse(A):
            return _as_linear_operator(A)
        if A.format != "csr" or A.dtype != np.float64:
            A = sp.csr_matrix(A, dtype=np.float64)
            if grid is not None:
                A.grid_shape = grid
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square, got shape {A.shape}")
    if not np.all(np.isfinite(A.data)):
        raise ValueError("A contains NaN or inf entries; check the coefficient fields used to assemble it")
    return A


def _as_linear_operator(A: Any) -> spla.LinearOperator:
    """``A`` through ``aslinearoperator``, with what it cannot be named."""
    if isinstance(A, np.ndarray) or not (hasattr(A, "shape") and hasattr(A, "matvec")):
        got = f"an array of shape {A.shape}" if isinstance(A, np.ndarray) else type(A).__name__
        raise ValueError(
            f"A must be a scipy sparse matrix (CSR preferred), a dense 2-D array or a LinearOperator, got {got}"
        )
    op = spla.aslinearoperator(A)
    if op is not A and hasattr(A, "diagonal"):
        op.diagonal = A.diagonal  # keep what Jacobi and CG's scale need from a duck-typed operator
    if len(op.shape) != 2 or op.shape[0] != op.shape[1]:
        raise ValueError(f"A must be square, got shape {op.shape}")
    if np.dtype(op.dtype).kind == "c":
        raise ValueError("A is complex; kryflow's solvers are real (float64) only")
    return op


def _as_vector(v: Any, n: int, name: str) -> np.ndarray:
    """``v`` as float64 ``(n,)``; ``(n, 1)`` (and ``(1, n)``) are raveled."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 2 and 1 in v.shape:
        v = v.ravel()
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D of length {n} (or ({n}, 1)), got shape {v.shape}; pass {name}.ravel()")
    if v.shape[0] != n:
        raise ValueError(f"{name} has length {v.shape[0]} but A is ({n}, {n}); they must match")
    return v


def as_preconditioner(M: Any, n: int) -> Preconditioner | None:
    """Turn a scipy-style ``M`` (approximate inverse: matrix, dense array, LinearOperator or
    callable) into ``r -> M r`` on ``(n,)`` vectors; ``None`` stays ``None``."""
    if M is None:
        return None
    if callable(M) and not hasattr(M, "shape"):
        return M
    if hasattr(M, "shape"):
        if tuple(M.shape) != (n, n):
            raise ValueError(f"preconditioner M has shape {M.shape}, expected {(n, n)}")
        if hasattr(M, "matvec"):
            return lambda r: np.asarray(M.matvec(r), dtype=np.float64).ravel()
        return lambda r: np.asarray(M @ r, dtype=np.float64).ravel()
    raise ValueError(f"M must be a matrix, LinearOperator or callable, got {type(M).__name__}")
