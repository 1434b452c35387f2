"""MKL PARDISO (pypardiso), symbolic phase reused per sparsity pattern: the baseline ``"pardiso"``."""

from __future__ import annotations

import copy
import functools
import time

import numpy as np
import scipy.sparse as sp

from ._direct import FactorizedMethod
from ._sequence import refresh_thread_pools

__all__ = ["Pardiso"]

_SPD, _NONSYMMETRIC = 2, 11  # PARDISO matrix types: real SPD (Cholesky), real nonsymmetric (LU)
_ANALYSIS, _FACTORIZATION, _SOLVE = 11, 22, 33  # PARDISO phases


@functools.cache
def _template():
    """One pypardiso solver per process: constructing one searches the environment for MKL's
    library (a recursive glob, 0.3-1 s), which must not be paid per sequence."""
    from pypardiso import PyPardisoSolver

    return PyPardisoSolver()


def _new_solver(mtype: int):
    """A pypardiso solver with its own PARDISO handle, sharing the loaded MKL library."""
    solver = copy.copy(_template())
    solver.pt = np.zeros_like(solver.pt)
    solver.iparm = np.zeros_like(solver.iparm)
    solver.set_matrix_type(mtype)
    return solver


class Pardiso(FactorizedMethod, name="pardiso"):
    """Intel MKL PARDISO through pypardiso, for symmetric and nonsymmetric matrices.

    Per sparsity pattern: the pattern is checked for symmetry, and PARDISO's analysis phase
    (fill-reducing ordering, symbolic factorization) runs once and is reused along the sequence.
    Per matrix: numeric factorization (phase 22) -- Cholesky (matrix type 2, upper triangle
    only) when A is symmetric, LU (type 11) otherwise; per right-hand side: the solve (phase 33).
    A symmetric matrix that is not positive definite raises ValueError (use ``"direct"``).
    MKL's threads are limited by ``blas_threads`` like every method's.
    """

    baseline = True
    requires = ("pypardiso", "pypardiso")
    factors = "PARDISO factors"

    @classmethod
    def _load(cls):
        for A in (sp.csr_matrix([[2.0, -1.0], [-1.0, 2.0]]), sp.csr_matrix([[2.0, -1.0], [0.0, 2.0]])):
            cls().solve(A, np.ones(2))
        refresh_thread_pools()  # MKL is loaded now: let blas_threads limit it

    def _release(self) -> None:
        """Free PARDISO's memory of the previous pattern (its factors live outside Python)."""
        if getattr(self, "_solver", None) is not None:
            self._solver.free_memory(everything=True)
            self._solver = None

    def reset(self) -> None:
        self._release()
        super().reset()

    def __del__(self):
        try:
            self._release()
        except Exception:  # noqa: BLE001 -- interpreter shutdown: MKL may be gone already
            pass

    def _analyze(self, A):
        t0 = time.perf_counter()
        # the matrix PARDISO reads: A's upper triangle (type 2) or all of A (type 11), indices sorted;
        # its data is A.data[self._take], so that a new matrix of the pattern is one gather
        ids = sp.csr_matrix((np.arange(1, A.nnz + 1, dtype=np.float64), A.indices, A.indptr), shape=A.shape)
        self._mtype = _SPD if self.pattern.symmetric(A) else _NONSYMMETRIC
        M = sp.triu(ids, format="csr") if self._mtype == _SPD else ids.copy()
        M.sort_indices()
        self._take = M.data.astype(np.int64) - 1
        self._M = M
        self._release()
        self._solver = _new_solver(self._mtype)
        self._solver._check_A(M)  # sets PARDISO's CSR/CSC flag as pypardiso does
        self._M.data = A.data[self._take]
        self._phase(_ANALYSIS, np.zeros(A.shape[0]))
        self._setup_seconds += time.perf_counter() - t0

    def _phase(self, phase: int, b: np.ndarray) -> np.ndarray:
        from pypardiso.pardiso_wrapper import PyPardisoError

        self._solver.set_phase(phase)
        try:
            return self._solver._call_pardiso(self._M, b)
        except PyPardisoError as exc:
            kind = "not positive definite" if self._mtype == _SPD else "singular"
            raise ValueError(f"method 'pardiso': phase {phase} failed ({exc}); A is {kind}, "
                             "try method 'direct'") from exc

    def _factorize(self, A):
        if self._mtype == _SPD and not self.pattern.symmetric(A):
            self.pattern = type(self.pattern)()  # the values turned nonsymmetric: analyse again for LU
            self.pattern.changed(A)
            self._analyze(A)
        self._M.data = A.data[self._take]
        self._phase(_FACTORIZATION, np.zeros(A.shape[0]))

    def _solve_factored(self, b):
        return self._phase(_SOLVE, np.asfortranarray(b)).ravel()
