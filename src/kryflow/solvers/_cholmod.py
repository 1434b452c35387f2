"""Sparse Cholesky by CHOLMOD (scikit-sparse), symbolic analysis reused: the baseline ``"cholmod"``."""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from ._direct import FactorizedMethod
from ._sequence import refresh_thread_pools

__all__ = ["CholmodCholesky"]


class CholmodCholesky(FactorizedMethod, name="cholmod"):
    """Supernodal sparse Cholesky (CHOLMOD through scikit-sparse) for SPD matrices.

    The fill-reducing ordering and symbolic factorization (``analyze``) run once per sparsity
    pattern and are reused along the sequence (every matrix of a family shares its pattern);
    each new matrix is factorized numerically in place (``cholesky_inplace``); the factor serves
    every right-hand side while the matrix is unchanged (heat: every time step of a sample). An
    A that is not positive definite raises ValueError (use ``"pardiso"`` or ``"direct"``).
    CHOLMOD's dense kernels run on the BLAS its system library links (OpenBLAS where installed),
    limited by ``blas_threads`` like every method's.
    """

    symmetric = True
    baseline = True
    requires = ("sksparse.cholmod", "scikit-sparse<0.5")
    factors = "Cholesky factor"

    @classmethod
    def _load(cls):
        cls().solve(sp.csr_matrix([[2.0, -1.0], [-1.0, 2.0]]), np.ones(2))
        refresh_thread_pools()  # CHOLMOD's BLAS is loaded now: let blas_threads limit it

    @staticmethod
    def _as_csc(A: sp.csr_matrix) -> sp.csc_matrix:
        # CSR arrays of a symmetric A read as CSC are A^T = A: no copy
        return sp.csc_matrix((A.data, A.indices, A.indptr), shape=A.shape)

    def _analyze(self, A):
        from sksparse.cholmod import analyze

        t0 = time.perf_counter()
        self._factor = analyze(self._as_csc(A))
        self._setup_seconds += time.perf_counter() - t0

    def _factorize(self, A):
        from sksparse.cholmod import CholmodNotPositiveDefiniteError

        try:
            self._factor.cholesky_inplace(self._as_csc(A))
        except CholmodNotPositiveDefiniteError as exc:
            raise ValueError(f"method 'cholmod': A is not positive definite ({exc}); CHOLMOD's Cholesky needs an "
                             "SPD matrix, use method 'pardiso' or 'direct'") from exc

    def _solve_factored(self, b):
        return self._factor(b)
