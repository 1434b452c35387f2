"""Preconditioners for sequences: Jacobi, ILU (scipy), smoothed-aggregation AMG (pyamg); the
geometric multigrid ``"gmg"`` is in :mod:`._gmg`.

Each returns ``z ≈ A^{-1} r`` from :meth:`__call__` and is told about matrix changes through
:meth:`update`, so it can rebuild, or keep (lag) its setup across the sequence where that pays.
A preconditioner is one class on :class:`Preconditioner` registered by its class statement
(``class X(Preconditioner, name="x")``) and declares its config options as ``OPTIONS``.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from kryflow._registry import Param, ParameterError, Registry, check_params

from ._common import RegisteredByName, SolveInfo

__all__ = ["PRECONDITIONERS", "Preconditioner", "make_preconditioner", "preconditioner_class"]

PRECONDITIONERS: Registry[type[Preconditioner]] = Registry("preconditioner", package="kryflow.solvers")


def _assembled(A: Any, name: str) -> sp.csr_matrix:
    """``A`` as CSR, or a ValueError saying that preconditioner ``name`` needs matrix entries."""
    if sp.issparse(A):
        return A.tocsr()
    raise ValueError(
        f"preconditioner {name!r} needs an assembled matrix, got a {type(A).__name__}; pass A as a scipy "
        "sparse matrix, or use preconditioner 'jacobi' (needs only diag A) or 'none'"
    )


class Preconditioner(RegisteredByName, abc.ABC):
    """An approximate inverse of A, rebuilt (or kept) as the sequence's matrix changes.

    Subclasses set ``OPTIONS`` (``{config option: Param}``), implement :meth:`setup` and
    :meth:`__call__`, and may override :meth:`from_options`, :meth:`update`, :meth:`feedback`.
    """

    REGISTRY = PRECONDITIONERS
    OPTIONS: ClassVar[dict[str, Param]] = {}
    identity: ClassVar[bool] = False  # True: applying it is a no-op, solvers run unpreconditioned

    @classmethod
    def from_options(cls, symmetric: bool, **options: Any) -> Preconditioner:
        """The preconditioner for checked ``OPTIONS`` values; ``symmetric``: for an SPD method."""
        return cls()

    def __init__(self) -> None:
        self.setups = 0  # how many times the setup ran (diagnostics)
        self.one_time_seconds = 0.0  # set-up seconds a longer sequence would not repeat (per grid shape)

    def take_one_time_seconds(self) -> float:
        """The one-time set-up seconds since the last call (the driver's ``setup_seconds``)."""
        out, self.one_time_seconds = self.one_time_seconds, 0.0
        return out

    @abc.abstractmethod
    def setup(self, A: Any) -> None:
        """Build from A ``(N, N)`` (CSR, or an operator where the subclass allows one); called on the
        first matrix and whenever the policy says rebuild."""

    @abc.abstractmethod
    def __call__(self, r: np.ndarray) -> np.ndarray:
        """Apply the approximate inverse to a 1-D residual; never modifies ``r``."""

    def update(self, A: Any, matrix_changed: bool) -> bool:
        """React to a new system; returns True when the setup was rebuilt."""
        if matrix_changed or self.setups == 0:
            self.setup(A)
            self.setups += 1
            return True
        return False

    def feedback(self, info: SolveInfo) -> None:
        """The record of the solve just done (lagged policies decide on a rebuild from its
        iterations; a learner takes its cost and may record what it chose on it)."""


class IdentityPreconditioner(Preconditioner, name="none"):
    """No preconditioning: ``z = r``."""

    identity = True

    def setup(self, A):
        pass

    def __call__(self, r):
        return r


class JacobiPreconditioner(Preconditioner, name="jacobi"):
    """``z = r / diag A``; needs only the diagonal (a matrix, or an operator with ``diagonal()``)."""

    def setup(self, A):
        get = getattr(A, "diagonal", None)
        if get is None:
            raise ValueError(
                f"preconditioner 'jacobi' needs diag A, which a {type(A).__name__} does not give; pass A as a "
                "scipy sparse matrix or an operator with a diagonal() method, or use preconditioner 'none'"
            )
        d = np.asarray(get(), dtype=np.float64)
        if np.any(d == 0):
            raise ValueError(
                f"Jacobi preconditioner: A has {int(np.sum(d == 0))} zero diagonal entries (singular or "
                "saddle-point system); use preconditioner 'ilu'/'amg' or method 'direct'"
            )
        self._dinv = 1.0 / d

    @property
    def diagonal_inverse(self) -> np.ndarray:
        """1/diag(A): lets plain PCG apply Jacobi inside its compiled loop."""
        return self._dinv

    def __call__(self, r):
        return self._dinv * r


class ILUPreconditioner(Preconditioner, name="ilu"):
    """Incomplete LU (scipy ``spilu``); nonsymmetric, so pair it with GMRES/GCRO-DR rather than CG.

    **Arguments:**
        drop_tol, fill_factor: as ``scipy.sparse.linalg.spilu`` (options ``ilu_drop_tol``,
            ``ilu_fill_factor``).
    """

    OPTIONS = {
        "ilu_drop_tol": Param.number(1e-4, 0.0, doc="ILU drop tolerance (scipy spilu drop_tol)"),
        "ilu_fill_factor": Param.number(10.0, 0.0, low_open=True, doc="ILU fill factor (scipy spilu fill_factor)"),
    }

    @classmethod
    def from_options(cls, symmetric: bool, ilu_drop_tol: float = 1e-4, ilu_fill_factor: float = 10.0):
        return cls(ilu_drop_tol, ilu_fill_factor)

    def __init__(self, drop_tol: float = 1e-4, fill_factor: float = 10.0):
        super().__init__()
        self.drop_tol, self.fill_factor = drop_tol, fill_factor

    def setup(self, A):
        try:
            self._ilu = spla.spilu(_assembled(A, self.name).tocsc(), drop_tol=self.drop_tol, fill_factor=self.fill_factor)
        except RuntimeError as exc:  # SuperLU: "Factor is exactly singular"
            raise ValueError(f"ILU setup failed ({exc}); A is singular or needs pivoting, try 'amg' or 'direct'") from exc

    def __call__(self, r):
        return self._ilu.solve(r)


class AMGPreconditioner(Preconditioner, name="amg"):
    """Smoothed-aggregation AMG V-cycle (pyamg).

    **Arguments:**
        symmetric: build for an SPD method (symmetric smoothing and prolongation).
        reuse: option ``amg_reuse``, what survives a matrix change (below).
        refresh: option ``amg_refresh``, the iteration growth that makes a lagged hierarchy stale.

    ``reuse``:
      * ``"rebuild"``: a fresh hierarchy for every matrix.
      * ``"aggregates"``: keep the aggregates, recompute prolongators and Galerkin products
        (skips the strength/aggregation phase).
      * ``"lagged"``: keep the whole hierarchy (a fixed SPD preconditioner for a drifting
        matrix) and rebuild only when iterations exceed ``refresh`` x those right after the
        last build.

    Default "rebuild": where the coefficients jump, the aggregates follow the jumps, so a
    hierarchy lagged over a drifting sequence costs more iterations than its setup saves
    (benchmarks/README.md has the measurements).
    """

    OPTIONS = {
        "amg_reuse": Param.choice("rebuild", "rebuild", "aggregates", "lagged",
                                  doc="what of the AMG setup survives a matrix change"),
        "amg_refresh": Param.number(1.5, 1.0, doc="lagged AMG: rebuild when iterations exceed this x those "
                                                  "right after the last build"),
    }

    @classmethod
    def from_options(cls, symmetric: bool, amg_reuse: str = "rebuild", amg_refresh: float = 1.5):
        return cls(symmetric, amg_reuse, amg_refresh)

    def __init__(self, symmetric: bool = True, reuse: str = "rebuild", refresh: float = 1.5):
        super().__init__()
        self.OPTIONS["amg_reuse"].validate("amg_reuse", reuse)
        self.symmetric, self.reuse, self.refresh = symmetric, reuse, float(refresh)
        self._aggs = None
        self._base_iters: int | None = None
        self._stale = False

    def setup(self, A):
        import pyamg

        A = _assembled(A, self.name)
        kw: dict[str, Any] = {"symmetry": "symmetric" if self.symmetric else "nonsymmetric", "max_coarse": 50}
        if self.reuse == "aggregates" and self._aggs is not None and self._aggs[0].shape[0] == A.shape[0]:
            ml = pyamg.smoothed_aggregation_solver(
                A, aggregate=[("predefined", {"AggOp": g}) for g in self._aggs],
                max_levels=len(self._aggs) + 1, max_coarse=1, symmetry=kw["symmetry"],
            )
        else:
            ml = pyamg.smoothed_aggregation_solver(A, keep=self.reuse == "aggregates", **kw)
            if self.reuse == "aggregates":
                self._aggs = [lvl.AggOp.tocsr() for lvl in ml.levels[:-1]]
        self._M = ml.aspreconditioner(cycle="V")
        self._n = A.shape[0]
        self._base_iters = None
        self._stale = False

    def update(self, A, matrix_changed):
        if self.setups and self.reuse == "lagged" and not self._stale and A.shape[0] == self._n:
            return False
        return super().update(A, matrix_changed)

    def feedback(self, info):
        iterations = info.iterations
        if self._base_iters is None:
            self._base_iters = max(int(iterations), 1)
        elif iterations > self.refresh * self._base_iters + 2:
            self._stale = True

    def __call__(self, r):
        return self._M.matvec(r)


def preconditioner_class(name: str) -> type[Preconditioner]:
    """The registered class of ``name``; :class:`ParameterError` (param ``"preconditioner"``)
    listing the valid names otherwise."""
    if not isinstance(name, str) or name not in PRECONDITIONERS:
        raise ParameterError(f"unknown preconditioner {name!r}; valid: {', '.join(PRECONDITIONERS)}",
                             "preconditioner")
    return PRECONDITIONERS[name]


def make_preconditioner(name: str, symmetric: bool = True, **options: Any) -> Preconditioner:
    """Preconditioner by name (``PRECONDITIONERS``) with its options (e.g. ``amg_reuse``,
    ``amg_refresh``; ``ilu_drop_tol``, ``ilu_fill_factor``), checked against its ``OPTIONS``."""
    cls = preconditioner_class(name)
    return cls.from_options(symmetric, **check_params(cls.OPTIONS, options, f"preconditioner {name!r}"))
