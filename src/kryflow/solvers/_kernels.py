"""Compiled (numba) inner loops of the Krylov solvers.

Why: a CG iteration is memory-bound, and a numpy/scipy version moves 16 vector passes (no
fusion), pays about nine Python calls per iteration (on small grids more than the arithmetic
of the iteration itself) and runs scipy's single-threaded CSR kernel. Here the CSR product is
fused with ``p.q``, the x/r updates with ``r.r`` (and ``r.M r`` for Jacobi), so an iteration
moves the 11 vector passes plus the matrix that the bandwidth floor counts, and for plain and
Jacobi PCG the whole iteration loop runs compiled.

Determinism: rows are cut into fixed chunks of ``CHUNK`` rows whatever the thread count;
each reduction sums within a chunk in row order, then over chunks in chunk order. So results
are bit-identical with 1 or many threads, and the Python loop of :mod:`._pcg` (recycled CG,
PCG with a general preconditioner or a callback) that calls these kernels does exactly the
arithmetic of the compiled loop: an empty recycle space reproduces plain CG iteration for
iteration.

Rows run in parallel (numba threads, ``numba.set_num_threads``) from ``PARALLEL_MIN_ROWS``
rows and only with more than one thread; below that, waking the threads costs more than the
iteration saves.

Index arrays are read as unsigned views (zero-copy, indices are non-negative), and row loops
run over unsigned bounds: numba guards every access through a signed index against negative
wrap-around, which makes the kernel markedly slower than scipy's (both for signed column
indices and for signed row bounds); unsigned, the serial kernel matches scipy's and threads
speed it up. ``benchmarks/README.md`` has the measurements behind these choices.
"""

from __future__ import annotations

import time

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

__all__ = ["warm_up", "CHUNK", "PARALLEL_MIN_ROWS", "csr_arrays", "matvec", "matvec_dot", "update_xr", "direction", "dot",
           "pcg_loop", "BREAKDOWN", "CONVERGED", "MAXITER"]

CHUNK = 2048
PARALLEL_MIN_ROWS = 8192
CONVERGED, MAXITER, BREAKDOWN = 0, 1, 2
# reductions may be reordered (and so vectorized) inside a chunk: the order is still fixed by
# the compiled code and the chunk bounds, never by threads or data. Nothing else is relaxed
# (NaN/inf keep their IEEE meaning, so breakdown checks still see them).
_REASSOC = {"reassoc"}
_NO_DIAG = np.empty(0)
_U1 = np.uint64(1)


