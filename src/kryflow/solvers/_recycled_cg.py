"""Recycled preconditioned CG for sequences of SPD systems: the method ``"rcg"``.

The recycle space is harvested eigCG-style from the solves themselves: the first
``harvest_size`` preconditioned residuals of a solve are the PCG Lanczos vectors
(M-orthogonal, ``M z_j = r_j``), and the small Ritz pairs of the projected matrix are read off
that window with no extra matvecs (:class:`~._eigcg.EigCG`). What the space is used for is
the ``recycle_mode``, one subclass each:

* ``"deflation"`` (:class:`~._deflated_cg.DeflatedCG`): exact deflation with W, A·W rebuilt
  (k matvecs) for each new matrix.
* ``"spectral"`` (:class:`~._spectral_cg.SpectralCG`): an incremental spectral preconditioner,
  SPD for any A, so nothing is rebuilt when the matrix changes.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar

import numpy as np

from kryflow._registry import Param, ParameterError, check_params

from ._common import python_scalar
from ._eigcg import EigCG
from ._methods import ADAPTIVE, SOLVER_METHODS, MethodResult
from ._pcg import Deflation, pcg
from ._recycling import RecyclingMethod
from ._system import LinearSystem

__all__ = ["RecycledCG"]


class RecycledCG(RecyclingMethod, name="rcg"):
    """PCG that carries a recycle space from one solve to the next (abstract: constructing it
    gives the class of ``mode``).

    **Arguments:**
        recycle_dim: k, the most vectors kept (0 = plain PCG).
        harvest_size: eigCG window m (default ``2 kh + 16``, kh the Ritz pairs one solve harvests):
            Lanczos vectors kept in memory.
        harvest_solves: deflation: consecutive solves that harvest after a (re)start of harvesting.
        refresh_factor: harvesting restarts (deflation) or the space is emptied and refilled
            (spectral) when a solve needs more than this times the iterations of the reference
            solve (the one that ended harvesting / the first with the space full).
        adaptive: see :class:`~._recycling.RecyclingMethod` (k: the per-solve harvest kh).
        mode: ``"deflation"`` or ``"spectral"`` (the config's ``recycle_mode``, module docstring).
        harvest_per_solve: spectral: Ritz pairs one solve adds until the space is full.

    Each iteration costs 2·(vectors held) extra vector passes in both modes; the space holds
    recycle_dim × N doubles (deflation) or single-precision numbers (spectral).
    Use :meth:`solve` once per system, in sequence order; ``callback(x)`` after each iteration.
    """

    symmetric = True
    cold_start = "cg"
    OPTIONS = {
        "harvest_size": Param.integer(None, 1, optional=True, doc="eigCG window: Lanczos vectors kept per solve"),
        "harvest_solves": Param.integer(4, 0, doc="deflation: consecutive solves that harvest"),
        "refresh_factor": Param.number(1.3, 0.0, low_open=True,
                                       doc="iteration growth that restarts harvesting / refills the space"),
        "adaptive": ADAPTIVE,
        "recycle_mode": Param.choice("deflation", "deflation", "spectral",
                                     doc="use of the recycle space: exact deflation or a spectral preconditioner"),
        "harvest_per_solve": Param.integer(16, 1, doc="spectral: Ritz vectors one solve adds"),
    }
    mode: ClassVar[str] = ""
    _MODES: ClassVar[dict[str, type[RecycledCG]]] = {}

    def __init_subclass__(cls, mode: str | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if mode is not None:
            cls.mode = mode
            RecycledCG._MODES[mode] = cls

    def __new__(cls, recycle_dim: int = 8, harvest_size: int | None = None, harvest_solves: int = 4,
                refresh_factor: float = 1.3, adaptive: bool = True, mode: str = "deflation",
                harvest_per_solve: int = 16):
        if cls is RecycledCG:
            "rcg" in SOLVER_METHODS  # noqa: B015 -- loads the registry, and with it every mode's module
            cls = RecycledCG._MODES[cls.OPTIONS["recycle_mode"].validate("recycle_mode", mode)]
        return super().__new__(cls)

    def __init__(self, recycle_dim: int = 8, harvest_size: int | None = None, harvest_solves: int = 4,
                 refresh_factor: float = 1.3, adaptive: bool = True, mode: str = "deflation",
                 harvest_per_solve: int = 16):
        given = {"harvest_size": harvest_size, "harvest_solves": harvest_solves, "refresh_factor": refresh_factor,
                 "adaptive": adaptive, "recycle_mode": mode, "harvest_per_solve": harvest_per_solve}
        opts = check_params(self.OPTIONS, {k: python_scalar(v) for k, v in given.items()}, "method 'rcg'")
        if opts["recycle_mode"] != self.mode:
            raise ParameterError(f"{type(self).__name__} is recycle_mode {self.mode!r}, got {mode!r}", "recycle_mode")
        super().__init__(recycle_dim, opts["adaptive"])
        # Ritz pairs one solve harvests: the whole space (deflation) or a slice of it (spectral)
        self.kh = self._harvest_dim(opts["harvest_per_solve"])
        self.harvest_size = opts["harvest_size"] or 2 * self.kh + 16
        self.harvest_solves = opts["harvest_solves"]
        self.refresh_factor = float(opts["refresh_factor"])
        self.W: np.ndarray | None = None  # (k, N), rows are vectors
        self.AW: np.ndarray | None = None
        self._E: Any = None
        self._shift: np.ndarray | None = None
        self._harvest_left = self.harvest_solves
        self._baseline: int | None = None

    @classmethod
    def from_options(cls, recycle_dim: int, recycle_mode: str = "deflation", **options: Any) -> RecycledCG:
        return cls(recycle_dim, mode=recycle_mode, **options)

    @property
    def recycle_dim(self) -> int:
        return 0 if self.W is None else self.W.shape[0]

    def reset(self) -> None:
        super().reset()
        self._harvest_left = self.harvest_solves
        self._baseline = None

    def _drop_space(self) -> None:
        self.W = self.AW = self._E = self._shift = None

    def _iterate(self, system: LinearSystem, rtol: float, atol: float, maxiter: int, matrix_changed: bool,
                 callback: Callable | None) -> MethodResult:
        if self.W is not None and self.W.shape[1] != system.n:
            self.reset()
        mv = self._prepare(system, matrix_changed)
        used_k = self.recycle_dim
        harvesting = self.k > 0 and self.active and self._wants_harvest()
        eig = EigCG(system.n, self.kh, self.harvest_size) if harvesting else None
        x, its, mv_cg, _ = pcg(self._iteration_system(system), rtol, atol, maxiter,
                               preconditioned_scale=system.M is not None, deflation=self._deflation(),
                               harvest=eig, callback=callback)
        mv += mv_cg
        if eig is not None:
            mv += self._learn(system, eig)
        switched = self._adapt(its, used_k, self.kh)
        if switched is not False:
            if switched:
                self._harvest_left = self.harvest_solves
            self._schedule(its, harvesting, used_k)
        return MethodResult(x, its, mv, used_k)

    # --- what a mode defines -------------------------------------------------------------
    @abc.abstractmethod
    def _harvest_dim(self, harvest_per_solve: int) -> int:
        """Ritz pairs one solve harvests."""

    @abc.abstractmethod
    def _prepare(self, system: LinearSystem, matrix_changed: bool) -> int:
        """Make the recycle space consistent with A; returns the matvecs spent."""

    @abc.abstractmethod
    def _wants_harvest(self) -> bool:
        """Whether this solve harvests (recycling on and k > 0 given)."""

    def _iteration_system(self, system: LinearSystem) -> LinearSystem:
        """The system CG iterates on (the spectral mode swaps in its preconditioner)."""
        return system

    def _deflation(self) -> Deflation | None:
        """The deflation hook of this solve, if any."""
        return None

    @abc.abstractmethod
    def _learn(self, system: LinearSystem, eig: EigCG) -> int:
        """Update the recycle space from the harvest; returns the matvecs spent."""

    @abc.abstractmethod
    def _schedule(self, iterations: int, harvested: bool, used_k: int) -> None:
        """When to harvest next (after the ``adaptive`` rule has been applied)."""
