"""Loading the compiled kernels a solver strategy uses, once per process, timed: :func:`warm_up`.

The kernels are numba functions compiled with ``cache=True``: the first process on a machine (or
on a shared file system: every shard of a cluster run) compiles them into the package's
``__pycache__`` (or ``NUMBA_CACHE_DIR`` where that is set; numba falls back to a per-user cache
directory where the package is read-only), and later processes load them from there in a fraction
of a second. A strategy loads only what it runs: a CHOLMOD or LU solve none of them, an iterative
method CG's kernels (:mod:`._kernels`), and its preconditioner's own (the geometric multigrid's,
SSOR's sweep).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["KERNEL_GROUPS", "kernel_groups", "warm_up", "warm_up_once"]

#: Every group of compiled kernels, in the order they load: CG's products and updates (every
#: iterative method), the geometric multigrid's V-cycle and set-up, SSOR's sweep.
KERNEL_GROUPS = ("cg", "gmg", "ssor")
# the preconditioners that run kernels of their own
_PRECONDITIONER_GROUPS = {"gmg": "gmg", "ssor": "ssor"}

_LOADED: set[str] = set()


def kernel_groups(strategies: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """The kernel groups (:data:`KERNEL_GROUPS`) that ``strategies`` run.

    **Arguments:**
        strategies: ``{"method", "preconditioner"}`` mappings (:class:`~._sequence.SequenceSolver`
            arguments, :func:`~._benchmark.default_strategy`'s result); a ``method: choose``
            config stands for its ``strategies``.

    **Returns:** the groups, in :data:`KERNEL_GROUPS` order (empty for direct solvers alone).
    """
    from ._methods import method_class

    groups: set[str] = set()
    for strat in strategies:
        if strat.get("method") == "choose":
            groups.update(kernel_groups(strat.get("strategies") or ()))
            continue
        if not method_class(strat["method"]).uses_preconditioner:  # a direct or algebraic solver
            continue
        groups.add("cg")
        group = _PRECONDITIONER_GROUPS.get(strat.get("preconditioner", "none"))
        if group is not None:
            groups.add(group)
    return tuple(g for g in KERNEL_GROUPS if g in groups)


def _load(group: str, grid_shape: tuple[int, ...] | None = None) -> None:
    from . import _gmg, _kernels, _ssor

    if group == "gmg":
        _gmg.warm_up(grid_shape)
    else:
        {"cg": _kernels.warm_up, "ssor": _ssor.warm_up}[group]()


def warm_up(strategies: Iterable[Mapping[str, Any]] | None = None, grid_shape: tuple[int, ...] | None = None) -> float:
    """Load (the first time on a machine: compile) the compiled kernels that ``strategies`` run
    (:func:`kernel_groups`); ``None``: every kernel the solvers have. ``grid_shape`` (cells per
    dimension of the systems to come): the multigrid's V-cycle for that grid's number of levels too.

    Dataset generation calls it first with the strategy it solves with and records its time as
    one-time cost (``solver_warm_up_seconds``), so that no solve pays for it; a
    :class:`~kryflow.solvers.SequenceSolver` loads what its strategy needs and is not loaded yet
    on its first solve and reports the seconds as that solve's ``setup_seconds``.

    **Returns:** the seconds it took (a fraction of a second once numba's cache is on disk; 0 for
    a direct solver).
    """
    groups = KERNEL_GROUPS if strategies is None else kernel_groups(strategies)
    t0 = time.perf_counter()
    for group in groups:
        _load(group, grid_shape)
        _LOADED.add(group)
    return time.perf_counter() - t0


def warm_up_once(method: str, preconditioner: str) -> float:
    """:func:`warm_up` for one strategy, of the groups this process has not loaded yet; returns
    the seconds spent (0 when nothing was left to load)."""
    missing = [g for g in kernel_groups([{"method": method, "preconditioner": preconditioner}]) if g not in _LOADED]
    if not missing:
        return 0.0
    t0 = time.perf_counter()
    for group in missing:
        _load(group)
        _LOADED.add(group)
    return time.perf_counter() - t0
