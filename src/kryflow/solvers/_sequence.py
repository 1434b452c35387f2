"""SequenceSolver: one object that solves a sequence of related systems, carrying warm starts,
preconditioner setups, recycle spaces and LU factors from one solve to the next."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import scipy.sparse.linalg as spla

from ._common import MatrixFingerprint, SolveInfo, SolverDidNotConverge, check_system, nrm2
from ._gcrodr import GCRODR
from ._krylov import check_params, gmres_core, pcg_core
from ._preconditioners import PRECONDITIONERS, make_preconditioner
from ._recycled_cg import RecycledCG

__all__ = ["SOLVER_METHODS", "BASELINE_METHODS", "SequenceSolver"]

SOLVER_METHODS = ("cg", "rcg", "gmres", "gcrodr", "direct")
BASELINE_METHODS = ("scipy_gcrotmk",)  # scipy's gcrotmk(CU=..., discard_C=True), recycling outer vectors

_COMMON_OPTIONS = {"atol", "amg_reuse", "amg_refresh", "ilu_drop_tol", "ilu_fill_factor", "blas_threads"}

_CONTROLLER: Any = None


def _blas_limit(threads: int | None):
    """Context limiting BLAS threads (threadpoolctl, if installed; ~13 µs per use).

    The dense work here is tiny (Ritz problems of size ~2k, k x N products), where an
    OpenBLAS thread pool spinning on a busy machine made GCRO-DR 3x and eigCG restarts
    10-100x slower. Parallelism belongs to the workflow (one job per core).
    """
    global _CONTROLLER
    if threads is None:
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # optional: without it BLAS keeps its own thread count
            _CONTROLLER = False
        else:
            _CONTROLLER = ThreadpoolController()
    if _CONTROLLER is False:
        return contextlib.nullcontext()
    return _CONTROLLER.limit(limits=int(threads), user_api="blas")


@contextlib.contextmanager
def _thread_limit(threads: int | None):
    """BLAS threads (see :func:`_blas_limit`) and the compiled CG kernels' numba threads
    limited to ``threads`` for the duration; None leaves both as they are. Without a limit a
    workflow running one solver job per core would oversubscribe the cores."""
    with _blas_limit(threads):
        if threads is None:
            yield
            return
        import numba

        old = numba.get_num_threads()
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        try:
            yield
        finally:
            numba.set_num_threads(old)
_METHOD_OPTIONS = {
    "cg": set(),
    "rcg": {"harvest_size", "harvest_solves", "refresh_factor", "adaptive", "recycle_mode", "harvest_per_solve"},
    "gmres": {"restart"},
    "gcrodr": {"restart", "adaptive"},
    "scipy_gcrotmk": {"restart"},
    "direct": set(),
}


class SequenceSolver:
    """Solve a sequence of sparse systems ``A_i x_i = b_i`` with state carried between solves.

    **Arguments:**
        method: one of ``SOLVER_METHODS`` (or ``"scipy_gcrotmk"``, a baseline).
        preconditioner: one of ``PRECONDITIONERS`` (ignored, recorded as "none", for "direct").
        rtol: relative tolerance on the true residual ``||b - A x|| / ||b||``.
        maxiter: iteration limit per solve.
        recycle_dim: recycle-space size for "rcg"/"gcrodr"/"scipy_gcrotmk".
        warm_start: start each solve from the previous solution (same size only).
        on_nonconvergence: "raise" (:class:`SolverDidNotConverge`) or "flag" (return x, record
            ``converged=False``).
        method_options: ``atol``; ``restart`` (gmres/gcrodr/scipy_gcrotmk); ``harvest_size``,
            ``harvest_solves``, ``refresh_factor``, ``recycle_mode`` ("deflation" (default) |
            "spectral"), ``harvest_per_solve`` (rcg, see :class:`RecycledCG`); ``adaptive`` (rcg, gcrodr: recycling off while
            solves need < 2 recycle_dim iterations); ``amg_reuse`` ("rebuild" (default) | "aggregates" |
            "lagged"), ``amg_refresh``; ``ilu_drop_tol``, ``ilu_fill_factor``; ``blas_threads``
            (default 1; None = no limit): threads for BLAS and for the compiled CG kernels during
            a solve, so that one solver job per core does not oversubscribe the machine.

    Call as ``x = solver(A, b, matrix_changed=bool)`` (A: N x N sparse, b: (N,)); one
    :class:`SolveInfo` per call is appended to ``records``.
    """

    def __init__(self, method: str = "rcg", preconditioner: str = "amg", rtol: float = 1e-8, maxiter: int = 2000,
                 recycle_dim: int = 8, warm_start: bool = True, on_nonconvergence: str = "raise",
                 **method_options: Any):
        if method not in SOLVER_METHODS + BASELINE_METHODS:
            raise ValueError(f"unknown solver method {method!r}; valid: {SOLVER_METHODS + BASELINE_METHODS}")
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(f"unknown preconditioner {preconditioner!r}; valid: {PRECONDITIONERS}")
        if on_nonconvergence not in ("raise", "flag"):
            raise ValueError(f"on_nonconvergence must be 'raise' or 'flag', got {on_nonconvergence!r}")
        allowed = _COMMON_OPTIONS | _METHOD_OPTIONS[method]
        unknown = sorted(set(method_options) - allowed)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {sorted(allowed)}")
        self.atol = float(method_options.get("atol", 0.0))
        check_params(rtol, self.atol, maxiter, 1)
        if isinstance(recycle_dim, bool) or not isinstance(recycle_dim, (int, np.integer)) or recycle_dim < 0:
            raise ValueError(f"recycle_dim must be an integer >= 0, got {recycle_dim!r}")
        self.method = method
        self.preconditioner = "none" if method == "direct" else preconditioner
        self.rtol, self.maxiter = float(rtol), int(maxiter)
        self.recycle_dim = int(recycle_dim)
        self.warm_start = bool(warm_start)
        self.on_nonconvergence = on_nonconvergence
        self.options = dict(method_options)
        self.restart = int(method_options.get("restart", 30))
        self.blas_threads = method_options.get("blas_threads", 1)
        bt = self.blas_threads
        if bt is not None and (isinstance(bt, bool) or not isinstance(bt, (int, np.integer)) or bt < 1):
            raise ValueError(f"blas_threads must be a positive integer or None, got {bt!r}")
        self.records: list[SolveInfo] = []
        self._popped = 0
        self._fingerprint = MatrixFingerprint()
        self._reset_state()

    def _reset_state(self) -> None:
        self._n: int | None = None
        self._x: np.ndarray | None = None
        self._lu = None
        self._lu_fp = None
        self._cu: list = []
        pre_opts = {k: v for k, v in self.options.items() if k.startswith(("amg_", "ilu_"))}
        self._pre = make_preconditioner(self.preconditioner, symmetric=self.method in ("cg", "rcg"), **pre_opts)
        if self.method == "rcg":
            rc_opts = {k: self.options[k] for k in ("harvest_size", "harvest_solves", "refresh_factor", "adaptive",
                                                    "harvest_per_solve") if k in self.options}
            if "recycle_mode" in self.options:
                rc_opts["mode"] = self.options["recycle_mode"]
            self._recycler: Any = RecycledCG(self.recycle_dim, **rc_opts)
        elif self.method == "gcrodr":
            self._recycler = GCRODR(self.recycle_dim, self.restart, self.options.get("adaptive", True))
        else:
            self._recycler = None

    def __repr__(self) -> str:
        return (f"SequenceSolver(method={self.method!r}, preconditioner={self.preconditioner!r}, rtol={self.rtol}, "
                f"maxiter={self.maxiter}, recycle_dim={self.recycle_dim}, warm_start={self.warm_start})")

    def pop_records(self) -> list[SolveInfo]:
        """Records appended since the previous call (per-sample bookkeeping)."""
        out = self.records[self._popped:]
        self._popped = len(self.records)
        return out

    def __call__(self, A, b, *, matrix_changed: bool) -> np.ndarray:
        with _thread_limit(self.blas_threads):
            return self._solve(A, b, matrix_changed)

    def _solve(self, A, b, matrix_changed: bool) -> np.ndarray:
        t0 = time.perf_counter()
        A, b = check_system(A, b)
        n = b.shape[0]
        if self._n is not None and n != self._n:
            self._reset_state()  # a new problem size: nothing carries over
        if self._n is None:
            matrix_changed = True
        self._n = n
        bnorm = nrm2(b)
        if bnorm == 0.0:
            x = np.zeros(n)
            info = SolveInfo(self.method, self.preconditioner, 0, 0, 0.0, time.perf_counter() - t0,
                             self._recycle_size(), True)
        elif self.method == "direct":
            x, info = self._direct(A, b, matrix_changed, t0)
        else:
            x, info = self._iterative(A, b, matrix_changed, t0)
        self.records.append(info)
        if not info.converged:
            if self.on_nonconvergence == "raise":
                raise SolverDidNotConverge(info, self.rtol, self.maxiter)
        if self.warm_start and np.all(np.isfinite(x)):
            self._x = x.copy()
        return x

    def _recycle_size(self) -> int:
        if self._recycler is not None:
            return self._recycler.recycle_dim
        return len(self._cu)

    def _direct(self, A, b, matrix_changed, t0):
        fp = self._fingerprint(A)
        if self._lu is None or matrix_changed:
            try:
                self._lu = spla.splu(A.tocsc())
            except RuntimeError as exc:
                raise ValueError(f"direct solver: LU factorization failed ({exc}); A is singular") from exc
        elif fp != self._lu_fp:
            raise ValueError(
                "matrix_changed=False but A differs from the factorized matrix (stale LU); pass matrix_changed=True"
            )
        self._lu_fp = fp
        x = self._lu.solve(b)
        rel = float(nrm2(b - A @ x) / nrm2(b))
        ok = bool(np.isfinite(rel) and rel <= max(self.rtol, self.atol / nrm2(b)))
        return x, SolveInfo("direct", "none", 0, 1, rel, time.perf_counter() - t0, 0, ok)

    def _iterative(self, A, b, matrix_changed, t0):
        self._pre.update(A, matrix_changed)
        M = None if self.preconditioner == "none" else self._pre
        x0 = self._x if (self.warm_start and self._x is not None) else None
        rtol, atol, maxiter = self.rtol, self.atol, self.maxiter
        if self.method == "cg":
            x, its, mv, _ = pcg_core(A, b, x0, rtol, atol, maxiter, M)
            k = 0
        elif self.method == "gmres":
            x, its, mv, _ = gmres_core(A, b, x0, rtol, atol, maxiter, M, self.restart)
            k = 0
        elif self.method == "scipy_gcrotmk":
            x, its, mv = self._gcrotmk(A, b, x0, M, matrix_changed)
            k = len(self._cu)
        else:
            x, rinfo = self._recycler.solve(A, b, x0, rtol=rtol, atol=atol, maxiter=maxiter, M=M,
                                            matrix_changed=matrix_changed)
            its, mv, k = rinfo.iterations, rinfo.matvecs, rinfo.recycle_dim
        self._pre.feedback(its)
        bnorm = nrm2(b)
        rel = float(nrm2(b - A @ x) / bnorm)
        mv += 1
        ok = bool(np.isfinite(rel) and rel <= max(rtol, atol / bnorm) * (1 + 1e-12))
        return x, SolveInfo(self.method, self.preconditioner, int(its), int(mv), rel, time.perf_counter() - t0,
                            int(k), ok)

    def _gcrotmk(self, A, b, x0, M, matrix_changed):
        count = [0]

        def mv(v):
            count[0] += 1
            return A @ v

        op = spla.LinearOperator(A.shape, matvec=mv, dtype=np.float64)
        Mop = None if M is None else spla.LinearOperator(A.shape, matvec=M, dtype=np.float64)
        # discard_C=True stores (None, u): C = A u is recomputed on the next call, so a changed
        # matrix is handled (at k matvecs per solve, counted)
        x, _ = spla.gcrotmk(op, b, x0=x0, rtol=self.rtol, atol=self.atol,
                            maxiter=max(1, self.maxiter // self.restart), M=Mop, m=self.restart,
                            k=self.recycle_dim, CU=self._cu, discard_C=True)
        return x, count[0], count[0]
