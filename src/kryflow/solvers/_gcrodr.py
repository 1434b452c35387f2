"""GCRO-DR: restarted GMRES with deflated restarting and recycling across systems
(Parks, de Sturler, Mackey, Johnson & Maiti, SIAM J. Sci. Comput. 28, 2006): the method ``"gcrodr"``.

The recycle space is kept in *solution* space: ``U`` (k x N rows) with ``C = A U``
orthonormal. Arnoldi runs on ``(I - C C^T) A M^{-1}`` and stores ``Z = M^{-1} V`` (flexible
form), so a preconditioner that changes along the sequence never invalidates U; only
``C = A U`` is rebuilt (k matvecs) when the matrix changes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.linalg as sla

from kryflow._registry import ParameterError

from ._arnoldi import ArnoldiCycle
from ._common import nrm2, python_scalar, stale_matrix_check, tolerance
from ._methods import ADAPTIVE, RESTART, MethodResult
from ._recycling import RecyclingMethod
from ._system import LinearSystem

__all__ = ["GCRODR"]


class GCRODR(RecyclingMethod, name="gcrodr"):
    """GCRO-DR(m, k) that carries its harmonic-Ritz recycle space between solves.

    **Arguments:**
        recycle_dim: k, recycled vectors (0 = plain GMRES(m)).
        restart: m, total subspace size per cycle (Arnoldi length m - k once U exists).
        adaptive: see :class:`~._recycling.RecyclingMethod`.

    In :meth:`solve`, ``maxiter`` counts inner (Arnoldi) iterations, ``callback(estimate)`` gets
    the relative residual estimate after each, and ``matrix_changed=False`` with a changed matrix
    raises ValueError (stale C = A·U).
    """

    cold_start = "gmres"
    OPTIONS = {"restart": RESTART, "adaptive": ADAPTIVE}

    def __init__(self, recycle_dim: int = 8, restart: int = 30, adaptive: bool = True):
        super().__init__(recycle_dim, adaptive)
        restart = python_scalar(restart)
        if isinstance(restart, bool) or not isinstance(restart, int) or restart < 2 or restart <= self.k:
            raise ParameterError(f"restart must be an integer > recycle_dim={self.k}, got {restart!r}", "restart")
        self.m = restart
        self.U: np.ndarray | None = None  # (k, N)
        self.C: np.ndarray | None = None  # (k, N), C = A U, orthonormal rows

    @property
    def recycle_dim(self) -> int:
        return 0 if self.U is None else self.U.shape[0]

    def _drop_space(self) -> None:
        self.U = self.C = None

    def _prepare(self, system: LinearSystem, matrix_changed: bool) -> int:
        """Make C = A U consistent with A; returns the matvecs spent."""
        if self.U is not None and self.U.shape[1] != system.n:
            self.reset()
        mv = 0
        if self.U is not None and matrix_changed:
            AU = system.matvec(self.U.T)  # (N, k), one pass over A
            mv = self.U.shape[0]
            self._set_recycle(self.U, AU.T)
        self._fp = stale_matrix_check(self._fingerprint, system.csr, self._fp if self.U is not None else None,
                                      matrix_changed, "C = A·U")
        return mv

    def _set_recycle(self, U: np.ndarray, AU: np.ndarray) -> None:
        """Store U, C ``(k, N)`` (rows) with C = A U orthonormal: the thin QR of ``A U`` (given as
        rows ``(k, N)``) applied to U as well; dependent directions are dropped."""
        Q, R = np.linalg.qr(AU.T)
        d = np.abs(np.diag(R))
        keep = d > 1e-12 * max(d.max(), 1e-300)
        if not np.all(keep):  # A U lost rank (sharp matrix change): drop the dependent directions
            Q, R = np.linalg.qr(AU[keep].T)
            U = U[keep]
        if Q.shape[1] == 0:
            self.U = self.C = None
            return
        self.C = np.ascontiguousarray(Q.T)
        self.U = np.ascontiguousarray(sla.solve_triangular(R, U, trans="T", lower=False, check_finite=False))

    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        mv = self._prepare(system, matrix_changed)
        used_k = self.recycle_dim
        bnorm = system.bnorm
        tol = tolerance(bnorm, rtol, atol)
        x, r, mv_start = system.start()
        mv += mv_start
        its = 0
        while its < maxiter:
            if self.C is not None:
                # minimise over range(U) first: x += U C^T r, r -= C C^T r
                c = self.C @ r
                x += c @ self.U
                r -= c @ self.C
            beta = nrm2(r)
            if beta <= tol:
                break
            x, r, j = self._cycle(system, x, r, beta, tol, maxiter - its, callback, bnorm)
            its += j
            mv += j + 1
            if nrm2(r) <= tol:
                break
        self._adapt(its, used_k, self.k)
        return MethodResult(x, its, mv, used_k)

    def _cycle(self, system: LinearSystem, x: np.ndarray, r: np.ndarray, beta: float, tol: float, budget: int,
               callback: Callable | None, bnorm: float) -> tuple[np.ndarray, np.ndarray, int]:
        """One GCRO-DR cycle from residual r ``(N,)`` (orthogonal to C); updates the recycle space.
        **Returns:** ``(x, r, steps)``."""
        C, U = self.C, self.U
        kk = 0 if C is None else C.shape[0]
        s = self.m - kk
        cycle = ArnoldiCycle(r, beta, s, flexible=True)
        Bm = np.zeros((kk, s))

        def remove_recycled(w: np.ndarray, j: int) -> np.ndarray:
            bc = C @ w
            w -= bc @ C
            Bm[:, j] = bc
            return w

        j = cycle.run(system, tol, budget, bnorm, callback, remove_recycled if kk else None)
        y = cycle.coefficients("GCRO-DR")
        x = x + y @ cycle.Z[:j]
        if kk:
            x -= (Bm[:, :j] @ y) @ U
        r = system.residual(x)
        cycle.check_invariant(nrm2(r), tol, bnorm, "GCRO-DR")
        if self.k > 0 and self.active and j > 0:
            self._update_recycle(cycle.V[: j + 1], cycle.Z[:j], cycle.H[: j + 1, :j], Bm[:, :j])
        return x, r, j

    def _update_recycle(self, V: np.ndarray, Z: np.ndarray, Hbar: np.ndarray, Bm: np.ndarray) -> None:
        """Harmonic Ritz vectors of the cycle: solve ``G^T G p = θ G^T Ŵ^T V̂ p``, keep the k of smallest |θ|.

        **Arguments:**
            V: Arnoldi basis ``(j + 1, N)``. Z: ``M V`` ``(j, N)``. Hbar: Hessenberg matrix
            ``(j + 1, j)``. Bm: ``C A Z`` ``(kk, j)`` (kk the recycled vectors of the cycle).
        """
        C, U = self.C, self.U
        kk = 0 if C is None else C.shape[0]
        j = Z.shape[0]
        if kk:
            dnorm = 1.0 / np.linalg.norm(U, axis=1)
            Uh = U * dnorm[:, None]  # unit columns keep G well scaled
            G = np.zeros((kk + j + 1, kk + j))
            G[:kk, :kk] = np.diag(dnorm)
            G[:kk, kk:] = Bm
            G[kk:, kk:] = Hbar
            Vhat = np.vstack([Uh, Z])
            What = np.vstack([C, V])
        else:
            G, Vhat, What = Hbar, Z, V
        WV = What @ Vhat.T
        lhs = G.T @ G
        rhs = G.T @ WV
        try:
            theta, P = sla.eig(lhs, rhs, check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            return
        ok = np.isfinite(theta)
        if not np.any(ok):
            return
        order = np.argsort(np.abs(np.where(ok, theta, np.inf)))
        kk_new = min(self.k, int(ok.sum()), G.shape[1])
        cols = []
        taken = 0
        for i in order:
            if taken >= kk_new or not ok[i]:
                break
            v = P[:, i]
            if abs(theta[i].imag) > 1e-12 * abs(theta[i]):
                if theta[i].imag > 0:  # a conjugate pair: real and imaginary parts span it
                    cols += [v.real, v.imag]
                    taken += 2
            else:
                cols.append(v.real)
                taken += 1
        Pk = np.array(cols[: max(kk_new, 1)]).T
        Pk, _ = np.linalg.qr(Pk)
        # A V̂ P = Ŵ G P, so with G P = Q R:  U = V̂ P R^{-1}, C = Ŵ Q  keeps A U = C exactly
        Q, Rr = np.linalg.qr(G @ Pk)
        d = np.abs(np.diag(Rr))
        if d.min() <= 1e-14 * d.max():
            return
        self.C = np.ascontiguousarray(Q.T @ What)
        self.U = np.ascontiguousarray(sla.solve_triangular(Rr, Pk.T @ Vhat, trans="T", lower=False, check_finite=False))
