"""Shared pieces of the solvers: statistics record, input checks, matrix fingerprints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from scipy.linalg import get_blas_funcs

__all__ = ["SolveInfo", "SolverDidNotConverge", "check_system", "as_preconditioner", "MatrixFingerprint"]

nrm2 = get_blas_funcs("nrm2", dtype=np.float64)


@dataclass
class SolveInfo:
    """Statistics of one linear solve.

    **Attributes:**
        method, preconditioner: names as in SOLVER_METHODS / PRECONDITIONERS.
        iterations: Krylov iterations (0 for direct).
        matvecs: products with A, including residual recomputations and A·W rebuilds.
        rel_residual: true ``||b - A x|| / ||b||`` recomputed from the returned x.
        seconds: wall time of the solve (including preconditioner/recycle-space updates).
        recycle_dim: size of the recycle space used by this solve (0 when none).
        converged: whether ``rel_residual`` met the tolerance.
    """

    method: str
    preconditioner: str
    iterations: int
    matvecs: int
    rel_residual: float
    seconds: float
    recycle_dim: int
    converged: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SolverDidNotConverge(RuntimeError):
    """A solve missed its tolerance; ``.info`` holds the :class:`SolveInfo` of the failed solve."""

    def __init__(self, info: SolveInfo, rtol: float, maxiter: int):
        self.info = info
        super().__init__(
            f"{info.method} (preconditioner {info.preconditioner!r}) stopped after {info.iterations} iterations "
            f"with true relative residual {info.rel_residual:.3e} > rtol={rtol:.1e} (maxiter={maxiter}); "
            "raise maxiter, loosen rtol, use a stronger preconditioner (e.g. 'amg') or method='direct', "
            "or pass on_nonconvergence='flag' to keep the solve and flag it"
        )


def check_system(A: Any, b: Any) -> tuple[sp.csr_matrix, np.ndarray]:
    """Return ``(A as CSR float64, b as 1-D float64)`` after checking shapes and finiteness."""
    if not sp.issparse(A):
        if isinstance(A, np.ndarray) and A.ndim == 2:
            A = sp.csr_matrix(A)
        else:
            raise ValueError(f"A must be a scipy sparse matrix (CSR preferred), got {type(A).__name__}")
    if A.format != "csr" or A.dtype != np.float64:
        A = sp.csr_matrix(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square, got shape {A.shape}")
    b = np.asarray(b, dtype=np.float64)
    if b.ndim != 1:
        if b.ndim == 2 and 1 in b.shape:
            b = b.ravel()
        else:
            raise ValueError(f"b must be 1-D of length {A.shape[0]}, got shape {b.shape}; pass b.ravel()")
    if b.shape[0] != A.shape[0]:
        raise ValueError(f"b has length {b.shape[0]} but A is {A.shape}; they must match")
    if not np.all(np.isfinite(b)):
        raise ValueError("b contains NaN or inf; check the right-hand side / previous state")
    if not np.all(np.isfinite(A.data)):
        raise ValueError("A contains NaN or inf entries; check the coefficient fields used to assemble it")
    return A, b


def as_preconditioner(M: Any, n: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """Turn a scipy-style ``M`` (approximate inverse: matrix, LinearOperator or callable) into r -> M r."""
    if M is None:
        return None
    if callable(M) and not hasattr(M, "shape"):
        return M
    if hasattr(M, "shape"):
        if tuple(M.shape) != (n, n):
            raise ValueError(f"preconditioner M has shape {M.shape}, expected {(n, n)}")
        if hasattr(M, "matvec"):
            return M.matvec
        return lambda r: M @ r
    raise ValueError(f"M must be a matrix, LinearOperator or callable, got {type(M).__name__}")


class MatrixFingerprint:
    """Cheap identity of a CSR matrix (shape, nnz, random projection of values and indices).

    Costs about one pass over ``A.data`` -- less than a matvec -- and lets recycled solvers and
    cached factorizations detect a matrix that changed while the caller said it did not.
    """

    def __init__(self) -> None:
        self._weights = np.empty(0)

    def __call__(self, A: sp.csr_matrix) -> tuple:
        nnz = A.nnz
        if self._weights.size < nnz:
            self._weights = np.random.default_rng(12345).random(nnz) + 0.5
        w = self._weights[:nnz]
        return (A.shape, nnz, float(A.data @ w), int(A.indices[:: max(1, nnz // 64)].sum()))
