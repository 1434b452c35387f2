"""The solver-method registry: the abstract :class:`SequenceMethod`, its options, and their checks.

A method is one class on :class:`SequenceMethod` in one private module of ``kryflow.solvers``,
registered by its class statement (``class MyMethod(SequenceMethod, name="mine")``).
:data:`SOLVER_METHODS` imports every private module of the package on first use, so adding a
method is adding that module; :class:`~kryflow.solvers.SequenceSolver`, the benchmark and the
config checks read what they need (options, flags) from the class.
"""

from __future__ import annotations

import abc
import importlib
import time
from collections.abc import Mapping
from typing import Any, Callable, ClassVar, NamedTuple

import numpy as np

from kryflow._registry import Param, ParameterError, Registry, check_params

from ._common import (ATOL, MAXITER, RTOL, KrylovBreakdown, RegisteredByName, SolveInfo, check_tolerances, nrm2,
                      python_scalar, scipy_failure_code, scipy_tolerances)
from ._preconditioners import PRECONDITIONERS, preconditioner_class
from ._system import LinearSystem, make_system

__all__ = [
    "SOLVER_METHODS",
    "COMMON_OPTIONS",
    "RECYCLE_DIM",
    "RESTART",
    "ADAPTIVE",
    "MethodResult",
    "SequenceMethod",
    "method_class",
    "check_solver_options",
    "solver_options",
]

SOLVER_METHODS: Registry[type[SequenceMethod]] = Registry("solver method", package="kryflow.solvers")

RECYCLE_DIM = Param.integer(8, 0, doc="vectors kept in the recycle space (recycling methods; 0 = none)")
# options several methods declare: one Param each, so that a name means one thing everywhere
RESTART = Param.integer(30, 1, doc="Krylov subspace dimension per restart cycle")
ADAPTIVE = Param.flag(True, doc="recycling off while solves need fewer than 2 recycle_dim iterations")

COMMON_OPTIONS: dict[str, Param] = {
    "rtol": RTOL,
    "maxiter": MAXITER,
    "recycle_dim": RECYCLE_DIM,
    "warm_start": Param.flag(True, doc="start each solve from the previous solution (same size only)"),
    "start_window": Param.integer(8, 1, doc="warm start of an iterative method while the matrix stays: the "
                                  "residual-minimising combination of this many earlier solutions (1: the "
                                  "previous solution as it is)"),
    "on_nonconvergence": Param.choice("raise", "raise", "flag",
                                      doc="raise SolverDidNotConverge, or flag the record and go on"),
    "atol": ATOL,
    "blas_threads": Param.integer(1, 1, optional=True,
                                  doc="BLAS and compiled-kernel threads during a solve (null: no limit)"),
}


class MethodResult(NamedTuple):
    """What a method's iteration returns. x: ``(N,)``; matvecs exclude the final residual check."""

    x: np.ndarray
    iterations: int
    matvecs: int
    recycle_dim: int


