"""Deflated (recycled) preconditioned CG for sequences of SPD systems.

Deflation space W (k vectors) with ``E = W^T A W``; every iterate keeps ``W^T r = 0`` and the
search directions are A-orthogonal to W, so the k eigen-components W approximates drop out of
the convergence bound (Saad, Yeung, Erhel & Guyomarc'h 2000; Frank & Vuik 2001).

W is harvested eigCG-style from the solves themselves: the first ``harvest_size`` preconditioned
residuals of a solve are the PCG Lanczos vectors (M-orthogonal, ``M z_j = r_j``), their A-images
come free from the CG recurrences, and a Rayleigh–Ritz step for the pencil (A, M) on
span{W, Lanczos vectors} keeps the k smallest Ritz pairs. No extra matvecs are spent except
k to rebuild A·W when the matrix changes.

``mode="spectral"`` recycles the same eigen-information as a preconditioner instead: an
incremental spectral preconditioner (Giraud, Gratton & Martin 2007; Carpentieri, Duff & Giraud
2003) ``P = M⁻¹ + Σ_i c_i y_i y_iᵀ`` that moves each harvested small eigenvalue μ_i of P·A to
θ (``c_i = θ/μ_i − 1``). Every solve adds the small Ritz pairs of its own PCG run, read off the
Lanczos window with no matvecs, until the space holds ``recycle_dim`` vectors. P stays SPD for
any A, so a changed matrix needs no rebuild: the space is only stale, not wrong. This suits
sequences whose small eigenvalues are many (3D, high contrast), where the k matvecs per new
matrix that deflation spends rebuilding A·W outweigh what k vectors save.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from . import _kernels as _k
from ._common import MatrixFingerprint, SolveInfo, as_preconditioner, check_system, nrm2
from ._krylov import check_params, tolerance

__all__ = ["RecycledCG"]


def _eigh(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric eigendecomposition of a small matrix, ascending eigenvalues.

    LAPACK ``syev``: for the 10-50 sized matrices here it is ~100x faster than numpy's
    default divide-and-conquer path, whose threading overhead dominates at this size.
    """
    return sla.eigh(S, driver="ev", check_finite=False)


