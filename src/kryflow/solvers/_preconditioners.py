"""Preconditioners for sequences: Jacobi, ILU (scipy), smoothed-aggregation AMG (pyamg).

Each returns ``z ≈ A^{-1} r`` from :meth:`__call__` and is told about matrix changes through
:meth:`update`, so it can rebuild, or keep (lag) its setup across the sequence where that pays.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["PRECONDITIONERS", "Preconditioner", "make_preconditioner"]

PRECONDITIONERS = ("none", "jacobi", "ilu", "amg")


class Preconditioner(abc.ABC):
    name = ""

    def __init__(self) -> None:
        self.setups = 0  # how many times the setup ran (diagnostics)

    @abc.abstractmethod
    def setup(self, A: sp.csr_matrix) -> None:
        """Build from A (called on the first matrix and whenever the policy says rebuild)."""

    @abc.abstractmethod
    def __call__(self, r: np.ndarray) -> np.ndarray:
        """Apply the approximate inverse to a 1-D residual; never modifies ``r``."""

    def update(self, A: sp.csr_matrix, matrix_changed: bool) -> bool:
        """React to a new system; returns True when the setup was rebuilt."""
        if matrix_changed or self.setups == 0:
            self.setup(A)
            self.setups += 1
            return True
        return False

    def feedback(self, iterations: int) -> None:
        """Iterations of the last solve (lagged policies use it to decide on a rebuild)."""


class IdentityPreconditioner(Preconditioner):
    name = "none"

    def setup(self, A):
        pass

    def __call__(self, r):
        return r


class JacobiPreconditioner(Preconditioner):
    name = "jacobi"

    def setup(self, A):
        d = A.diagonal()
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


class ILUPreconditioner(Preconditioner):
    """Incomplete LU (scipy ``spilu``); nonsymmetric, so pair it with GMRES/GCRO-DR rather than CG."""

    name = "ilu"

    def __init__(self, drop_tol: float = 1e-4, fill_factor: float = 10.0):
        super().__init__()
        self.drop_tol, self.fill_factor = drop_tol, fill_factor

    def setup(self, A):
        try:
            self._ilu = spla.spilu(A.tocsc(), drop_tol=self.drop_tol, fill_factor=self.fill_factor)
        except RuntimeError as exc:  # SuperLU: "Factor is exactly singular"
            raise ValueError(f"ILU setup failed ({exc}); A is singular or needs pivoting, try 'amg' or 'direct'") from exc

    def __call__(self, r):
        return self._ilu.solve(r)


class AMGPreconditioner(Preconditioner):
    """Smoothed-aggregation AMG V-cycle (pyamg).

    ``reuse`` says what survives a matrix change:
      * ``"rebuild"``: a fresh hierarchy for every matrix.
      * ``"aggregates"``: keep the aggregates, recompute prolongators and Galerkin products
        (skips the strength/aggregation phase).
      * ``"lagged"``: keep the whole hierarchy (a fixed SPD preconditioner for a drifting
        matrix) and rebuild only when iterations exceed ``refresh`` x those right after the
        last build.

    Default "rebuild": measured on binary Darcy drift sequences (128², 256²) a lagged
    hierarchy triples the iterations (the aggregates follow the coefficient jumps), so its
    setup savings are lost; on lognormal sequences lagging saved ~10%.
    """

    name = "amg"

    def __init__(self, symmetric: bool = True, reuse: str = "rebuild", refresh: float = 1.5):
        super().__init__()
        if reuse not in ("rebuild", "aggregates", "lagged"):
            raise ValueError(f"amg_reuse must be 'rebuild', 'aggregates' or 'lagged', got {reuse!r}")
        self.symmetric, self.reuse, self.refresh = symmetric, reuse, float(refresh)
        self._aggs = None
        self._base_iters: int | None = None
        self._stale = False

    def setup(self, A):
        import pyamg

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

    def feedback(self, iterations):
        if self._base_iters is None:
            self._base_iters = max(int(iterations), 1)
        elif iterations > self.refresh * self._base_iters + 2:
            self._stale = True

    def __call__(self, r):
        return self._M.matvec(r)


def make_preconditioner(name: str, symmetric: bool = True, **options: Any) -> Preconditioner:
    """Preconditioner by name (``PRECONDITIONERS``). Options: ``amg_reuse``, ``amg_refresh``,
    ``ilu_drop_tol``, ``ilu_fill_factor``."""
    if name == "none":
        return IdentityPreconditioner()
    if name == "jacobi":
        return JacobiPreconditioner()
    if name == "ilu":
        return ILUPreconditioner(options.get("ilu_drop_tol", 1e-4), options.get("ilu_fill_factor", 10.0))
    if name == "amg":
        return AMGPreconditioner(symmetric, options.get("amg_reuse", "rebuild"), options.get("amg_refresh", 1.5))
    raise ValueError(f"unknown preconditioner {name!r}; valid: {PRECONDITIONERS}")