def csr_arrays(A: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, data)`` of CSR ``A`` with the index arrays viewed as unsigned."""
    unsigned = {np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}
    ip, ix = A.indptr, A.indices
    ip = ip.view(unsigned[ip.dtype]) if ip.dtype in unsigned else ip.astype(np.uint64)
    ix = ix.view(unsigned[ix.dtype]) if ix.dtype in unsigned else ix.astype(np.uint64)
    return np.ascontiguousarray(ip), np.ascontiguousarray(ix), np.ascontiguousarray(A.data, dtype=np.float64)


# --- per-chunk work, shared by the serial and parallel paths (identical arithmetic) ---------

@njit(cache=True)
def _mv_rows(indptr, indices, data, p, q, lo, hi, want_dot):
    # branches outside the row loops: a test inside kept LLVM from optimising the loops
    s = 0.0
    if want_dot:
        for i in range(lo, hi):
            acc = 0.0
            for k in range(indptr[i], indptr[i + _U1]):
                acc += data[k] * p[indices[k]]
            q[i] = acc
            s += p[i] * acc
    else:
        for i in range(lo, hi):
            acc = 0.0
            for k in range(indptr[i], indptr[i + _U1]):
                acc += data[k] * p[indices[k]]
            q[i] = acc
    return s


@njit(cache=True, fastmath=_REASSOC)
def _update_rows(x, r, p, q, dinv, alpha, lo, hi):
    rr = 0.0
    rz = 0.0
    if dinv.shape[0] > 0:
        for i in range(lo, hi):
            x[i] += alpha * p[i]
            ri = r[i] - alpha * q[i]
            r[i] = ri
            rr += ri * ri
            rz += ri * (dinv[i] * ri)
    else:
        for i in range(lo, hi):
            x[i] += alpha * p[i]
            ri = r[i] - alpha * q[i]
            r[i] = ri
            rr += ri * ri
    return rr, rz


@njit(cache=True)
def _direction_rows(p, z, dinv, beta, lo, hi):
    if dinv.shape[0] > 0:
        for i in range(lo, hi):
            p[i] = dinv[i] * z[i] + beta * p[i]
    else:
        for i in range(lo, hi):
            p[i] = z[i] + beta * p[i]


@njit(cache=True, fastmath=_REASSOC)
def _dot_rows(a, b, lo, hi):
    s = 0.0
    for i in range(lo, hi):
        s += a[i] * b[i]
    return s


@njit(cache=True)
def _ordered_sum(parts):
    s = 0.0
    for c in range(parts.shape[0]):
        s += parts[c]
    return s


# --- kernels: chunk loop, parallel from PARALLEL_MIN_ROWS rows ------------------------------

@njit(cache=True, parallel=True)
def _matvec(indptr, indices, data, p, q, want_dot, parallel):
    n = q.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    parts = np.empty(nch)
    if parallel:
        for c in prange(nch):
            parts[c] = _mv_rows(indptr, indices, data, p, q, np.uint64(c * CHUNK), np.uint64(min(n, (c + 1) * CHUNK)), want_dot)
    else:
        for c in range(nch):
            parts[c] = _mv_rows(indptr, indices, data, p, q, np.uint64(c * CHUNK), np.uint64(min(n, (c + 1) * CHUNK)), want_dot)
    return _ordered_sum(parts)


@njit(cache=True, parallel=True)
def _update_xr(x, r, p, q, dinv, alpha, parallel):
    n = x.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    prr = np.empty(nch)
    prz = np.empty(nch)
    if parallel:
        for c in prange(nch):
            prr[c], prz[c] = _update_rows(x, r, p, q, dinv, alpha, np.uint64(c * CHUNK), np.uint64(min(n, (c + 1) * CHUNK)))
    else:
        for c in range(nch):
            prr[c], prz[c] = _update_rows(x, r, p, q, dinv, alpha, np.uint64(c * CHUNK), np.uint64(min(n, (c + 1) * CHUNK)))
    return _ordered_sum(prr), _ordered_sum(prz)


@njit(cache=True, parallel=True)
def _direction(p, z, dinv, beta, parallel):
    n = p.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    if parallel:
        for c in prange(nch):
            _direction_rows(p, z, dinv, beta, np.uint64(c * CHUNK), np.uint64(min(n, (c + 1) * CHUNK)))
    else:
        for c in range(nch):
            _direction_rows(p, z, dinv, beta, np.uint64(c * CHUNK), np.uint64(min(n, (c + 1) * CHUNK)))


@njit(cache=True, parallel=True)
def _dot(a, b, parallel):
    n = a.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    parts = np.empty(nch)
    if parallel:
        for c in prange(nch):
            parts[c] = _dot_rows(a, b, np.uint64(c * CHUNK), np.uint64(min(n, (c + 1) * CHUNK)))
    else:
        for c in range(nch):
            parts[c] = _dot_rows(a, b, np.uint64(c * CHUNK), np.uint64(min(n, (c + 1) * CHUNK)))
    return _ordered_sum(parts)


@njit(cache=True)
def _pcg_loop(indptr, indices, data, x, r, p, q, dinv, rz, tol2, maxiter, singular_alpha, parallel):
    its = 0
    while its < maxiter:
        pq = _matvec(indptr, indices, data, p, q, True, parallel)
        its += 1
        if not pq > 0.0 or rz > pq * singular_alpha:
            return its, BREAKDOWN, pq
        alpha = rz / pq
        rr, rz_new = _update_xr(x, r, p, q, dinv, alpha, parallel)
        if rr <= tol2:
            return its, CONVERGED, pq
        if dinv.shape[0] == 0:
            rz_new = rr
        beta = rz_new / rz
        rz = rz_new
        _direction(p, r, dinv, beta, parallel)
    return its, MAXITER, 0.0


# --- Python-facing wrappers -----------------------------------------------------------------

def _parallel(n: int) -> bool:
    """Split rows over threads: only with more than one numba thread (on one thread the parallel
    path is slower than the serial one) and from ``PARALLEL_MIN_ROWS`` rows."""
    return n >= PARALLEL_MIN_ROWS and numba.get_num_threads() > 1


def matvec(A: sp.csr_matrix, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``q[:] = A @ p`` (CSR float64 A, contiguous float64 vectors), no allocation."""
    _matvec(*csr_arrays(A), p, q, False, _parallel(q.shape[0]))
    return q