class SequenceMethod(RegisteredByName, abc.ABC):
    """A linear solver that may carry state (recycle space, factors) from one solve to the next.

    Subclasses declare, as class attributes:
        name: the registered name (given as ``class X(SequenceMethod, name="x")``).
        OPTIONS: ``{option: Param}`` beyond :data:`COMMON_OPTIONS`, as the config spells them.
        symmetric: an SPD method; the driver builds its preconditioner symmetric.
        uses_preconditioner: False where no preconditioner applies (a direct solve).
        recycles: the method keeps a recycle space of up to ``recycle_dim`` vectors.
        cold_start: the method a recycled one is judged against (same preconditioner, cold).
        baseline: an implementation from elsewhere (scipy, pyamg, CHOLMOD, PARDISO) that
            kryflow's own methods are measured against.
        requires: ``(module, requirement)`` of an optional package the method needs (e.g.
            ``("sksparse.cholmod", "scikit-sparse<0.5")``), or None. Without it the method stays
            registered, :meth:`available` is False and :func:`check_solver_options` refuses it,
            naming the package and the install command.

    and implement :meth:`_iterate`; one-time work inside it (a symbolic analysis) adds its
    seconds to ``self._setup_seconds``, which the solve's record reports as ``setup_seconds``.
    :meth:`solve` takes scipy's arguments; :meth:`run` takes a normalised
    :class:`~._system.LinearSystem` (what the sequence driver passes).
    """

    REGISTRY = SOLVER_METHODS
    OPTIONS: ClassVar[dict[str, Param]] = {}
    symmetric: ClassVar[bool] = False
    uses_preconditioner: ClassVar[bool] = True
    recycles: ClassVar[bool] = False
    cold_start: ClassVar[str | None] = None
    baseline: ClassVar[bool] = False
    requires: ClassVar[tuple[str, str] | None] = None

    last_info: SolveInfo | None = None
    _setup_seconds: float = 0.0

    @classmethod
    def available(cls) -> bool:
        """Whether the optional package in ``requires`` imports here (always True without one)."""
        return cls.requires is None or _importable(cls.requires[0])

    @classmethod
    def warm_up(cls) -> float:
        """Load what the method's first solve would otherwise load (an optional package's shared
        libraries), once per process; returns the seconds spent (0 when already done or nothing
        to load). The sequence driver calls it before a method's first solve and reports the time
        as that solve's ``setup_seconds``; the benchmark calls it before timing."""
        if cls._warm or not cls.available():
            return 0.0
        t0 = time.perf_counter()
        cls._load()
        cls._warm = True
        return time.perf_counter() - t0

    _warm: ClassVar[bool] = False

    @classmethod
    def _load(cls) -> None:
        """Run the package the method wraps once on a tiny system (nothing for kryflow's own)."""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why the method cannot run here (the missing package and how to install it), or None."""
        if cls.available():
            return None
        module, requirement = cls.requires
        return (f"solver method {cls.name!r} needs the optional package {requirement!r} (import {module!r} failed); "
                f"install it with `pip install \"{requirement}\"` or `pip install -e \".[solvers]\"` "
                "(see the Makefile's solver-extras target), or choose another method")

    @classmethod
    def from_options(cls, recycle_dim: int, **options: Any) -> SequenceMethod:
        """The method for checked options: ``recycle_dim`` and this class's ``OPTIONS``."""
        return cls(**options)

    @property
    def recycle_dim(self) -> int:
        """Vectors in the recycle space now (0 for methods without one)."""
        return 0

    def reset(self) -> None:
        """Forget everything carried between solves (e.g. when the problem size changes)."""

    def solve(self, A: Any, b: Any, x0: Any = None, *, rtol: float = 1e-8, atol: float = 0.0,
              maxiter: int | None = None, M: Any = None, matrix_changed: bool = True,
              callback: Callable | None = None) -> tuple[np.ndarray, SolveInfo]:
        """Solve ``A x = b``, carrying state to the next call.

        **Arguments:**
            A: ``(N, N)`` sparse matrix, dense array or ``LinearOperator``. b: ``(N,)`` or ``(N, 1)``.
            x0: ``None`` (zeros), ``(N,)`` / ``(N, 1)``, or ``"Mb"``. rtol, atol: stop at
            ``||b - A x|| <= max(rtol ||b||, atol)``. maxiter: Krylov iterations (default ``10 N``).
            M: approximate inverse of A (matrix, LinearOperator or callable).
            matrix_changed: False only when A is the matrix of the previous call (state built from
                it is kept; a matrix A that differs raises ValueError; an operator is trusted).
            callback: per-iteration hook, as the method documents.

        **Returns:** ``(x, info)``: x ``(N,)`` and a :class:`SolveInfo`.
        """
        t0 = time.perf_counter()
        system = make_system(A, b, x0, M)
        maxiter = check_tolerances(rtol, atol, maxiter, system.n)
        return self.run(system, rtol=rtol, atol=atol, maxiter=maxiter, matrix_changed=matrix_changed,
                        callback=callback, started=t0)

    def solve_as_scipy(self, A: Any, b: Any, x0: Any = None, *, rtol: Any, atol: Any, maxiter: int | None, M: Any,
                       callback: Callable | None, full_output: bool) -> tuple[np.ndarray, int | SolveInfo]:
        """:meth:`solve` with scipy's convention, as ``scipy.sparse.linalg.cg`` and ``gmres`` take it:
        any ``rtol, atol >= 0`` (``rtol >= 1``, ``atol = inf`` and both 0 included; ``None`` or a
        negative value is a ``ValueError``), a zero ``x0`` costs no product, and a breakdown (A or M
        singular, A not SPD for CG) returns its last iterate as a failure instead of raising.

        **Returns:** ``(x, info)``: x ``(N,)``; info 0 on convergence, else ``maxiter`` as given
        (default ``10 N``), as scipy; a :class:`SolveInfo` when ``full_output``.
        """
        t0 = time.perf_counter()
        rtol, atol = scipy_tolerances(rtol, atol)
        system = make_system(A, b, x0, M)
        if system.x0 is not None and not system.x0.any():
            system = system.with_start(None, system.M)  # scipy: a zero start costs no product with A
        limit = 10 * system.n if maxiter is None else int(MAXITER.validate("maxiter", python_scalar(maxiter)))
        x, info = self.run(system, rtol=rtol, atol=atol, maxiter=limit, matrix_changed=True, callback=callback,
                           started=t0, on_breakdown="return")
        if full_output:
            return x, info
        return x, 0 if info.converged else scipy_failure_code(maxiter, system.b)

    def run(self, system: LinearSystem, *, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
            callback: Callable | None = None, started: float | None = None,
            preconditioner: str | None = None, on_breakdown: str = "raise") -> tuple[np.ndarray, SolveInfo]:
        """:meth:`solve` on a normalised system with checked tolerances; a zero ``b`` gives ``x = 0``.

        ``started``: ``perf_counter()`` at the start of the timed work; ``preconditioner``: the
        name to record (default "none" or "custom"); ``on_breakdown``: ``"raise"`` the
        :class:`~._common.KrylovBreakdown` of an iteration that cannot go on, or ``"return"`` its
        last iterate, recorded as not converged (scipy's convention).
        """
        t0 = time.perf_counter() if started is None else started
        bnorm = system.bnorm
        if bnorm == 0.0:
            x, its, mv, k, rel = np.zeros(system.n), 0, 0, self.recycle_dim, 0.0
        else:
            try:
                x, its, mv, k = self._iterate(system, rtol, atol, maxiter, matrix_changed, callback)
            except KrylovBreakdown as exc:
                if on_breakdown != "return" or exc.x is None:
                    raise
                x, its, mv, k = exc.x, exc.iterations, exc.matvecs, self.recycle_dim
            rel = float(nrm2(system.residual(x)) / bnorm)
            mv += 1
        ok = bnorm == 0.0 or bool(np.isfinite(rel) and rel <= max(rtol, atol / bnorm) * (1 + 1e-12))
        label = preconditioner or ("none" if system.M is None else "custom")
        setup, self._setup_seconds = self._setup_seconds, 0.0
        info = SolveInfo(self.name, label, int(its), int(mv), rel, time.perf_counter() - t0, int(k), ok,
                         float(setup))
        self.last_info = info
        return x, info

    @abc.abstractmethod
    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        """Solve a system with ``||b|| > 0``; the caller checks the true residual afterwards."""


