"""The preconditioned CG iteration, shared by plain CG and both recycled CG modes.

Two optional hooks turn plain PCG into the recycled variants: a *deflation* keeps every
residual orthogonal to a recycle space W and every direction A-orthogonal to it, a *harvest*
collects the Lanczos vectors of the run (eigCG). Without hooks and callback, on a CSR matrix
with no preconditioner or Jacobi, the whole loop runs compiled (:func:`._kernels.pcg_loop`);
otherwise a Python loop calls the same kernels in the same order, so both give the same bits.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np

from . import _kernels as _k
from ._common import KrylovBreakdown, nrm2, tolerance
from ._system import LinearSystem

__all__ = ["CGOutcome", "Deflation", "Harvest", "pcg"]


class Deflation(Protocol):
    """Deflation by a recycle space W ``(k, N)`` with ``E = W A Wᵀ``."""

    def correct(self, x: np.ndarray, r: np.ndarray) -> None:
        """In place: ``x += Wᵀ E⁻¹ W r``, ``r -= (A W)ᵀ E⁻¹ W r`` (afterwards ``W r = 0``)."""

    def project(self, z: np.ndarray) -> np.ndarray:
        """``z`` ``(N,)`` made A-orthogonal to W (a new array)."""


class Harvest(Protocol):
    """A consumer of the Lanczos vectors of one CG run."""

    def push(self, v: np.ndarray, diag: float) -> None:
        """Lanczos vector ``v`` ``(N,)`` and its diagonal entry ``vᵀ A v``."""

    def couple(self, off: float) -> None:
        """The coupling ``vᵀ A v_next`` between the last pushed vector and the next one."""

    def stop(self) -> None:
        """The Lanczos relation ends here (CG restarts)."""


class CGOutcome(NamedTuple):
    """x ``(N,)``; converged: the recomputed true residual met the tolerance."""

    x: np.ndarray
    iterations: int
    matvecs: int
    converged: bool


def pcg(system: LinearSystem, rtol: float, atol: float, maxiter: int, *, preconditioned_scale: bool | None = None,
        deflation: Deflation | None = None, harvest: Harvest | None = None,
        callback: Callable[[np.ndarray], Any] | None = None) -> CGOutcome:
    """Preconditioned CG on ``system`` (A SPD, M SPD), restarted from the true residual whenever
    the recurrence claims convergence.

    **Arguments:**
        system: A, b, x0 and M. rtol, atol: stop at ``||b - A x|| <= max(rtol ||b||, atol)``.
        maxiter: iterations in all.
        preconditioned_scale: whether ``M A`` is O(1)-scaled (default: ``system.M`` is given); it
            sets the step length that counts as singular.
        deflation, harvest: the hooks of recycled CG (module docstring).
        callback: ``callback(x)`` after each iteration (forces the Python loop).

    **Returns:** a :class:`CGOutcome`. Raises :class:`~._common.KrylovBreakdown` (a ``ValueError``)
    on a breakdown (A singular or not SPD), carrying the last iterate.
    """
    bnorm = system.bnorm
    tol = tolerance(bnorm, rtol, atol)
    if bnorm == 0.0:
        return CGOutcome(np.zeros(system.n), 0, 0, True)
    x, r, mv = system.start()
    try:
        loop = _CGIterations(system, tol, preconditioned_scale, deflation, harvest, callback)
    except KrylovBreakdown as exc:
        raise exc.reached(x, 0, mv) from None
    mv += loop.scale_matvecs
    its = 0
    while True:
        if deflation is not None:
            deflation.correct(x, r)  # start from x with W r = 0
        if nrm2(r) <= tol:
            return CGOutcome(x, its, mv, True)
        if its >= maxiter:
            return CGOutcome(x, its, mv, False)
        try:
            k = loop.run(x, r, its, maxiter)
        except KrylovBreakdown as exc:  # x holds the last iterate before the failed step
            raise exc.reached(x, exc.iterations, mv + exc.iterations - its) from None
        its += k
        mv += k
        if harvest is not None:
            harvest.stop()  # the Lanczos relation ends where CG restarts
        # verify with the true residual, and restart from it: guards against drift of the recurrence
        r = system.residual(x)
        mv += 1


class _CGIterations:
    """The CG iterations between two restarts: compiled when nothing needs Python in between."""

    def __init__(self, system: LinearSystem, tol: float, preconditioned_scale: bool | None,
                 deflation: Deflation | None, harvest: Harvest | None, callback: Callable | None):
        self.M = system.M
        self.dinv = getattr(self.M, "diagonal_inverse", None)  # Jacobi: applied inside the kernels
        self.tol2 = tol * tol
        unit = self.M is not None if preconditioned_scale is None else preconditioned_scale
        self.csr = system.csr
        self.matvec_dot = system.matvec_dot if self.csr is None else partial(_k.matvec_dot, self.csr)
        # a preconditioner built from A's stencil may offer a faster product with the same A
        offered = system.offered_product()
        if offered is not None:
            self.matvec_dot = offered
        # alpha = rz/pq <= 1/lambda_min(M^-1 A): a step beyond ~1e13 x the operator scale means A is
        # numerically singular (scale: max|diag A| unpreconditioned, O(1) preconditioned, where
        # only a zero diagonal is checked, unless the preconditioner's set-up from A checked it)
        scale, self.scale_matvecs = ((1.0, 0) if unit and (system.csr is None or offered is not None)
                                     else system.diagonal_scale())
        if scale == 0.0:
            raise KrylovBreakdown("A has an all-zero diagonal (or maps a probe vector to 0), so it is not SPD; "
                                  "CG cannot solve it (use 'gmres' or 'direct')")
        self.singular_alpha = 1e13 / (1.0 if unit else scale)
        self.deflation, self.harvest, self.callback = deflation, harvest, callback
        hooks = deflation is not None or harvest is not None
        self.compiled = (self.csr is not None and callback is None and not hooks
                         and (self.M is None or self.dinv is not None))
        # Jacobi as the compiled loop does it (r.Mr fused, M applied in the direction update),
        # unless a hook needs the preconditioned residual z itself
        self.fused_jacobi = self.dinv is not None and not hooks

    def run(self, x: np.ndarray, r: np.ndarray, done: int, maxiter: int) -> int:
        """Iterate from residual ``r`` ``(N,)`` until the recurrence converges or ``maxiter`` is
        reached (``done`` iterations already spent); ``x, r`` in place. Returns the iterations."""
        z = r if self.M is None else self.M(r)
        rz = _k.dot(r, z)
        if self.deflation is not None:
            z = self.deflation.project(z)  # deflated preconditioned residual: A-orthogonal to W
        p = z.copy()
        q = np.empty(r.shape[0])
        if not self.compiled:
            return self._python_loop(x, r, z, p, q, rz, done, maxiter)
        # plain / Jacobi PCG: the whole loop compiled (no per-iteration Python calls)
        k, status, pq = _k.pcg_loop(self.csr, x, r, p, q, self.dinv, rz, self.tol2, maxiter - done,
                                    self.singular_alpha)
        if status == _k.BREAKDOWN:
            raise _breakdown(done + k, pq)
        return k

    def _python_loop(self, x, r, z, p, q, rz: float, done: int, maxiter: int) -> int:
        M, dinv, harvest, deflation, callback = self.M, self.dinv, self.harvest, self.deflation, self.callback
        apply_dot = getattr(M, "apply_dot", None)  # (M r, r . M r) in one pass, where M offers it
        matvec_dot, tol2, singular_alpha, fused = self.matvec_dot, self.tol2, self.singular_alpha, self.fused_jacobi
        its = done
        alpha_prev = beta = 0.0
        while its < maxiter:
            pq = matvec_dot(p, q)
            its += 1
            if not pq > 0.0 or rz > pq * singular_alpha:
                raise _breakdown(its, pq)
            alpha = rz / pq
            if harvest is not None:
                # Lanczos vector z_j / sqrt(rho_j) and diagonal 1/alpha_j + beta_{j-1}/alpha_{j-1}
                harvest.push(z / np.sqrt(rz), 1.0 / alpha + (beta / alpha_prev if alpha_prev else 0.0))
            rr, rz_jacobi = _k.update_xr(x, r, p, q, alpha, dinv)
            if callback is not None:
                callback(x)
            if rr <= tol2:
                break
            if fused:
                z, rz_new = r, rz_jacobi
            elif apply_dot is not None:
                z, rz_new = apply_dot(r)
            else:
                z = r if M is None else M(r)
                rz_new = rr if M is None else (rz_jacobi if dinv is not None else _k.dot(r, z))
            beta = rz_new / rz
            rz = rz_new
            if deflation is not None:
                z = deflation.project(z)
            if harvest is not None:
                harvest.couple(-np.sqrt(beta) / alpha)
            alpha_prev = alpha
            _k.direction(p, z, beta, dinv if fused else None)
        return its - done


def _breakdown(its: int, pq: float) -> KrylovBreakdown:
    exc = KrylovBreakdown(
        f"CG breakdown at iteration {its}: p^T A p = {pq:.3e} <= 0, so A (or the preconditioner) is singular "
        "(step length rz/pq overflows) or not symmetric positive definite; use method 'gmres', 'gcrodr' or 'direct'"
    )
    exc.iterations = its  # the products spent, the failed step's included (pcg adds the iterate)
    return exc
