"""scipy's GCROT(m, k), recycling its outer vectors across the sequence: the baseline ``"scipy_gcrotmk"``."""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse.linalg as spla

from ._common import python_scalar
from ._methods import RECYCLE_DIM, RESTART, MethodResult, SequenceMethod
from ._system import LinearSystem

__all__ = ["ScipyGCROTMK"]


class ScipyGCROTMK(SequenceMethod, name="scipy_gcrotmk"):
    """``scipy.sparse.linalg.gcrotmk(CU=..., discard_C=True)``: a reference to compare with.

    **Arguments:**
        recycle_dim: k, outer vectors kept. restart: m, inner GMRES dimension.

    ``maxiter`` (Krylov iterations) becomes ``maxiter // restart`` outer cycles; iterations are
    reported as the matvecs scipy made.
    """

    baseline = True
    recycles = True
    OPTIONS = {"restart": RESTART}

    def __init__(self, recycle_dim: int = 8, restart: int = 30):
        self.k = RECYCLE_DIM.validate("recycle_dim", python_scalar(recycle_dim))
        self.restart = RESTART.validate("restart", python_scalar(restart))
        self._cu: list = []

    @classmethod
    def from_options(cls, recycle_dim: int, restart: int = 30) -> ScipyGCROTMK:
        return cls(recycle_dim, restart)

    @property
    def recycle_dim(self) -> int:
        return len(self._cu)

    def reset(self) -> None:
        self._cu = []

    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        count = [0]

        def counted_matvec(v):
            count[0] += 1
            return system.matvec(v)

        shape = (system.n, system.n)
        op = spla.LinearOperator(shape, matvec=counted_matvec, dtype=np.float64)
        Mop = None if system.M is None else spla.LinearOperator(shape, matvec=system.M, dtype=np.float64)
        # discard_C=True stores (None, u): C = A u is recomputed on the next call, so a changed
        # matrix is handled (at k matvecs per solve, counted)
        x, _ = spla.gcrotmk(op, system.b, x0=system.x0, rtol=rtol, atol=atol,
                            maxiter=max(1, maxiter // self.restart), M=Mop, m=self.restart,
                            k=self.k, CU=self._cu, discard_C=True)
        return MethodResult(x, count[0], count[0], len(self._cu))
