"""Plain (preconditioned) CG and restarted GMRES, written here so iteration counts compare
one-to-one with the recycled solvers. scipy-style calling convention."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from . import _kernels as _k
from ._common import SolveInfo, as_preconditioner, check_system, nrm2

__all__ = ["cg", "gmres", "pcg_core", "gmres_core", "tolerance", "check_params"]


def check_params(rtol: float, atol: float, maxiter: int | None, n: int) -> int:
    if not (0.0 <= rtol < 1.0) or not np.isfinite(rtol):
        raise ValueError(f"rtol must be in [0, 1), got {rtol!r}")
    if not (atol >= 0.0) or not np.isfinite(atol):
        raise ValueError(f"atol must be finite and >= 0, got {atol!r}")
    if rtol == 0.0 and atol == 0.0:
        raise ValueError("rtol and atol are both 0: the solver could never stop; set rtol (e.g. 1e-8)")
    if maxiter is None:
        return 10 * n
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive integer, got {maxiter!r}")
    return int(maxiter)


def tolerance(bnorm: float, rtol: float, atol: float) -> float:
    """Absolute residual target ``max(rtol ||b||, atol)``."""
    return max(rtol * bnorm, atol)


def pcg_core(
    A: sp.csr_matrix,
    b: np.ndarray,
    x0: np.ndarray | None,
    rtol: float,
    atol: float,
    maxiter: int,
    M: Callable[[np.ndarray], np.ndarray] | None,
    callback: Callable[[np.ndarray], Any] | None = None,
) -> tuple[np.ndarray, int, int, bool]:
    """Preconditioned CG. Returns ``(x, iterations, matvecs, converged)``; converged means the
    true residual, recomputed at the end, meets ``max(rtol ||b||, atol)``."""
    n = b.shape[0]
    bnorm = nrm2(b)
    tol = tolerance(bnorm, rtol, atol)
    x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64)
    its = mv = 0
    if bnorm == 0.0:
        return np.zeros(n), 0, 0, True
    # alpha = rz/pq <= 1/lambda_min(M^-1 A): a step beyond ~1e13 x the operator scale means
    # A is numerically singular (scale: max|diag A| unpreconditioned, O(1) preconditioned)
    dmax = float(np.abs(A.diagonal()).max())
    if dmax == 0.0:
        raise ValueError("A has an all-zero diagonal, so it is not SPD; CG cannot solve it (use 'gmres' or 'direct')")
    singular_alpha = 1e13 / (dmax if M is None else 1.0)
    tol2 = tol * tol
    dinv = getattr(M, "diagonal_inverse", None)  # Jacobi: applied inside the compiled loop
    while True:
        # (re)start from the true residual: guards against drift of the recurrence
        if x0 is None and its == 0:
            r = b.copy()
        else:
            r = b - A @ x
            mv += 1
        if nrm2(r) <= tol:
            return x, its, mv, True
        if its >= maxiter:
            return x, its, mv, False
        z = r if M is None else M(r)
        p = z.copy()
        rz = _k.dot(r, z)
        q = np.empty(n)
        if callback is None and (M is None or dinv is not None):
            # plain / Jacobi PCG: the whole loop compiled (no per-iteration Python calls)
            k, status, pq = _k.pcg_loop(A, x, r, p, q, dinv, rz, tol2, maxiter - its, singular_alpha)
            its += k
            mv += k
            if status == _k.BREAKDOWN:
                raise _breakdown(its, pq)
            continue
        while its < maxiter:
            pq = _k.matvec_dot(A, p, q)
            mv += 1
            its += 1
            if not pq > 0.0 or rz > pq * singular_alpha:
                raise _breakdown(its, pq)
            alpha = rz / pq
            rr, rz_jacobi = _k.update_xr(x, r, p, q, alpha, dinv)
            if callback is not None:
                callback(x)
            if rr <= tol2:
                break
            if dinv is not None:  # Jacobi as the compiled loop does it: r.Mr fused, M applied in direction
                z, rz_new = r, rz_jacobi
            else:
                z = r if M is None else M(r)
                rz_new = rr if M is None else _k.dot(r, z)
            beta = rz_new / rz
            rz = rz_new
            _k.direction(p, z, beta, dinv)
        # loop back to verify with the true residual


def _breakdown(its: int, pq: float) -> ValueError:
    return ValueError(
        f"CG breakdown at iteration {its}: p^T A p = {pq:.3e} <= 0, so A (or the preconditioner) "
        "is singular (step length rz/pq overflows) or not symmetric positive definite; use method 'gmres' or 'direct'"
    )


def _givens(a: float, b: float) -> tuple[float, float]:
    if b == 0.0:
        return 1.0, 0.0
    h = np.hypot(a, b)
    return a / h, b / h


def gmres_core(
    A: sp.csr_matrix,
    b: np.ndarray,
    x0: np.ndarray | None,
    rtol: float,
    atol: float,
    maxiter: int,
    M: Callable[[np.ndarray], np.ndarray] | None,
    restart: int = 30,
    callback: Callable[[float], Any] | None = None,
) -> tuple[np.ndarray, int, int, bool]:
    """Right-preconditioned restarted GMRES(restart), classical Gram–Schmidt with one
    reorthogonalisation. Returns ``(x, iterations, matvecs, converged)`` (true residual checked)."""
    n = b.shape[0]
    bnorm = nrm2(b)
    if bnorm == 0.0:
        return np.zeros(n), 0, 0, True
    tol = tolerance(bnorm, rtol, atol)
    x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64)
    its = mv = 0
    if x0 is None:
        r = b.copy()
    else:
        r = b - A @ x
        mv += 1
    beta = nrm2(r)
    m = int(restart)
    V = np.empty((m + 1, n))
    while beta > tol and its < maxiter:
        V[0] = r / beta
        H = np.zeros((m + 1, m))
        g = np.zeros(m + 1)
        g[0] = beta
        cs = np.zeros(m)
        sn = np.zeros(m)
        j = 0
        breakdown = False
        while j < m and its < maxiter:
            z = V[j] if M is None else M(V[j])
            w = A @ z
            mv += 1
            its += 1
            Vj = V[: j + 1]
            h = Vj @ w
            w -= h @ Vj
            h2 = Vj @ w  # second pass: CGS is unstable alone
            w -= h2 @ Vj
            h += h2
            hn = nrm2(w)
            H[: j + 1, j] = h
            H[j + 1, j] = hn
            if hn > 0.0:
                V[j + 1] = w / hn
            else:
                breakdown = True
            for i in range(j):
                t = cs[i] * H[i, j] + sn[i] * H[i + 1, j]
                H[i + 1, j] = -sn[i] * H[i, j] + cs[i] * H[i + 1, j]
                H[i, j] = t
            cs[j], sn[j] = _givens(H[j, j], H[j + 1, j])
            H[j, j] = cs[j] * H[j, j] + sn[j] * H[j + 1, j]
            H[j + 1, j] = 0.0
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            j += 1
            if callback is not None:
                callback(abs(g[j]) / bnorm)
            if abs(g[j]) <= tol or breakdown:
                break
        if H[j - 1, j - 1] == 0.0:
            raise ValueError("GMRES breakdown with a singular Hessenberg matrix: A appears singular; check the system")
        y = _upper_solve(H[:j, :j], g[:j])
        upd = y @ V[:j]
        x += upd if M is None else M(upd)
        r = b - A @ x
        mv += 1
        beta = nrm2(r)
        if breakdown and beta > tol:
            raise ValueError(
                f"GMRES broke down (invariant Krylov subspace) with residual {beta / bnorm:.3e}: A appears singular"
            )
    return x, its, mv, bool(beta <= tol)


def _upper_solve(R: np.ndarray, g: np.ndarray) -> np.ndarray:
    from scipy.linalg import solve_triangular

    return solve_triangular(R, g, lower=False, check_finite=False)


def _finish(name, A, b, x, its, mv, t0, converged, pre="none") -> SolveInfo:
    bnorm = nrm2(b)
    rel = float(nrm2(b - A @ x) / bnorm) if bnorm > 0 else 0.0
    return SolveInfo(name, pre, its, mv, rel, time.perf_counter() - t0, 0, converged)


def cg(A, b, x0=None, *, rtol=1e-8, atol=0.0, maxiter=None, M=None, callback=None, full_output=False):
    """Preconditioned conjugate gradients for SPD ``A``.

    **Arguments:**
        A: SPD sparse matrix ``(N, N)``. b: ``(N,)``. x0: initial guess ``(N,)`` or None (zeros).
        rtol, atol: stop when ``||b - A x|| <= max(rtol ||b||, atol)`` (unpreconditioned 2-norm).
        maxiter: iteration limit (default ``10 N``). M: approximate inverse of A (matrix,
        LinearOperator or callable ``r -> z``). callback: ``callback(xk)`` after each iteration.
        full_output: return a :class:`SolveInfo` instead of the scipy-style integer.

    **Returns:**
        ``(x, info)``: x ``(N,)``; info 0 on convergence, else the iteration count (scipy style),
        or a SolveInfo when ``full_output``.
    """
    t0 = time.perf_counter()
    A, b = check_system(A, b)
    maxiter = check_params(rtol, atol, maxiter, b.shape[0])
    x, its, mv, ok = pcg_core(A, b, x0, rtol, atol, maxiter, as_preconditioner(M, b.shape[0]), callback)
    if full_output:
        return x, _finish("cg", A, b, x, its, mv, t0, ok, "none" if M is None else "custom")
    return x, 0 if ok else its


def gmres(A, b, x0=None, *, rtol=1e-8, atol=0.0, restart=30, maxiter=None, M=None, callback=None, full_output=False):
    """Right-preconditioned restarted GMRES for general ``A``.

    Arguments as :func:`cg`; ``restart`` is the Krylov dimension per cycle, ``maxiter`` counts
    inner iterations (matvecs), and ``callback(rel_residual_estimate)`` runs after each one.
    Right preconditioning keeps the monitored residual the true (unpreconditioned) one.
    """
    t0 = time.perf_counter()
    A, b = check_system(A, b)
    maxiter = check_params(rtol, atol, maxiter, b.shape[0])
    if not isinstance(restart, (int, np.integer)) or restart < 1:
        raise ValueError(f"restart must be a positive integer, got {restart!r}")
    x, its, mv, ok = gmres_core(A, b, x0, rtol, atol, maxiter, as_preconditioner(M, b.shape[0]), restart, callback)
    if full_output:
        return x, _finish("gmres", A, b, x, its, mv, t0, ok, "none" if M is None else "custom")
    return x, 0 if ok else its
