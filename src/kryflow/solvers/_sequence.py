"""SequenceSolver: one object that solves a sequence of related systems, carrying warm starts,
preconditioner setups, recycle spaces and LU factors from one solve to the next.

The driver is generic: what a method does, and which options it takes, is its
:class:`~._methods.SequenceMethod` class in :data:`~._methods.SOLVER_METHODS`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from ._common import SolveInfo, SolverDidNotConverge
from ._methods import check_solver_options, method_class
from ._preconditioners import make_preconditioner, preconditioner_class
from ._start import SolutionWindow
from ._system import make_system
from ._warm_up import warm_up_once

__all__ = ["SequenceSolver", "refresh_thread_pools"]

_CONTROLLER: Any = None


def refresh_thread_pools() -> None:
    """Rebuild the thread-pool controller now, so that it finds libraries loaded since (a method
    that loads MKL or a system BLAS lazily calls this from its warm-up, so that ``blas_threads``
    limits it too; building the controller takes up to a second with MKL, a one-time cost)."""
    global _CONTROLLER
    _CONTROLLER = None
    _blas_limit(1)


def _blas_limit(threads: int | None):
    """Context limiting BLAS threads (threadpoolctl, if installed; a few microseconds per use).

    The dense work here is tiny (Ritz problems of size ~2k, k x N products), where an OpenBLAS
    thread pool spinning on a busy machine costs more than the work itself (GCRO-DR and eigCG
    restarts slow down several times over). Parallelism belongs to the workflow (one job per core).
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


