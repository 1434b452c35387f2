"""Shared pieces of the solvers: the statistics record, tolerance parameters, matrix fingerprints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.linalg import get_blas_funcs

from kryflow._registry import Param, ParameterError, Registry

__all__ = [
    "SolveInfo",
    "SolverDidNotConverge",
    "KrylovBreakdown",
    "MatrixFingerprint",
    "SparsityPattern",
    "RegisteredByName",
    "RTOL",
    "ATOL",
    "MAXITER",
    "check_tolerances",
    "scipy_tolerances",
    "python_scalar",
    "scipy_failure_code",
    "stale_matrix_check",
    "tolerance",
    "nrm2",
]

nrm2 = get_blas_funcs("nrm2", dtype=np.float64)

RTOL = Param.number(1e-8, 0.0, 1.0, high_open=True, doc="relative tolerance on the true residual ||b - A x|| / ||b||")
ATOL = Param.number(0.0, 0.0, doc="absolute tolerance: stop when ||b - A x|| <= max(rtol ||b||, atol)")
MAXITER = Param.integer(2000, 1, doc="Krylov iterations per solve (GMRES-type: inner iterations)")


@dataclass
class SolveInfo:
    """Statistics of one linear solve.

    **Attributes:**
        method, preconditioner: names as in SOLVER_METHODS / PRECONDITIONERS ("custom": an ``M``
            given by the caller).
        iterations: Krylov iterations (0 for direct).
        matvecs: products with A, including residual recomputations, recycle-space rebuilds and
            the final true-residual check.
        rel_residual: true ``||b - A x|| / ||b||`` recomputed from the returned x.
        seconds: wall time of the solve (including preconditioner/recycle-space updates).
        recycle_dim: size of the recycle space used by this solve (0 when none).
        converged: whether ``rel_residual`` met the tolerance.
        setup_seconds: the part of ``seconds`` spent on one-time work that a longer sequence
            would not repeat: loading (or compiling) the compiled kernels on a process's first
            solve, the symbolic analysis of a sparsity pattern (CHOLMOD, PARDISO), a multigrid's
            index tables for a grid shape. Work done again for every new matrix (a numeric
            factorisation, a hierarchy's values) is per-solve cost and not counted here, even where
            later solves with the same matrix reuse it: a longer sequence repeats it per matrix.
        parameter: the value of a solver parameter used by this solve where one is recorded (the
            SSOR relaxation ω, fixed or chosen by an online learner; the index of the strategy
            ``method: choose`` picked); NaN otherwise.
        parameter_name: what ``parameter`` is (``"omega"``, ``"strategy"``); empty without one.
        regret_estimate: an online learner's estimate of its regret so far (its cost minus the
            best fixed choice's estimated cost, see :mod:`._bandit`); NaN without a learner.
    """

    method: str
    preconditioner: str
    iterations: int
    matvecs: int
    rel_residual: float
    seconds: float
    recycle_dim: int
    converged: bool
    setup_seconds: float = 0.0
    parameter: float = float("nan")
    parameter_name: str = ""
    regret_estimate: float = float("nan")

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


class KrylovBreakdown(ValueError):
    """A Krylov iteration cannot go on (A or the preconditioner singular, or A not SPD for CG).

    ``.x`` ``(N,)``: the last iterate before the breakdown, and ``.iterations``, ``.matvecs`` spent so
    far, where the iteration that raised knows them (else ``None``): a caller that follows scipy's
    convention returns that iterate with a failure code instead of raising
    (:meth:`~._methods.SequenceMethod.run` with ``on_breakdown="return"``).
    """

    x: np.ndarray | None = None
    iterations: int = 0
    matvecs: int = 0

    def reached(self, x: np.ndarray, iterations: int, matvecs: int) -> KrylovBreakdown:
        """This breakdown with the iterate it stopped at (returns self, to be raised again)."""
        self.x, self.iterations, self.matvecs = x, iterations, matvecs
        return self


class RegisteredByName:
    """Base of classes that register themselves: ``class X(Base, name="x")`` puts X into
    ``Base.REGISTRY`` under ``"x"`` and sets ``X.name``; without ``name`` nothing is registered."""

    REGISTRY: ClassVar[Registry]
    name: ClassVar[str] = ""

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            cls.REGISTRY.register(name, cls)


def python_scalar(value: Any) -> Any:
    """``value`` with a numpy scalar (``np.int64(3)``) turned into the Python one, so that the
    declared :class:`~kryflow._registry.Param` checks accept what numpy code passes."""
    return value.item() if isinstance(value, np.generic) else value


def check_tolerances(rtol: float, atol: float, maxiter: int | None, n: int) -> int:
    """Check the stopping parameters of one solve of size ``n``.

    **Returns:** ``maxiter`` as an int (``None``: ``10 n``, as scipy). Raises
    :class:`ParameterError` naming ``rtol``, ``atol`` or ``maxiter``.
    """
    RTOL.validate("rtol", python_scalar(rtol))
    ATOL.validate("atol", python_scalar(atol))
    if rtol == 0.0 and atol == 0.0:
        raise ParameterError("rtol and atol are both 0: the solver could never stop; set rtol (e.g. 1e-8)", "rtol")
    if maxiter is None:
        return 10 * n
    return int(MAXITER.validate("maxiter", python_scalar(maxiter)))


def scipy_tolerances(rtol: Any, atol: Any) -> tuple[float, float]:
    """``(rtol, atol)`` as floats where scipy's solvers accept them: any ``rtol >= 0`` and
    ``atol >= 0``, ``1.0``, ``inf`` and both 0 included (then ``maxiter`` alone ends a solve).

    Raises ``ValueError`` naming the argument for ``None``, a string (scipy's old ``"legacy"``), a
    negative number or NaN.
    """
    out = []
    for name, value in (("rtol", rtol), ("atol", atol)):
        value = python_scalar(value)
        if isinstance(value, (str, bool)) or not isinstance(value, (int, float)) or not value >= 0.0:
            raise ValueError(f"invalid `{name}`={value!r}: it must be a real, non-negative number "
                             "(scipy's convention; inf is allowed)")
        out.append(float(value))
    return out[0], out[1]


def scipy_failure_code(maxiter: int | None, b: Any) -> int:
    """The ``info`` scipy's solvers return when they miss the tolerance: ``maxiter`` as given
    (default ``10 N``, N = ``len(b)``)."""
    return 10 * int(np.shape(b)[0]) if maxiter is None else int(maxiter)


def tolerance(bnorm: float, rtol: float, atol: float) -> float:
    """Absolute residual target ``max(rtol ||b||, atol)``."""
    return max(rtol * bnorm, atol)


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


def stale_matrix_check(fingerprint: MatrixFingerprint, A: sp.csr_matrix | None, built_with: tuple | None,
                       matrix_changed: bool, what: str) -> tuple | None:
    """Catch a matrix that changed while the caller said ``matrix_changed=False``.

    **Arguments:**
        fingerprint: the owner's :class:`MatrixFingerprint`.
        A: the assembled matrix, or ``None`` for a bare operator (nothing can be checked: the
            caller's ``matrix_changed`` is trusted).
        built_with: fingerprint of the matrix ``what`` was built with (``None``: nothing built).
        what: the derived data, for the message ("A·W", "the LU factors").

    **Returns:** the fingerprint of ``A`` to remember (``None`` for an operator).
    """
    if A is None:
        return None
    fp = fingerprint(A)
    if built_with is not None and not matrix_changed and fp != built_with:
        raise ValueError(
            f"stale {what}: matrix_changed=False but A is not the matrix {what} came from; "
            "pass matrix_changed=True whenever the matrix changes"
        )
    return fp


class SparsityPattern:
    """The sparsity pattern of the last CSR matrix seen, so that a method redoes a symbolic
    analysis only when the pattern changes (a family's matrices share one), and knows whether
    the pattern is symmetric (then :meth:`symmetric` compares values through a gather).
    """

    def __init__(self) -> None:
        self.indptr: np.ndarray | None = None
        self.indices: np.ndarray | None = None
        self._transpose: np.ndarray | None = None

    def changed(self, A: sp.csr_matrix) -> bool:
        """Whether A's pattern differs from the last one seen (which A becomes); O(nnz) at most."""
        same = self.indptr is not None and (
            (A.indptr is self.indptr and A.indices is self.indices)
            or (A.shape[0] + 1 == self.indptr.shape[0] and A.nnz == self.indices.shape[0]
                and np.array_equal(A.indptr, self.indptr) and np.array_equal(A.indices, self.indices)))
        if not same:
            self._transpose = self._transpose_map(A)
        self.indptr, self.indices = A.indptr, A.indices
        return not same

    @staticmethod
    def _transpose_map(A: sp.csr_matrix) -> np.ndarray | None:
        """``t`` with ``A.T.data == A.data[t]`` where the pattern is symmetric, else None."""
        ids = sp.csr_matrix((np.arange(1, A.nnz + 1, dtype=np.float64), A.indices, A.indptr), shape=A.shape)
        T = ids.T.tocsr()
        T.sort_indices()
        if not (np.array_equal(T.indptr, A.indptr) and np.array_equal(T.indices, A.indices)):
            return None
        return T.data.astype(np.int64) - 1

    def symmetric(self, A: sp.csr_matrix, tol: float = 1e-12) -> bool:
        """Whether A (whose pattern :meth:`changed` has seen) equals its transpose to ``tol``
        relative to its largest entry; one gather over the values."""
        if self._transpose is None or not A.has_sorted_indices:
            return False
        scale = float(np.abs(A.data).max()) if A.nnz else 0.0
        return bool(np.abs(A.data - A.data[self._transpose]).max(initial=0.0) <= tol * scale)
