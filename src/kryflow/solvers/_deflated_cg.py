"""Deflated PCG: ``RecycledCG(mode="deflation")``.

Deflation space W (k vectors) with ``E = W A Wᵀ``; every iterate keeps ``W r = 0`` and the
search directions are A-orthogonal to W, so the k eigen-components W approximates drop out of
the convergence bound (Saad, Yeung, Erhel & Guyomarc'h 2000; Frank & Vuik 2001). W is
harvested from the solves: a Rayleigh–Ritz step for the pencil (A, M) on span{W, harvested
Ritz vectors} keeps the k smallest Ritz pairs. The Ritz vectors' A-images cost one pass over A
for the block; a new matrix costs k matvecs to rebuild A·W.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from ._common import stale_matrix_check
from ._eigcg import EigCG, small_eigh
from ._recycled_cg import RecycledCG
from ._system import LinearSystem

__all__ = ["DeflatedCG"]


class _WDeflation:
    """The :class:`~._pcg.Deflation` hook for W ``(k, N)``, A·W ``(k, N)`` and the Cholesky factor of E."""

    def __init__(self, W: np.ndarray, AW: np.ndarray, E_factor: tuple):
        self.W, self.AW, self.E = W, AW, E_factor
        # E^{-1} (AW) precomputed: one k x N gemv per iteration instead of a gemv plus a tiny solve
        self.EAW = np.ascontiguousarray(sla.cho_solve(E_factor, AW, check_finite=False))

    def correct(self, x: np.ndarray, r: np.ndarray) -> None:
        c = sla.cho_solve(self.E, self.W @ r, check_finite=False)
        x += c @ self.W
        r -= c @ self.AW

    def project(self, z: np.ndarray) -> np.ndarray:
        return z - (self.EAW @ z) @ self.W


class DeflatedCG(RecycledCG, mode="deflation"):
    """Deflated PCG with a harvested space W; see :class:`RecycledCG` for the arguments.

    ``matrix_changed`` must be True whenever A differs from the previous call (A·W is rebuilt,
    k matvecs); a changed matrix passed with False raises ValueError (stale A·W). Harvesting
    runs for ``harvest_solves`` solves, then restarts when iterations drift up.
    """

    def _harvest_dim(self, harvest_per_solve: int) -> int:
        return self.k

    def _prepare(self, system: LinearSystem, matrix_changed: bool) -> int:
        mv = 0
        if self.W is not None and matrix_changed:
            self.AW = np.ascontiguousarray(system.matvec(self.W.T).T)
            mv = self.W.shape[0]
            self._factor_E()
        self._fp = stale_matrix_check(self._fingerprint, system.csr, self._fp if self.W is not None else None,
                                      matrix_changed, "A·W")
        return mv

    def _wants_harvest(self) -> bool:
        return self._harvest_left > 0

    def _deflation(self) -> _WDeflation | None:
        return None if self.W is None else _WDeflation(self.W, self.AW, self._E)

    def _learn(self, system: LinearSystem, eig: EigCG) -> int:
        return self._rayleigh_ritz(system, eig, euclidean=system.M is None)

    def _schedule(self, iterations: int, harvested: bool, used_k: int) -> None:
        """Harvest for a few solves, then stop; restart harvesting when iterations drift up."""
        if harvested:
            self._harvest_left -= 1
            if self._harvest_left == 0:
                self._baseline = max(iterations, 1)
        elif self._baseline is not None and iterations > self.refresh_factor * self._baseline + 1:
            self._harvest_left = self.harvest_solves

    def _factor_E(self) -> None:
        """Cholesky factor of ``E = W A Wᵀ`` ``(k, k)``; a (numerically) dependent W is cut to its
        well-conditioned part."""
        E = self.W @ self.AW.T
        E = 0.5 * (E + E.T)
        try:
            self._E = sla.cho_factor(E, check_finite=False)
        except np.linalg.LinAlgError:
            # W became (numerically) dependent, e.g. after a sharp matrix change: keep the
            # well-conditioned part via an eigendecomposition of E
            s, Q = small_eigh(E)
            keep = s > 1e-12 * max(s.max(), 0.0)
            if not np.any(keep):
                self.W = self.AW = self._E = None
                return
            T = Q[:, keep] / np.sqrt(s[keep])
            self.W, self.AW = T.T @ self.W, T.T @ self.AW
            self._E = sla.cho_factor(np.eye(T.shape[1]), check_finite=False)

    def _rayleigh_ritz(self, system: LinearSystem, eig: EigCG, euclidean: bool) -> int:
        """Rayleigh–Ritz on span{W, harvested Ritz vectors}; keeps the k smallest. Returns matvecs."""
        Y = eig.ritz_vectors()
        if Y is None:
            return 0
        AY = np.ascontiguousarray(system.matvec(Y.T).T)  # one pass over A for all columns
        if self.W is not None:
            V, AV = np.vstack([self.W, Y]), np.vstack([self.AW, AY])
        else:
            V, AV = Y, AY
        GA = V @ AV.T
        GA = 0.5 * (GA + GA.T)
        if euclidean:
            GM = V @ V.T
        else:
            # W and the harvested vectors are each orthonormal in the preconditioner metric and
            # M-orthogonal to each other (W r_j = 0); the exact M-Gram is not computable for AMG
            GM = np.eye(V.shape[0])
        GM = 0.5 * (GM + GM.T)
        s, Q = small_eigh(GM)
        keep = s > 1e-10 * s.max()
        T = Q[:, keep] / np.sqrt(s[keep])
        theta, S = small_eigh(T.T @ GA @ T)
        C = (T @ S[:, theta > 0])[:, : self.k]
        if C.shape[1]:
            self.W = np.ascontiguousarray(C.T @ V)
            self.AW = np.ascontiguousarray(C.T @ AV)
            self._factor_E()
        return Y.shape[0]