class SequenceSolver:
    """Solve a sequence of systems ``A_i x_i = b_i`` with state carried between solves.

    **Arguments:**
        method: a name in ``SOLVER_METHODS`` (``BASELINE_METHODS`` are there for comparison).
        preconditioner: a name in ``PRECONDITIONERS`` (recorded as "none" for methods without
            one, e.g. "direct").
        rtol: relative tolerance on the true residual ``||b - A x|| / ||b||``.
        maxiter: Krylov iterations per solve, for every method (GMRES-type: inner iterations,
            not restart cycles; ignored by "direct").
        recycle_dim: recycle-space size for the methods that recycle ("rcg", "gcrodr", ...).
        warm_start: start each solve from the previous solution (same size only).
        start_window: while the matrix stays the same (``matrix_changed=False``), an iterative
            method's warm start is the combination of the last ``start_window`` solutions that
            minimises the start's residual (:class:`~._start.SolutionWindow`: no product with A;
            never worse than the previous solution); 1 = the previous solution as it is.
        on_nonconvergence: "raise" (:class:`SolverDidNotConverge`) or "flag" (return x, record
            ``converged=False``).
        method_options: ``atol``; ``blas_threads`` (default 1; None = no limit: threads for BLAS
            and for the compiled CG kernels during a solve, so that one solver job per core does
            not oversubscribe the machine); the method's own options (its class's ``OPTIONS``, e.g.
            ``restart``; ``recycle_mode``, ``harvest_per_solve``, ... for "rcg", see
            :class:`RecycledCG`) and the preconditioner's (``amg_reuse``, ``amg_refresh``;
            ``ilu_drop_tol``, ``ilu_fill_factor``). :func:`check_solver_options` checks them all.

    Call as ``x = solver(A, b, matrix_changed=bool)`` (A ``(N, N)``: sparse matrix, or a
    ``LinearOperator`` for methods and preconditioners that need no entries; b ``(N,)``); one
    :class:`SolveInfo` per call is appended to ``records``. With an operator nothing can check
    ``matrix_changed``: it is trusted.

    Interleaved sequences: a time step that solves with several matrices in turn (Navier–Stokes:
    two momentum components and a pressure increment) tags each with ``A.sequence_key``
    (:func:`kryflow.pdes.sequence_key`). The solver keeps one state per key (factorization,
    preconditioner set-up, recycle space, window of earlier solutions, warm start), as if each
    key were a sequence of its own; a key's state that last served another matrix object is told
    the matrix changed. Untagged matrices share the one state, as before.
    """

    def __init__(self, method: str = "rcg", preconditioner: str = "amg", rtol: float = 1e-8, maxiter: int = 2000,
                 recycle_dim: int = 8, warm_start: bool = True, start_window: int = 8,
                 on_nonconvergence: str = "raise", **method_options: Any):
        self._method_class = method_class(method)  # "auto" is not a method: default_strategy resolves it
        opts = check_solver_options(method, preconditioner, {
            "rtol": rtol, "maxiter": maxiter, "recycle_dim": recycle_dim, "warm_start": warm_start,
            "start_window": start_window, "on_nonconvergence": on_nonconvergence, **method_options})
        uses_pre = self._method_class.uses_preconditioner
        self.method = method
        self.preconditioner = preconditioner if uses_pre else "none"
        self.rtol, self.maxiter, self.atol = float(opts["rtol"]), int(opts["maxiter"]), float(opts["atol"])
        self.recycle_dim = int(opts["recycle_dim"])
        self.warm_start = bool(opts["warm_start"])
        self.start_window = int(opts["start_window"])
        self.on_nonconvergence = opts["on_nonconvergence"]
        self.blas_threads = opts["blas_threads"]
        self.options = dict(method_options)
        self._method_options = {k: opts[k] for k in self._method_class.OPTIONS}
        self._pre_options = {k: opts[k] for k in preconditioner_class(preconditioner).OPTIONS} if uses_pre else {}
        self.records: list[SolveInfo] = []
        self._popped = 0
        self._key: Any = None  # the sequence_key of the state in use
        self._parked: dict[Any, tuple] = {}  # the other keys' states
        self._reset_state()

    def _reset_state(self) -> None:
        self._n: int | None = None
        self._matrix: Any = None  # the matrix of the last solve (to tell a parked state its matrix changed)
        self._x: np.ndarray | None = None
        # earlier solutions of the current matrix: only an iterative method uses a start
        use = self.warm_start and self.start_window > 1 and self._method_class.uses_preconditioner
        self._window = SolutionWindow(self.start_window) if use else None
        self._pre = make_preconditioner(self.preconditioner, symmetric=self._method_class.symmetric,
                                        **self._pre_options)
        self.solver_method = self._method_class.from_options(self.recycle_dim, **self._method_options)

    def __repr__(self) -> str:
        return (f"SequenceSolver(method={self.method!r}, preconditioner={self.preconditioner!r}, rtol={self.rtol}, "
                f"maxiter={self.maxiter}, recycle_dim={self.recycle_dim}, warm_start={self.warm_start}, "
                f"start_window={self.start_window})")

    @property
    def window(self) -> SolutionWindow | None:
        """The earlier solutions of the current matrix that warm starts combine (None: no window)."""
        return self._window

    @property
    def learner(self) -> Any:
        """The online learner of the preconditioner's parameter (SSOR ``omega: learn``), or None."""
        return getattr(self._pre, "learner", None)

    def pop_records(self) -> list[SolveInfo]:
        """Records appended since the previous call (per-sample bookkeeping)."""
        out = self.records[self._popped:]
        self._popped = len(self.records)
        return out

    def __call__(self, A, b, *, matrix_changed: bool, x0: np.ndarray | None = None) -> np.ndarray:
        """Solve ``A x = b``; ``x0`` ``(N,)``: start this solve there instead of the warm start
        (a surrogate's prediction, say), ``"zero"``: from zeros whatever ``warm_start`` says; the
        solution is the next warm start as usual."""
        with _thread_limit(self.blas_threads):
            return self._solve(A, b, matrix_changed, x0)

    def _solve(self, A, b, matrix_changed: bool, start: np.ndarray | None = None) -> np.ndarray:
        t0 = time.perf_counter()
        # a process's first solve loads the compiled kernels its strategy runs (and a method's optional
        # library): one-time cost
        warm = warm_up_once(self.method, self.preconditioner) + self._method_class.warm_up()
        matrix_changed = self._use_state_of(A, matrix_changed)
        system = make_system(A, b)
        if self._n is not None and system.n != self._n:
            self._reset_state()  # a new problem size: nothing carries over
        if self._n is None:
            matrix_changed = True
        self._n = system.n
        method = self.solver_method
        precondition = method.uses_preconditioner and system.bnorm > 0.0  # a zero b is solved by x = 0
        if precondition:
            self._pre.update(system.operator, matrix_changed)
        M = self._pre if precondition and not self._pre.identity else None
        x0 = self._start(system, start, matrix_changed)
        x, info = method.run(system.with_start(x0, M), rtol=self.rtol, atol=self.atol, maxiter=self.maxiter,
                             matrix_changed=matrix_changed, started=t0, preconditioner=self.preconditioner)
        if precondition:
            self._pre.feedback(info)
        info.setup_seconds += warm + self._pre.take_one_time_seconds()
        self.records.append(info)
        if not info.converged and self.on_nonconvergence == "raise":
            raise SolverDidNotConverge(info, self.rtol, self.maxiter)
        self._keep(x, system.b, info)
        self._matrix = A
        return x

    def _use_state_of(self, A: Any, matrix_changed: bool) -> bool:
        """Switch to the state of ``A``'s ``sequence_key`` (parking the current one); returns
        ``matrix_changed``, True where that state last solved with another matrix object."""
        key = getattr(A, "sequence_key", None)
        if key == self._key:
            return matrix_changed
        self._parked[self._key] = (self._n, self._matrix, self._x, self._window, self._pre, self.solver_method)
        self._key = key
        if key in self._parked:
            self._n, self._matrix, self._x, self._window, self._pre, self.solver_method = self._parked.pop(key)
        else:
            self._reset_state()
        return matrix_changed or self._matrix is not A

    def _start(self, system: Any, start: Any, matrix_changed: bool) -> np.ndarray | None:
        """This solve's ``x0``: the caller's, zeros, the window's combination or the previous solution."""
        if self._window is not None and matrix_changed:
            self._window.clear()  # another matrix: A x_i = b_i no longer holds for the kept pairs
        if isinstance(start, str):
            if start != "zero":
                raise ValueError(f"x0 must be None, 'zero' or an array of shape ({system.n},), got {start!r}")
            return None
        if start is not None or not self.warm_start:
            return start
        if self._window is not None and len(self._window):
            return self._window.start(system.b)
        return self._x

    def _keep(self, x: np.ndarray, b: np.ndarray, info: SolveInfo) -> None:
        """Keep ``x`` as the next warm start (and, converged, in the window; its time counts in the solve's)."""
        if not self.warm_start or not np.all(np.isfinite(x)):
            return
        t0 = time.perf_counter()
        self._x = x.copy()
        if self._window is not None and info.converged:
            self._window.add(x, b)
        info.seconds += time.perf_counter() - t0