def matvec_dot(A: sp.csr_matrix, p: np.ndarray, q: np.ndarray) -> float:
    """``q[:] = A @ p`` and return ``p . q`` from the same pass."""
    return float(_matvec(*csr_arrays(A), p, q, True, _parallel(q.shape[0])))


def update_xr(x, r, p, q, alpha: float, dinv: np.ndarray | None = None) -> tuple[float, float]:
    """``x += alpha p; r -= alpha q`` in one pass; returns ``(r.r, r.(dinv*r))`` (the second 0
    without ``dinv``)."""
    rr, rz = _update_xr(x, r, p, q, _NO_DIAG if dinv is None else dinv, float(alpha), _parallel(x.shape[0]))
    return float(rr), float(rz)


def direction(p, z, beta: float, dinv: np.ndarray | None = None) -> None:
    """``p = z + beta p`` (with ``dinv``: ``p = dinv*z + beta p``) in place."""
    _direction(p, z, _NO_DIAG if dinv is None else dinv, float(beta), _parallel(p.shape[0]))


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a . b`` with the chunked summation order of the other kernels."""
    return float(_dot(a, b, _parallel(a.shape[0])))


def pcg_loop(A, x, r, p, q, dinv, rz, tol2, maxiter, singular_alpha) -> tuple[int, int, float]:
    """Plain (``dinv`` None) or Jacobi PCG iterations from the state ``(x, r, p, rz)`` until
    ``r.r <= tol2``, ``maxiter`` iterations, or a breakdown (``p.A p <= 0`` or a step beyond
    ``singular_alpha``). Returns ``(iterations, status, last p.A p)``; ``x, r, p`` in place."""
    its, status, pq = _pcg_loop(*csr_arrays(A), x, r, p, q, _NO_DIAG if dinv is None else dinv,
                                float(rz), float(tol2), int(maxiter), float(singular_alpha), _parallel(x.shape[0]))
    return int(its), int(status), float(pq)


def warm_up() -> float:
    """Load (or, the first time on a machine, compile: seconds) every kernel specialisation that
    CG uses, so that a timed solve does not pay for loading them (a fraction of a second per
    process). Returns the seconds it took; ``kryflow.solvers.warm_up`` also loads the multigrid's."""
    t0 = time.perf_counter()
    A = sp.identity(4, format="csr") * 2.0
    for idx in (np.int32, np.int64):
        A.indices, A.indptr = A.indices.astype(idx), A.indptr.astype(idx)
        for d in (None, np.full(4, 0.5)):
            x, r, p, q = np.zeros(4), np.ones(4), np.ones(4), np.empty(4)
            pcg_loop(A, x, r, p, q, d, 4.0, 0.0, 2, 1e300)
            matvec(A, p, q)
            update_xr(x, r, p, q, 0.1, d)
            direction(p, r, 0.5, d)
            dot(p, q)
    return time.perf_counter() - t0