class RecycledCG:
    """Deflated PCG that carries a recycle space from one solve to the next.

    **Arguments:**
        recycle_dim: k, number of deflation vectors kept (0 = plain PCG).
        harvest_size: eigCG window m (default ``2k + 16``): Lanczos vectors kept in memory.
        harvest_solves: consecutive solves that harvest after a (re)start of harvesting.
        refresh_factor: harvesting restarts when a solve needs more than this times the
            iterations of the solve that ended the last harvesting phase (iterations drifting up).
        adaptive: switch recycling off while solves take fewer than 2k iterations (a strong
            preconditioner): rebuilding A·W then costs more matvecs than deflation can save.
            It switches back on when a solve needs 4k iterations or more.
        mode: ``"deflation"`` (exact deflation with W, A·W rebuilt per new matrix) or
            ``"spectral"`` (incremental spectral preconditioner, see the module docstring):
            ``recycle_dim`` is then the most vectors it holds; every solve adds up to
            ``harvest_per_solve`` until it is full; it is emptied and refilled when a solve needs
            more than ``refresh_factor`` times the iterations of the first solve with it full.
            ``harvest_solves`` applies to deflation only; ``adaptive`` to both (with k the
            per-solve harvest in spectral mode). Each iteration costs 2·(vectors held) extra
            vector passes in both modes; the space holds recycle_dim × N doubles (deflation) or
            single-precision numbers (spectral).

    Use :meth:`solve` once per system, in sequence order.
    """

    def __init__(self, recycle_dim: int = 8, harvest_size: int | None = None, harvest_solves: int = 4,
                 refresh_factor: float = 1.3, adaptive: bool = True, mode: str = "deflation",
                 harvest_per_solve: int = 16):
        if mode not in ("deflation", "spectral"):
            raise ValueError(f"recycle_mode must be 'deflation' or 'spectral', got {mode!r}")
        self.mode = mode
        if isinstance(harvest_per_solve, bool) or not isinstance(harvest_per_solve, (int, np.integer)) \
                or harvest_per_solve < 1:
            raise ValueError(f"harvest_per_solve must be an integer >= 1, got {harvest_per_solve!r}")
        if isinstance(recycle_dim, bool) or not isinstance(recycle_dim, (int, np.integer)) or recycle_dim < 0:
            raise ValueError(f"recycle_dim must be an integer >= 0, got {recycle_dim!r}")
        self.k = int(recycle_dim)
        # Ritz pairs one solve harvests: the whole space (deflation) or a slice of it (spectral)
        self.kh = self.k if mode == "deflation" else min(self.k, int(harvest_per_solve))
        self.harvest_size = int(harvest_size) if harvest_size is not None else 2 * self.kh + 16
        if self.harvest_size < 1:
            raise ValueError(f"harvest_size must be >= 1, got {harvest_size!r}")
        self.harvest_solves = int(harvest_solves)
        self.refresh_factor = float(refresh_factor)
        self.W: np.ndarray | None = None  # (k, N), rows are vectors
        self.AW: np.ndarray | None = None
        self._E: Any = None
        self._shift: np.ndarray | None = None  # spectral mode: c_i = theta/mu_i - 1 per row of W
        self._fingerprint = MatrixFingerprint()
        self._fp: tuple | None = None
        self._harvest_left = self.harvest_solves
        self._baseline: int | None = None
        self.adaptive = bool(adaptive)
        self.active = True
        self.last_info: SolveInfo | None = None

    @property
    def recycle_dim(self) -> int:
        return 0 if self.W is None else self.W.shape[0]

    def reset(self) -> None:
        """Forget the recycle space (e.g. when the problem size changes)."""
        self.W = self.AW = self._E = self._shift = None
        self._fp = None
        self._harvest_left = self.harvest_solves
        self._baseline = None

    # ------------------------------------------------------------------------------------
    def _factor_E(self) -> None:
        E = self.W @ self.AW.T
        E = 0.5 * (E + E.T)
        try:
            self._E = sla.cho_factor(E, check_finite=False)
        except np.linalg.LinAlgError:
            # W became (numerically) dependent, e.g. after a sharp matrix change: keep the
            # well-conditioned part via an eigendecomposition of E
            s, Q = _eigh(E)
            keep = s > 1e-12 * max(s.max(), 0.0)
            if not np.any(keep):
                self.W = self.AW = self._E = None
                return
            T = Q[:, keep] / np.sqrt(s[keep])
            self.W, self.AW = T.T @ self.W, T.T @ self.AW
            self._E = sla.cho_factor(np.eye(T.shape[1]), check_finite=False)

    def _Einv(self, v: np.ndarray) -> np.ndarray:
        return sla.cho_solve(self._E, v, check_finite=False)

    def _prepare(self, A: sp.csr_matrix, matrix_changed: bool) -> int:
        """Make A·W consistent with A; returns matvecs spent."""
        if self.W is not None and self.W.shape[1] != A.shape[0]:
            self.reset()
        if self.mode == "spectral":
            return 0  # the spectral preconditioner is SPD for any A: nothing to rebuild, nothing stale
        fp = self._fingerprint(A)
        mv = 0
        if self.W is not None:
            if matrix_changed:
                self.AW = np.ascontiguousarray((A @ self.W.T).T)
                mv += self.W.shape[0]
                self._factor_E()
            elif fp != self._fp:
                raise ValueError(
                    "stale recycle space: matrix_changed=False but A differs from the matrix A·W was built "
                    "with; pass matrix_changed=True whenever the matrix changes"
                )
        self._fp = fp
        return mv

    def solve(self, A, b, x0=None, *, rtol=1e-8, atol=0.0, maxiter=None, M=None, matrix_changed=True,
              callback: Callable[[np.ndarray], Any] | None = None) -> tuple[np.ndarray, SolveInfo]:
        """Solve ``A x = b`` (A SPD, N x N; b, x0 of shape (N,)) deflating with the recycle space.

        ``matrix_changed`` must be True whenever A differs from the previous call (A·W is
        rebuilt, k matvecs); a changed A passed with False raises ValueError (stale A·W).
        Returns ``(x, SolveInfo)``; ``SolveInfo.converged`` reports the true residual check.
        """
        t0 = time.perf_counter()
        A, b = check_system(A, b)
        n = b.shape[0]
        maxiter = check_params(rtol, atol, maxiter, n)
        Mf = as_preconditioner(M, n)
        mv = self._prepare(A, matrix_changed)
        used_k = self.recycle_dim
        if self.mode == "spectral":
            harvest = self.k > 0 and self.active and used_k < self.k
        else:
            harvest = self.k > 0 and self.active and self._harvest_left > 0
        x, its, mv2, ok, eig = self._pcg(A, b, x0, rtol, atol, maxiter, Mf, callback, harvest)
        mv += mv2
        if eig is not None:
            mv += (self._spectral_update(A, Mf, eig) if self.mode == "spectral"
                   else self._rayleigh_ritz(A, eig, euclidean=Mf is None))
        self._schedule(its, harvest, used_k)
        bnorm = nrm2(b)
        rel = float(nrm2(b - A @ x) / bnorm) if bnorm > 0 else 0.0
        mv += 1
        info = SolveInfo("rcg", "none" if M is None else "custom", its, mv, rel, time.perf_counter() - t0, used_k,
                         bool(ok and rel <= max(rtol, atol / bnorm if bnorm else 0.0) * (1 + 1e-12)))
        self.last_info = info
        return x, info

    def _schedule(self, its: int, harvested: bool, used_k: int) -> None:
        """Harvest for a few solves, then stop; restart harvesting when iterations drift up."""
        if self.adaptive and self.k > 0:
            # judged only on solves without deflation, else recycling success would switch it off
            if self.active and used_k == 0 and its < 2 * self.kh:
                self.active = False
                self.W = self.AW = self._E = self._shift = None
                return
            if not self.active and its >= 4 * self.kh:
                self.active, self._harvest_left = True, self.harvest_solves
        if self.mode == "spectral":
            if used_k < self.k or self.k == 0:
                return
            if self._baseline is None:
                self._baseline = max(its, 1)  # the first solve with the space full
            elif its > self.refresh_factor * self._baseline + 1:
                self.W = self._shift = None  # too stale: empty it and harvest afresh
                self._baseline = None
            return
        if harvested:
            self._harvest_left -= 1
            if self._harvest_left == 0:
                self._baseline = max(its, 1)
        elif self._baseline is not None and its > self.refresh_factor * self._baseline + 1:
            self._harvest_left = self.harvest_solves

    # ------------------------------------------------------------------------------------
    def _pcg(self, A, b, x0, rtol, atol, maxiter, M, callback, harvest):
        """Deflated PCG; when ``harvest``, runs eigCG alongside and returns the Ritz block."""
        n = b.shape[0]
        bnorm = nrm2(b)
        tol = tolerance(bnorm, rtol, atol)
        eig = _EigCG(n, self.kh, self.harvest_size) if harvest else None
        if bnorm == 0.0:
            return np.zeros(n), 0, 0, True, None
        W, AW = self.W, self.AW
        unpreconditioned = M is None
        if self.mode == "spectral":
            if W is not None:
                M = self._spectral_preconditioner(M)
            W = AW = None
        # E^{-1} (AW) precomputed: one k x N gemv per iteration instead of a gemv plus a tiny solve
        EAW = None if W is None else np.ascontiguousarray(self._Einv(AW))
        x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64)
        its = mv = 0
        # alpha = rz/pq <= 1/lambda_min(M^-1 A): a step beyond ~1e13 x the operator scale means
        # A is numerically singular (scale: max|diag A| unpreconditioned, O(1) preconditioned)
        dmax = float(np.abs(A.diagonal()).max())
        if dmax == 0.0:
            raise ValueError("A has an all-zero diagonal, so it is not SPD; CG cannot solve it (use 'gmres' or 'direct')")
        singular_alpha = 1e13 / (dmax if unpreconditioned else 1.0)
        tol2 = tol * tol
        dinv = getattr(M, "diagonal_inverse", None)
        while True:
            if x0 is None and its == 0:
                r = b.copy()
            else:
                r = b - A @ x
                mv += 1
            if W is not None:
                # start from x with W^T r = 0: x += W E^{-1} W^T r
                c = self._Einv(W @ r)
                x += c @ W
                r -= c @ AW
            if nrm2(r) <= tol or its >= maxiter:
                return x, its, mv, nrm2(r) <= tol, eig
            z = r if M is None else M(r)
            rz = _k.dot(r, z)
            if W is not None:
                # deflated preconditioned residual: A-orthogonal to W
                z = z - (EAW @ z) @ W
            p = z.copy()
            alpha_prev = beta = 0.0
            q = np.empty(n)
            while its < maxiter:
                pq = _k.matvec_dot(A, p, q)
                mv += 1
                its += 1
                if not pq > 0.0 or rz > pq * singular_alpha:
                    raise ValueError(
                        f"deflated CG breakdown at iteration {its}: p^T A p = {pq:.3e} <= 0, so A (or the "
                        "preconditioner) is singular (step length rz/pq overflows) or not SPD; use method 'gcrodr' or 'direct'"
                    )
                alpha = rz / pq
                if eig is not None:
                    # Lanczos vector z_j / sqrt(rho_j) and diagonal 1/alpha_j + beta_{j-1}/alpha_{j-1}
                    eig.push(z / np.sqrt(rz), 1.0 / alpha + (beta / alpha_prev if alpha_prev else 0.0))
                # the kernels of pcg_core, Jacobi fused the same way: same arithmetic
                rr, rz_jacobi = _k.update_xr(x, r, p, q, alpha, dinv)
                if callback is not None:
                    callback(x)
                if rr <= tol2:
                    break
                z = r.copy() if (M is None and W is not None) else (r if M is None else M(r))
                rz_new = rr if M is None else (rz_jacobi if dinv is not None else _k.dot(r, z))
                beta = rz_new / rz
                rz = rz_new
                if W is not None:
                    z -= (EAW @ z) @ W
                if eig is not None:
                    eig.couple(-np.sqrt(beta) / alpha)
                alpha_prev = alpha
                _k.direction(p, z, beta)
            if eig is not None:
                eig.stop()  # the Lanczos relation ends where CG restarts

    def _spectral_preconditioner(self, M):
        """``P r = M⁻¹ r + Wᵀ diag(c) W r`` with the rows of W and the weights c ≥ 0 collected by
        :meth:`_spectral_update`: each row's eigenvalue (of P·A when it was harvested) is moved
        to θ. A sum of M⁻¹ and a positive semidefinite term, so SPD for any A."""
        W, c = self.W, self._shift.astype(self.W.dtype)

        def P(r):
            z = r.copy() if M is None else M(r)
            z += (c * (W @ r.astype(W.dtype, copy=False))) @ W
            return z

        return P

    def _spectral_update(self, A, M, eig: "_EigCG") -> int:
        """Add the solve's small Ritz pairs to the spectral preconditioner; no matvecs.

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
        theta = float(A.diagonal().mean()) if M is None else 1.0
        small = (mu > 0) & (mu < 0.5 * theta)
        room = self.k - self.recycle_dim
        mu, Y = mu[small][:room], Y[small][:room]
        if mu.size == 0:
            return 0
        c = theta / mu - 1.0
        # kept in single precision: the space is only a preconditioner (P stays symmetric positive
        # definite, its rounding is far below what CG notices; the true residual decides
        # convergence), and applying it, 2 passes over the space per iteration, is the cost of this
        # mode. On 3D Darcy 32³ (24 systems, 256 vectors) the same 1723 matvecs took 2.9 s instead
        # of 6.1 s.
        Y = Y.astype(np.float32)
        if self.W is None:
            self.W, self._shift = np.ascontiguousarray(Y), c
        else:
            self.W = np.ascontiguousarray(np.vstack([self.W, Y]))
            self._shift = np.concatenate([self._shift, c])
        return 0

    def _rayleigh_ritz(self, A: sp.csr_matrix, eig: "_EigCG", euclidean: bool) -> int:
        """Rayleigh–Ritz on span{W, harvested Ritz vectors}; keeps the k smallest. Returns matvecs."""
        Y = eig.ritz_vectors()
        if Y is None:
            return 0
        AY = np.ascontiguousarray((A @ Y.T).T)  # one pass over A for all columns
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
            # M-orthogonal to each other (W^T r_j = 0); the exact M-Gram is not computable for AMG
            GM = np.eye(V.shape[0])
        GM = 0.5 * (GM + GM.T)
        s, Q = _eigh(GM)
        keep = s > 1e-10 * s.max()
        T = Q[:, keep] / np.sqrt(s[keep])
        theta, S = _eigh(T.T @ GA @ T)
        C = (T @ S[:, theta > 0])[:, : self.k]
        if C.shape[1]:
            self.W = np.ascontiguousarray(C.T @ V)
            self.AW = np.ascontiguousarray(C.T @ AV)
            self._factor_E()
        return Y.shape[0]


class _EigCG:
    """Streaming thick-restart Lanczos on the (deflated, preconditioned) CG Lanczos vectors.

    Keeps a window of ``m`` vectors and the projected matrix T (tridiagonal, plus a dense
    block after restarts). When full it restarts to the 2k vectors spanned by the k smallest
    Ritz vectors of T_m and of T_{m-1} (Stathopoulos & Orginos 2010), so a whole solve feeds
    the harvest for O(m) storage.
    """

    def __init__(self, n: int, k: int, m: int):
        self.k, self.m = k, max(m, 2 * k + 2)
        self.V = np.empty((self.m, n))
        self.T = np.zeros((self.m, self.m))
        self.j = 0  # vectors in the window
        self.active = True
        self.restarts = 0

    def push(self, v: np.ndarray, diag: float) -> None:
        """Append Lanczos vector ``v`` (N,) with its diagonal entry ``v^T A v``."""
        if not self.active:
            return
        self.V[self.j] = v
        self.T[self.j, self.j] = diag
        self.j += 1

    def couple(self, off: float) -> None:
        """Coupling ``v_last^T A v_next`` between the last pushed vector and the next one."""
        if not self.active:
            return
        j = self.j
        if j == self.m:
            last_row = self._restart()
            j = self.j
            self.T[j, :j] = off * last_row  # (V Q)^T A v_next = Q^T e_{m-1} * off
        else:
            self.T[j, :j] = 0.0
            self.T[j, j - 1] = off
        self.T[:j, j] = self.T[j, :j]

    def _restart(self) -> np.ndarray:
        m, k = self.m, self.k
        _, Y1 = _eigh(self.T[:m, :m])
        _, Y2 = _eigh(self.T[: m - 1, : m - 1])
        Y = np.zeros((m, 2 * k))
        Y[:, :k] = Y1[:, :k]
        Y[: m - 1, k:] = Y2[:, :k]
        Q, _ = np.linalg.qr(Y)
        self.V[: 2 * k] = Q.T @ self.V[:m]
        Tn = Q.T @ self.T[:m, :m] @ Q
        self.T[:] = 0.0
        self.T[: 2 * k, : 2 * k] = 0.5 * (Tn + Tn.T)
        self.j = 2 * k
        self.restarts += 1
        return Q[m - 1].copy()

    def stop(self) -> None:
        self.active = False

    def ritz_pairs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The k smallest Ritz values (ascending) and vectors (rows) of the window; None if empty."""
        j = self.j
        if j == 0:
            return None
        theta, S = _eigh(self.T[:j, :j])
        k = min(self.k, j)
        return theta[:k], S[:, :k].T @ self.V[:j]

    def ritz_vectors(self) -> np.ndarray | None:
        """The k smallest Ritz vectors of the window, rows of shape (<=k, N); None if empty."""
        got = self.ritz_pairs()
        return None if got is None else got[1]
