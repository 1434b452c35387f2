"""Recycled CG with an incremental spectral preconditioner: ``RecycledCG(mode="spectral")``.

The eigen-information deflation would use is recycled as a preconditioner instead (Giraud,
Gratton & Martin 2007; Carpentieri, Duff & Giraud 2003): ``P = M⁻¹ + Σ_i c_i y_i y_iᵀ`` moves
each harvested small eigenvalue μ_i of P·A to θ (``c_i = θ/μ_i − 1``). Every solve adds the
small Ritz pairs of its own PCG run, read off the Lanczos window with no matvecs, until the
space holds ``recycle_dim`` vectors. P stays SPD for any A, so a changed matrix needs no
rebuild: the space is only stale, not wrong. This suits sequences whose small eigenvalues are
many (3D, high contrast), where the k matvecs per new matrix that deflation spends rebuilding
A·W outweigh what k vectors save.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._eigcg import EigCG
from ._recycled_cg import RecycledCG
from ._system import LinearSystem

__all__ = ["SpectralCG"]


class SpectralCG(RecycledCG, mode="spectral"):
    """PCG with an incremental spectral preconditioner; see :class:`RecycledCG` for the arguments.

    ``recycle_dim`` is the most vectors the space holds; every solve adds up to
    ``harvest_per_solve`` until it is full; it is emptied and refilled when a solve needs more
    than ``refresh_factor`` times the iterations of the first solve with it full. Nothing is
    built from A, so there is nothing to rebuild or to go stale when the matrix changes.
    """

    def _harvest_dim(self, harvest_per_solve: int) -> int:
        return min(self.k, int(harvest_per_solve))

    def _prepare(self, system: LinearSystem, matrix_changed: bool) -> int:
        return 0  # the spectral preconditioner is SPD for any A: nothing to rebuild, nothing stale

    def _wants_harvest(self) -> bool:
        return self.recycle_dim < self.k

    def _iteration_system(self, system: LinearSystem) -> LinearSystem:
        if self.W is None:
            return system
        return system.with_start(system.x0, self._spectral_preconditioner(system.M))

    def _learn(self, system: LinearSystem, eig: EigCG) -> int:
        return self._spectral_update(system, eig)

    def _schedule(self, iterations: int, harvested: bool, used_k: int) -> None:
        """Refill the space when iterations drift up from those of the first solve with it full."""
        if used_k < self.k or self.k == 0:
            return
        if self._baseline is None:
            self._baseline = max(iterations, 1)  # the first solve with the space full
        elif iterations > self.refresh_factor * self._baseline + 1:
            self.W = self._shift = None  # too stale: empty it and harvest afresh
            self._baseline = None

    def _spectral_preconditioner(self, M: Callable | None) -> Callable[[np.ndarray], np.ndarray]:
        """``P r = M⁻¹ r + Wᵀ diag(c) W r`` (r ``(N,)``) with the rows of W ``(k, N)`` and the
        weights c ≥ 0 collected by :meth:`_spectral_update`: each row's eigenvalue (of P·A when it
        was harvested) is moved to θ. A sum of M⁻¹ and a positive semidefinite term, so SPD for any A."""
        W, c = self.W, self._shift.astype(self.W.dtype)

        def P(r):
            z = r.copy() if M is None else M(r)
            z += (c * (W @ r.astype(W.dtype, copy=False))) @ W
            return z

        return P

    def _spectral_update(self, system: LinearSystem, eig: EigCG) -> int:
        """Add the solve's small Ritz pairs to the spectral preconditioner; returns matvecs (0, or 1
        to estimate θ for an operator without a diagonal).

        The Lanczos vectors of PCG with preconditioner P are P⁻¹-orthonormal and Vᵀ A V = T, so
        a Ritz pair (μ, y = V s) of T has yᵀ P⁻¹ y = 1 and yᵀ A y = μ; ``P + (θ/μ − 1) y yᵀ``
        then maps y to θ y and leaves every P⁻¹-orthogonal eigenvector of P·A where it was.
        θ is the centre of the preconditioned spectrum: 1 with a preconditioner (M⁻¹A ≈ I; for
        Jacobi trace(D⁻¹A)/N = 1 exactly), mean(diag A) without. Only μ < θ/2 are taken.
        """
        got = eig.ritz_pairs()
        if got is None:
            return 0
        mu, Y = got
        theta, mv = system.diagonal_mean() if system.M is None else (1.0, 0)
        small = (mu > 0) & (mu < 0.5 * theta)
        room = self.k - self.recycle_dim
        mu, Y = mu[small][:room], Y[small][:room]
        if mu.size == 0:
            return mv
        c = theta / mu - 1.0
        # kept in single precision: the space is only a preconditioner (P stays symmetric positive
        # definite, its rounding is far below what CG notices; the true residual decides
        # convergence), and applying it, 2 passes over the space per iteration, is the cost of
        # this mode: halving its bytes halves that cost at the same matvec counts
        Y = Y.astype(np.float32)
        if self.W is None:
            self.W, self._shift = np.ascontiguousarray(Y), c
        else:
            self.W = np.ascontiguousarray(np.vstack([self.W, Y]))
            self._shift = np.concatenate([self._shift, c])
        return mv
