"""Loading the compiled kernels once per process, timed: :func:`warm_up`."""

from __future__ import annotations

import time

__all__ = ["warm_up", "warm_up_once"]

_DONE = False


def warm_up() -> float:
    """Load (the first time on a machine: compile, seconds) every compiled kernel the solvers use:
    CG's (:mod:`._kernels`), the geometric multigrid's (:mod:`._gmg_kernels`) and SSOR's sweep.

    Dataset generation calls it first and records its time as one-time cost, so that no solve
    pays for it; a :class:`~kryflow.solvers.SequenceSolver` whose process has not warmed up does
    it on its first solve and reports the seconds as that solve's ``setup_seconds``.

    **Returns:** the seconds it took (a fraction of a second once numba's cache is on disk).
    """
    global _DONE
    from . import _gmg, _kernels, _ssor

    t0 = time.perf_counter()
    _kernels.warm_up()
    _gmg.warm_up()
    _ssor.warm_up()
    _DONE = True
    return time.perf_counter() - t0


def warm_up_once() -> float:
    """:func:`warm_up` if this process has not run it yet, else nothing; returns the seconds spent."""
    return 0.0 if _DONE else warm_up()
