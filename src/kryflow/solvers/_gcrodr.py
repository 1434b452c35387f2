"""GCRO-DR: restarted GMRES with deflated restarting and recycling across systems
(Parks, de Sturler, Mackey, Johnson & Maiti, SIAM J. Sci. Comput. 28, 2006).

The recycle space is kept in *solution* space: ``U`` (k x N rows) with ``C = A U``
orthonormal. Arnoldi runs on ``(I - C C^T) A M^{-1}`` and stores ``Z = M^{-1} V`` (flexible
form), so a preconditioner that changes along the sequence never invalidates U; only
``C = A U`` is rebuilt (k matvecs) when the matrix changes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from ._common import MatrixFingerprint, SolveInfo, as_preconditioner, check_system, nrm2
from ._krylov import _givens, check_params, tolerance

__all__ = ["GCRODR"]


class GCRODR:
    """GCRO-DR(m, k) that carries its harmonic-Ritz recycle space between solves.

    **Arguments:**
        recycle_dim: k, recycled vectors (0 = plain GMRES(m)).
        restart: m, total subspace size per cycle (Arnoldi length m - k once U exists).
        adaptive: switch recycling off while solves take fewer than 2k iterations (rebuilding
            C = A·U then costs more matvecs than it saves); back on at 4k iterations or more.
    """

    def __init__(self, recycle_dim: int = 8, restart: int = 30, adaptive: bool = True):
        if isinstance(recycle_dim, bool) or not isinstance(recycle_dim, (int, np.integer)) or recycle_dim < 0:
            raise ValueError(f"recycle_dim must be an integer >= 0, got {recycle_dim!r}")
        if not isinstance(restart, (int, np.integer)) or restart < 2 or restart <= recycle_dim:
            raise ValueError(f"restart must be an integer > recycle_dim={recycle_dim}, got {restart!r}")
        self.k, self.m = int(recycle_dim), int(restart)
        self.U: np.ndarray | None = None  # (k, N)
        self.C: np.ndarray | None = None  # (k, N), C = A U, orthonormal rows
        self._fingerprint = MatrixFingerprint()
        self._fp: tuple | None = None
        self.adaptive = bool(adaptive)
        self.active = True
        self.last_info: SolveInfo | None = None

    @property
    def recycle_dim(self) -> int:
        return 0 if self.U is None else self.U.shape[0]

    def reset(self) -> None:
        self.U = self.C = None
        self._fp = None

    def _prepare(self, A: sp.csr_matrix, matrix_changed: bool) -> int:
        fp = self._fingerprint(A)
        mv = 0
        if self.U is not None and self.U.shape[1] != A.shape[0]:
            self.reset()
        if self.U is not None:
            if matrix_changed:
                AU = (A @ self.U.T)  # (N, k), one pass over A
                mv += self.U.shape[0]
                self._set_recycle(self.U, AU.T)
            elif fp != self._fp:
                raise ValueError(
                    "stale recycle space: matrix_changed=False but A differs from the matrix C = A·U was built "
                    "with; pass matrix_changed=True whenever the matrix changes"
                )
        self._fp = fp
        return mv

    def _set_recycle(self, U: np.ndarray, AU: np.ndarray) -> None:
        """Store U, C with C = A U orthonormal (thin QR of A U, applied to U as well)."""
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

    def solve(self, A, b, x0=None, *, rtol=1e-8, atol=0.0, maxiter=None, M=None, matrix_changed=True,
              callback: Callable[[float], Any] | None = None) -> tuple[np.ndarray, SolveInfo]:
        """Solve ``A x = b`` (A N x N, b and x0 of shape (N,)); returns ``(x, SolveInfo)``.

        ``maxiter`` counts inner (Arnoldi) iterations. ``matrix_changed=False`` with a changed A
        raises ValueError (stale C = A·U).
        """
        t0 = time.perf_counter()
        A, b = check_system(A, b)
        n = b.shape[0]
        maxiter = check_params(rtol, atol, maxiter, n)
        Mf = as_preconditioner(M, n)
        mv = self._prepare(A, matrix_changed)
        used_k = self.recycle_dim
        bnorm = nrm2(b)
        tol = tolerance(bnorm, rtol, atol)
        x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64)
        its = 0
        if bnorm == 0.0:
            x[:] = 0.0
            r = b.copy()
        elif x0 is None:
            r = b.copy()
        else:
            r = b - A @ x
            mv += 1
        while bnorm > 0 and its < maxiter:
            if self.C is not None:
                # minimise over range(U) first: x += U C^T r, r -= C C^T r
                c = self.C @ r
                x += c @ self.U
                r -= c @ self.C
            beta = nrm2(r)
            if beta <= tol:
                break
            x, r, j, mv_c = self._cycle(A, b, x, r, beta, tol, maxiter - its, Mf, callback, bnorm)
            its += j
            mv += mv_c
            if nrm2(r) <= tol:
                break
        if self.adaptive and self.k > 0:
            if self.active and used_k == 0 and its < 2 * self.k:
                self.active = False
                self.U = self.C = None
            elif not self.active and its >= 4 * self.k:
                self.active = True
        rel = float(nrm2(b - A @ x) / bnorm) if bnorm > 0 else 0.0
        mv += 1
        info = SolveInfo("gcrodr", "none" if M is None else "custom", its, mv, rel, time.perf_counter() - t0,
                         used_k, bool(rel * bnorm <= tol * (1 + 1e-12) or bnorm == 0))
        self.last_info = info
        return x, info

    def _cycle(self, A, b, x, r, beta, tol, budget, M, callback, bnorm):
        """One GCRO-DR cycle from residual r (orthogonal to C); updates the recycle space."""
        n = b.shape[0]
        C, U = self.C, self.U
        kk = 0 if C is None else C.shape[0]
        s = self.m - kk if kk else self.m
        V = np.empty((s + 1, n))
        Z = np.empty((s, n))
        H = np.zeros((s + 1, s))
        Bm = np.zeros((kk, s))
        R = np.zeros((s + 1, s))  # Givens-rotated copy of H for the running residual estimate
        g = np.zeros(s + 1)
        g[0] = beta
        cs = np.zeros(s)
        sn = np.zeros(s)
        V[0] = r / beta
        j = 0
        mv = 0
        breakdown = False
        while j < s and j < budget:
            Z[j] = V[j] if M is None else M(V[j])
            w = A @ Z[j]
            mv += 1
            if kk:
                bc = C @ w
                w -= bc @ C
                Bm[:, j] = bc
            Vj = V[: j + 1]
            h = Vj @ w
            w -= h @ Vj
            h2 = Vj @ w
            w -= h2 @ Vj
            h += h2
            hn = nrm2(w)
            H[: j + 1, j] = h
            H[j + 1, j] = hn
            if hn > 0.0:
                V[j + 1] = w / hn
            else:
                breakdown = True
            col = H[: j + 2, j].copy()
            for i in range(j):
                t = cs[i] * col[i] + sn[i] * col[i + 1]
                col[i + 1] = -sn[i] * col[i] + cs[i] * col[i + 1]
                col[i] = t
            cs[j], sn[j] = _givens(col[j], col[j + 1])
            col[j] = cs[j] * col[j] + sn[j] * col[j + 1]
            col[j + 1] = 0.0
            R[: j + 2, j] = col
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            j += 1
            if callback is not None:
                callback(abs(g[j]) / bnorm)
            if abs(g[j]) <= tol or breakdown:
                break
        if R[j - 1, j - 1] == 0.0:
            raise ValueError("GCRO-DR breakdown with a singular projected matrix: A appears singular; check the system")
        y = sla.solve_triangular(R[:j, :j], g[:j], lower=False, check_finite=False)
        x = x + y @ Z[:j]
        if kk:
            x -= (Bm[:, :j] @ y) @ U
        r = b - A @ x
        mv += 1
        if breakdown and nrm2(r) > tol:
            raise ValueError("GCRO-DR broke down (invariant subspace) short of the tolerance: A appears singular")
        if self.k > 0 and self.active and j > 0:
            self._update_recycle(V[: j + 1], Z[:j], H[: j + 1, :j], Bm[:, :j])
        return x, r, j, mv

    def _update_recycle(self, V, Z, Hbar, Bm) -> None:
        """Harmonic Ritz vectors of the cycle: solve ``G^T G p = θ G^T Ŵ^T V̂ p``, keep smallest |θ|."""
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
