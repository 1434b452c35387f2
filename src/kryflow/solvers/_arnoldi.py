"""One cycle of right-preconditioned Arnoldi with a running Givens QR, shared by GMRES and GCRO-DR."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.linalg as sla

from ._common import nrm2
from ._system import LinearSystem

__all__ = ["ArnoldiCycle"]


def _givens(a: float, b: float) -> tuple[float, float]:
    if b == 0.0:
        return 1.0, 0.0
    h = np.hypot(a, b)
    return a / h, b / h


class ArnoldiCycle:
    """Arnoldi on ``A M`` from a residual, orthogonalised by classical Gram–Schmidt with one
    reorthogonalisation (CGS alone is unstable), with the Hessenberg matrix QR-factorised by
    Givens rotations as it grows, so the residual norm of the cycle's least-squares problem is
    known after every step.

    **Arguments:**
        r: the start residual ``(N,)``; beta: ``||r|| > 0``.
        size: s, the most Arnoldi steps (matvecs) of the cycle.
        flexible: keep ``Z = M V`` (flexible form, GCRO-DR); else the update is ``M (Vᵀ y)``.
        breakdown_tol: a new vector whose norm after orthogonalisation is at most this fraction of
            its norm before counts as zero (an invariant subspace); 0: only an exact zero does.

    **Attributes:**
        V ``(s + 1, N)``: orthonormal rows. Z ``(s, N)`` or None. H ``(s + 1, s)``: the Hessenberg
        matrix. R ``(s + 1, s)``: its rotated (upper triangular) copy; g ``(s + 1,)``: the rotated
        ``beta e_1``. j: steps taken. breakdown: the Krylov space became invariant.
    """

    def __init__(self, r: np.ndarray, beta: float, size: int, flexible: bool = False, breakdown_tol: float = 0.0):
        n = r.shape[0]
        self.V = np.empty((size + 1, n))
        self.Z = np.empty((size, n)) if flexible else None
        self.H = np.zeros((size + 1, size))
        self.R = np.zeros((size + 1, size))
        self.g = np.zeros(size + 1)
        self.g[0] = beta
        self._cs = np.zeros(size)
        self._sn = np.zeros(size)
        self.V[0] = r / beta
        self.size, self.j, self.breakdown = size, 0, False
        self.breakdown_tol = breakdown_tol

    def run(self, system: LinearSystem, tol: float, budget: int, bnorm: float,
            callback: Callable[[float], Any] | None = None,
            project: Callable[[np.ndarray, int], np.ndarray] | None = None) -> int:
        """Take steps until the residual estimate is ``<= tol``, a breakdown, ``size`` steps or
        ``budget`` steps. ``callback(estimate / bnorm)`` after each; ``project(w, j)`` may change
        ``w = A M v_j`` before it is orthogonalised (GCRO-DR removes its recycle space).
        **Returns:** the steps taken (each one matvec)."""
        M = system.M
        while self.j < self.size and self.j < budget:
            z = self.V[self.j] if M is None else M(self.V[self.j])
            if self.Z is not None:
                self.Z[self.j] = z
            w = system.matvec(z)
            if project is not None:
                w = project(w, self.j)
            estimate = self.step(w)
            if callback is not None:
                callback(estimate / bnorm)
            if estimate <= tol or self.breakdown:
                break
        return self.j

    def step(self, w: np.ndarray) -> float:
        """Orthogonalise ``w`` ``(N,)`` (overwritten) into the next basis vector; returns the
        residual norm estimate ``|g_{j+1}|``."""
        j, V = self.j, self.V
        Vj = V[: j + 1]
        h0 = nrm2(w) if self.breakdown_tol else 0.0
        h = Vj @ w
        w -= h @ Vj
        h2 = Vj @ w  # second pass: CGS is unstable alone
        w -= h2 @ Vj
        h += h2
        hn = nrm2(w)
        if hn > self.breakdown_tol * h0:
            V[j + 1] = w / hn
        else:
            hn = 0.0
            self.breakdown = True
        self.H[: j + 1, j] = h
        self.H[j + 1, j] = hn
        col = self.H[: j + 2, j].copy()
        cs, sn = self._cs, self._sn
        for i in range(j):
            t = cs[i] * col[i] + sn[i] * col[i + 1]
            col[i + 1] = -sn[i] * col[i] + cs[i] * col[i + 1]
            col[i] = t
        cs[j], sn[j] = _givens(col[j], col[j + 1])
        col[j] = cs[j] * col[j] + sn[j] * col[j + 1]
        col[j + 1] = 0.0
        self.R[: j + 2, j] = col
        self.g[j + 1] = -sn[j] * self.g[j]
        self.g[j] = cs[j] * self.g[j]
        self.j = j + 1
        return abs(self.g[j + 1])

    def coefficients(self, what: str, singular: str = "raise") -> np.ndarray:
        """``y`` ``(j,)`` minimising the cycle's residual (``x += Z y`` or ``x += M Vᵀ y``).

        A singular projected matrix (only its last diagonal entry can vanish, at a breakdown) is a
        ``ValueError`` naming ``what``, or with ``singular="least_squares"`` a minimiser all the
        same: the last coefficient 0, the others from the nonsingular leading block (scipy's
        convention: it returns such an iterate rather than raising).
        """
        j = self.j
        last = abs(self.R[j - 1, j - 1])
        if singular == "least_squares" and last <= np.finfo(float).eps * np.linalg.norm(self.H[: j + 1, j - 1]):
            y = np.zeros(j)
            if j > 1:
                y[: j - 1] = sla.solve_triangular(self.R[: j - 1, : j - 1], self.g[: j - 1], lower=False,
                                                  check_finite=False)
            return y
        if last == 0.0:
            raise ValueError(f"{what} breakdown with a singular projected (Hessenberg) matrix: A appears singular; "
                             "check the system")
        return sla.solve_triangular(self.R[:j, :j], self.g[:j], lower=False, check_finite=False)

    def check_invariant(self, residual_norm: float, tol: float, bnorm: float, what: str) -> None:
        """After the update: a breakdown short of the tolerance means A is singular (ValueError)."""
        if self.breakdown and residual_norm > tol:
            raise ValueError(f"{what} broke down (invariant Krylov subspace) with residual "
                             f"{residual_norm / bnorm:.3e}: A appears singular")