def _importable(module: str) -> bool:
    """Whether ``module`` imports (not cached: ``sys.modules[name] = None`` makes it absent)."""
    try:
        importlib.import_module(module)
    except (ImportError, OSError):  # OSError: a package whose shared library does not load
        return False
    return True


def method_class(method: str) -> type[SequenceMethod]:
    """The registered class of ``method``; :class:`ParameterError` (param ``"method"``) listing the
    valid names otherwise."""
    if not isinstance(method, str) or method not in SOLVER_METHODS:
        hint = "; 'auto' is resolved to one of them by default_strategy(family)" if method == "auto" else ""
        raise ParameterError(f"unknown solver method {method!r}; valid: {', '.join(SOLVER_METHODS)}{hint}", "method")
    return SOLVER_METHODS[method]


def check_solver_options(method: str, preconditioner: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check a solver configuration: :data:`COMMON_OPTIONS`, the method's and the preconditioner's.

    **Arguments:**
        method: a registered name, or ``"auto"`` (resolved elsewhere, by ``default_strategy``):
            then only the common and the preconditioner's options are valid.
        preconditioner: a name in ``PRECONDITIONERS``.
        options: ``{option: value}``; keys ``method`` and ``preconditioner`` are skipped, so a
            whole config section can be passed.

    **Returns:** every valid option with its value (defaults filled in). Raises
    :class:`ParameterError` whose ``param`` is the offending key: ``"method"`` or
    ``"preconditioner"`` for an unknown name or a method whose optional package is missing
    (:meth:`SequenceMethod.unavailable_reason`), the option for an unknown or invalid one.
    """
    declared = dict(COMMON_OPTIONS)
    owner = "method 'auto'"
    if method != "auto":
        declared.update(method_class(method).OPTIONS)
        missing = SOLVER_METHODS[method].unavailable_reason()
        if missing:
            raise ParameterError(missing, "method")
        owner = f"method {method!r}"
    declared.update(preconditioner_class(preconditioner).OPTIONS)
    given = {k: python_scalar(v) for k, v in options.items() if k not in ("method", "preconditioner")}
    try:
        out = check_params(declared, given, f"{owner} with preconditioner {preconditioner!r}")
    except ParameterError as exc:
        owners = [f"method {n!r}" for n, c in SOLVER_METHODS.items() if exc.param in c.OPTIONS]
        owners += [f"preconditioner {n!r}" for n, c in PRECONDITIONERS.items() if exc.param in c.OPTIONS]
        if not owners or exc.param in declared:
            raise
        raise ParameterError(f"{exc} ({exc.param!r} is an option of {', '.join(owners)})", exc.param) from None
    if out["rtol"] == 0.0 and out["atol"] == 0.0:
        raise ParameterError("rtol and atol are both 0: the solver could never stop; set rtol (e.g. 1e-8)", "rtol")
    if method != "auto":  # checks across options (GCRO-DR: restart > recycle_dim) live in the constructor
        cls = SOLVER_METHODS[method]
        cls.from_options(out["recycle_dim"], **{k: out[k] for k in cls.OPTIONS})
    return out


def solver_options() -> dict[str, Param]:
    """Every option name any solver configuration accepts, with its :class:`Param` (the config
    schema's source): the common ones, every method's and every preconditioner's."""
    out = dict(COMMON_OPTIONS)
    owners = [(f"method {n!r}", c.OPTIONS) for n, c in SOLVER_METHODS.items()]
    owners += [(f"preconditioner {n!r}", c.OPTIONS) for n, c in PRECONDITIONERS.items()]
    for owner, options in owners:
        for name, param in options.items():
            if out.setdefault(name, param) is not param:
                raise RuntimeError(f"option {name!r} of {owner} is declared differently elsewhere; share one Param")
    return out
