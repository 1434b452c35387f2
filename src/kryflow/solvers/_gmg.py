"""Geometric multigrid on the structured grid of the PDE families: the preconditioner ``"gmg"``.

Every family assembles its matrix on a cell grid and tags it with ``A.grid_shape``
(:func:`kryflow.pdes.on_grid`). Knowing the grid, the coarse levels need no algebraic set-up
(no strength graph, no aggregation, no smoothed prolongator as in pyamg): the grid is coarsened
by two in every dimension (:mod:`._gmg_kernels` has the layout), the prolongation is read off the
fine stencil (operator-dependent interpolation as in black-box multigrid, or bi/trilinear), and
each coarse operator is the Galerkin product ``P^T A P``, computed stencil by stencil in
compiled code. Everything that depends on the grid alone (index tables, level sizes) is built
once per grid shape and reused along the sequence; a new matrix costs one pass that refills the
stencils, the interpolation weights and the coarse operators. On a 2D grid the V-cycle runs on
row kernels (:func:`._gmg_kernels.vcycle_2d`), and CG may take its products with A from the
fine stencil (:meth:`GMGPreconditioner.matvec_dot_for`).
"""

from __future__ import annotations

import functools
import itertools
import time
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from kryflow._registry import Param

from . import _gmg_kernels as _g
from ._preconditioners import Preconditioner, _assembled

__all__ = ["GMGPreconditioner", "grid_levels"]

COARSEST_MAX = 64  # unknowns of the coarsest level (solved exactly); below, one more level costs more than it saves
COARSEST_LIMIT = 4096  # a grid that cannot be coarsened below this is refused


class _Level(NamedTuple):
    """Index tables of one level (grid only, no matrix values).

    shape: cells per dimension; strides ``(d,)``: padded flat strides; size: padded points Np;
    inner ``(N,)`` int32: padded index of each unknown (C order); deltas ``(S, d)``, off ``(S,)``:
    stencil offsets (the fine level: the 2d+1 star; coarse levels: all 3^d); centre: slot of
    offset 0; slot_of, slot_base: ``slot_of[delta + slot_base]`` is the slot of flat offset delta
    (-1 if none).
    """

    shape: tuple[int, ...]
    strides: np.ndarray
    size: int
    inner: np.ndarray
    deltas: np.ndarray
    off: np.ndarray
    centre: int
    slot_of: np.ndarray
    slot_base: int


class _Transfer(NamedTuple):
    """From one level to the next coarser: even_mask ``(N,)`` (bit e: the point's index along e
    is even, i.e. not a coarse one), parent ``(Np, 2^d)`` int32: padded coarse index per corner,
    ghost ``(N, 2^d)``: that corner is no coarse unknown."""

    even_mask: np.ndarray
    parent: np.ndarray
    ghost: np.ndarray


def _level(shape: tuple[int, ...], star: bool) -> _Level:
    d = len(shape)
    padded = tuple(n + 2 for n in shape)
    strides = np.array([int(np.prod(padded[e + 1:])) for e in range(d)], dtype=np.int64)
    grids = np.meshgrid(*[np.arange(1, n + 1) for n in shape], indexing="ij")
    inner = sum(g.ravel() * s for g, s in zip(grids, strides)).astype(np.int32)
    if star:
        deltas = np.zeros((2 * d + 1, d), dtype=np.int64)
        for e in range(d):
            deltas[2 * e + 1, e], deltas[2 * e + 2, e] = -1, 1
    else:
        deltas = np.array(list(itertools.product((-1, 0, 1), repeat=d)), dtype=np.int64)
    off = deltas @ strides
    base = int(strides.sum())
    slot_of = np.full(2 * base + 1, -1, dtype=np.int64)
    slot_of[off + base] = np.arange(off.shape[0])
    centre = int(np.flatnonzero(off == 0)[0])
    return _Level(tuple(shape), strides, int(np.prod(padded)), inner, deltas, off, centre, slot_of, base)


def _transfer(fine: _Level, coarse: _Level) -> _Transfer:
    d = len(fine.shape)
    grids = [g.ravel() for g in np.meshgrid(*[np.arange(n) for n in fine.shape], indexing="ij")]
    even_mask = sum(((g % 2 == 0).astype(np.int64) << e) for e, g in enumerate(grids))
    ncorner = 2**d
    parent_inner = np.zeros((fine.inner.shape[0], ncorner), dtype=np.int64)
    ghost = np.zeros((fine.inner.shape[0], ncorner), dtype=np.bool_)
    for k in range(ncorner):
        for e, g in enumerate(grids):
            up = (k >> e) & 1
            c = (g - 1) // 2 + up  # lower parent (i - 1) // 2, or the upper one
            ghost[:, k] |= (c < 0) | (c >= coarse.shape[e]) | ((g % 2 == 1) & bool(up))
            parent_inner[:, k] += (c + 1) * coarse.strides[e]
    parent_inner[ghost] = coarse.inner[0]  # any interior index: the weight is 0
    parent = np.zeros((fine.size, ncorner), dtype=np.int32)
    parent[fine.inner] = parent_inner
    return _Transfer(even_mask, parent, ghost)


@functools.lru_cache(maxsize=8)
def grid_levels(shape: tuple[int, ...], coarsest_max: int = COARSEST_MAX) -> tuple[list[_Level], list[_Transfer]]:
    """The levels of ``shape`` (fine first) and the transfers between them; cached per shape.

    A level of ``n_e`` cells per dimension has ``n_e // 2`` on the next (fine cell ``2I + 1``
    is coarse cell I); coarsening stops at ``coarsest_max`` unknowns or when a dimension has
    fewer than 3 cells. Raises ValueError when the coarsest level would exceed
    ``COARSEST_LIMIT`` unknowns (a very anisotropic grid: use another preconditioner).
    """
    shapes = [tuple(int(n) for n in shape)]
    while int(np.prod(shapes[-1])) > coarsest_max and min(shapes[-1]) >= 3:
        shapes.append(tuple(n // 2 for n in shapes[-1]))
    if int(np.prod(shapes[-1])) > COARSEST_LIMIT:
        raise ValueError(f"preconditioner 'gmg': the grid {shape} coarsens only to {shapes[-1]}; "
                         "use preconditioner 'amg' for such an anisotropic grid")
    levels = [_level(s, star=(i == 0)) for i, s in enumerate(shapes)]
    transfers = [_transfer(f, c) for f, c in zip(levels[:-1], levels[1:])]
    return levels, transfers


def _grid_shape(A: Any) -> tuple[int, ...]:
    shape = getattr(A, "grid_shape", None)
    if shape is None:
        raise ValueError(
            "preconditioner 'gmg' needs the cell grid of A (A.grid_shape, set by kryflow.pdes.on_grid on every "
            "family's matrices); tag A with on_grid(A, shape) or use preconditioner 'amg' or 'jacobi'")
    shape = tuple(int(n) for n in shape)
    if int(np.prod(shape)) != A.shape[0]:
        raise ValueError(f"preconditioner 'gmg': A.grid_shape {shape} has {int(np.prod(shape))} cells but A is "
                         f"{A.shape}; the tag does not belong to this matrix")
    return shape


class GMGPreconditioner(Preconditioner, name="gmg"):
    """One geometric-multigrid V-cycle on the matrix's cell grid (``A.grid_shape``), 2D or 3D, any n.

    **Arguments:**
        interpolation: option ``gmg_interpolation``: ``"operator"`` (coefficient-aware, black-box
            multigrid), ``"linear"`` (bi/trilinear), both with Galerkin coarse operators, or
            ``"auto"`` (linear for an SPD method on a 3D grid, else operator).
        sweeps: option ``gmg_sweeps``: Gauss–Seidel sweeps before (forward) and after (backward)
            each coarse correction.
        precision: option ``gmg_precision``: the V-cycle's arithmetic, ``"double"``, ``"single"``
            (float32 level data; the result is returned as float64 to the double-precision
            Krylov method, which still meets rtol on the true residual) or ``"auto"`` (single for
            an SPD method, double for GMRES).
        symmetric: built for an SPD method (CG); what ``"auto"`` depends on.

    The V-cycle starts from zero and is symmetric (forward sweeps down, backward sweeps up,
    restriction ``P^T``, exact coarsest solve), so CG may use it for SPD A; GMRES may use it for
    the nonsymmetric families. A matrix without ``grid_shape``, or whose entries are not
    neighbours within one cell on that grid, raises ValueError naming another preconditioner.
    """

    OPTIONS = {
        "gmg_interpolation": Param.choice("auto", "auto", "operator", "linear",
                                          doc="GMG prolongation: coefficient-aware (black-box) or bi/trilinear; "
                                              "auto: linear for CG on 3D grids, else operator"),
        "gmg_sweeps": Param.integer(1, 1, doc="GMG Gauss-Seidel sweeps before and after each coarse correction"),
        "gmg_precision": Param.choice("auto", "auto", "double", "single",
                                      doc="arithmetic of the GMG V-cycle (the Krylov method stays double); "
                                          "auto: single for CG, double for GMRES"),
    }

    @classmethod
    def from_options(cls, symmetric: bool, gmg_interpolation: str = "auto", gmg_sweeps: int = 1,
                     gmg_precision: str = "auto"):
        return cls(gmg_interpolation, gmg_sweeps, gmg_precision, symmetric)

    def __init__(self, interpolation: str = "auto", sweeps: int = 1, precision: str = "auto", symmetric: bool = True):
        super().__init__()
        self.symmetric = bool(symmetric)
        self.interpolation = self.OPTIONS["gmg_interpolation"].validate("gmg_interpolation", interpolation)
        self.sweeps = int(self.OPTIONS["gmg_sweeps"].validate("gmg_sweeps", sweeps))
        self.precision = self.OPTIONS["gmg_precision"].validate("gmg_precision", precision)
        self._shape: tuple[int, ...] | None = None
        self._matrix = None

    def setup(self, A):
        A = _assembled(A, self.name)
        shape = _grid_shape(A)
        if shape != self._shape:
            t0 = time.perf_counter()
            self._allocate(shape)
            self.one_time_seconds += time.perf_counter() - t0
        self._matrix = None
        self._refill(A)
        self._matrix = A

    def matvec_dot_for(self, A):
        """``(p, q) -> (q[:] = A p; p . q)`` from the stencil this V-cycle was set up with, for the
        Krylov method to use instead of A's CSR product (on a 2D grid: no column indices to read,
        whole rows vectorised); None unless ``A`` is the very matrix of the last :meth:`setup`."""
        if A is None or A is not self._matrix or len(self._shape) != 2 or len(self._levels) == 1:
            return None
        n0, n1 = self._shape
        fine_T, slots, symmetric = self._fine_T, self._star_slots, self._fine_symmetric
        return lambda p, q: _g.star_matvec_dot_2d(fine_T, slots, symmetric, p, q, n0, n1)

    def _spd_3d(self, shape: tuple[int, ...]) -> bool:
        """Where ``"auto"`` interpolation is trilinear: for CG on a 3D grid only."""
        return self.symmetric and len(shape) == 3

    def _allocate(self, shape: tuple[int, ...]) -> None:
        """Index tables (cached per shape) and the level arrays this object fills per matrix."""
        levels, transfers = grid_levels(shape)
        self._levels, self._transfers = levels, transfers
        ncorner = 2 ** len(shape)
        # the V-cycle streams its level arrays from memory (3D) or the shared L3 (2D): float32
        # halves that traffic, at the same CG iterations (measured on 64³, heat 256², Darcy 200²
        # lognormal and 128² binary); GMRES loses iterations to it (13 vs 10 on advection–diffusion 64³)
        single = self.precision == "single" or self.precision == "auto" and self.symmetric
        self._dtype = np.float32 if single else np.float64
        self._st = [np.zeros((lv.size, lv.off.shape[0])) for lv in levels]
        self._dinv = [np.zeros(lv.size) for lv in levels]
        self._W = [np.zeros((lv.size, ncorner)) for lv in levels[:-1]]
        # what the V-cycle reads: the same arrays, or float32 copies refilled per matrix
        low = self._dtype != np.float64
        self._cycle_arrays = [a.astype(self._dtype) if low else a for a in self._st + self._dinv + self._W]
        nl = len(levels)
        st, dinv, W = self._cycle_arrays[:nl], self._cycle_arrays[nl:2 * nl], self._cycle_arrays[2 * nl:]
        # tuples, not numba typed lists: the kernels compile once per level count and numba caches
        # them on disk, while a typed list compiles its own methods in every process (5-10 s a job)
        self._cycle_levels = tuple(
            (s, lv.off, lv.inner, d, np.zeros(lv.size, self._dtype), np.zeros(lv.size, self._dtype))
            for s, lv, d in zip(st, levels, dinv))
        self._cycle_transfers = tuple((w, tr.parent) for w, tr in zip(W, transfers))
        if len(shape) == 2 and len(levels) > 1:
            self._allocate_2d(levels, st, dinv, W)
        self._shape = shape

    def _allocate_2d(self, levels, st, dinv, W) -> None:
        """What :func:`._gmg_kernels.vcycle_2d` reads besides the level tuples: per level the
        stencil slot-major, its chain coefficients (refilled per matrix) and fixed slot lists."""
        self._shapes = np.array([lv.shape for lv in levels], dtype=np.int64)
        smoothers = []
        for lv, s, d in zip(levels[:-1], st, dinv):
            west, east = (int(np.flatnonzero(lv.off == o)[0]) for o in (-1, 1))
            others = np.array([k for k in range(lv.off.shape[0]) if k not in (lv.centre, west, east)], dtype=np.int64)
            stT = np.zeros((s.shape[1], s.shape[0]), self._dtype)
            src, shift = np.arange(lv.off.shape[0]), np.zeros(lv.off.shape[0], dtype=np.int64)  # set per matrix
            smoothers.append((stT, lv.off, src, shift, others, west, east, np.zeros_like(d), np.zeros_like(d), d))
        self._mirrors = [np.array([int(np.flatnonzero(lv.off == -o)[0]) for o in lv.off]) for lv in levels[:-1]]
        self._smoothers = tuple(smoothers)
        self._Ws = tuple(W)
        self._residuals = tuple(np.zeros(lv.size, self._dtype) for lv in levels[:-1])
        fine = levels[0]
        star = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]  # centre, row below, row above, west, east
        self._star_slots = np.array([int(np.flatnonzero((fine.deltas == d).all(axis=1))[0]) for d in star])
        # A itself (float64, slot-major) for the Krylov method's products: the smoother's copy
        # when that is float64, else its own
        self._fine_T = smoothers[0][0] if self._dtype == np.float64 else np.zeros(smoothers[0][0].shape)

    def _refill(self, A: sp.csr_matrix) -> None:
        """Stencils, interpolation weights and Galerkin operators of every level for matrix A."""
        levels, transfers = self._levels, self._transfers
        fine = levels[0]
        if _g.fine_stencil(A.indptr, A.indices, A.data, fine.inner, fine.slot_of, fine.slot_base,
                           self._st[0]) == _g.BAD_STENCIL:
            raise ValueError(f"preconditioner 'gmg': A has entries between cells that are not neighbours on its grid "
                             f"{fine.shape}; use preconditioner 'amg'")
        # 2D: the coefficient-aware weights save V-cycles (8 vs 10 on lognormal Darcy 200²); 3D SPD: the
        # same iterations as trilinear, so their set-up (a stencil pass per level) is not worth it
        operator = self.interpolation == "operator" or self.interpolation == "auto" and not self._spd_3d(fine.shape)
        for lev, tr in enumerate(transfers):
            lv, lc, st, W = levels[lev], levels[lev + 1], self._st[lev], self._W[lev]
            _g.interpolation(st, lv.deltas, lv.inner, tr.even_mask, lv.strides, tr.ghost, operator, W)
            _g.galerkin(st, lv.off, lv.inner, W, tr.parent, lc.slot_of, lc.slot_base, self._st[lev + 1])
        for lv, st, dinv in zip(levels, self._st, self._dinv):
            if not _g.inverse_diagonal(st, lv.centre, lv.inner, dinv):
                raise ValueError("preconditioner 'gmg': a zero diagonal entry on a multigrid level (A singular?); "
                                 "use preconditioner 'amg' or method 'direct'")
        self._coarse_inv = np.linalg.inv(self._coarse_matrix()).astype(self._dtype)
        if self._dtype != np.float64:
            for low, a in zip(self._cycle_arrays, self._st + self._dinv + self._W):
                low[...] = a
        if len(fine.shape) == 2 and len(levels) > 1:
            self._refill_2d()

    def _refill_2d(self) -> None:
        """The 2D V-cycle's slot-major stencils and chain coefficients; on a level that is
        symmetric (to rounding: Galerkin products of a symmetric A) its upper slots are read
        mirrored, and the product with A does so where A is exactly symmetric."""
        for lv, st, low, mirror, smoother in zip(self._levels, self._st, self._cycle_arrays, self._mirrors,
                                                 self._smoothers):
            stT, off, src, shift, _others, west, east, wchain, echain, dinv = smoother
            stT[...] = low.T
            upper = off > 0
            if _g.stencil_symmetric(st, off, lv.inner, mirror, 1e-12):
                src[:], shift[:] = np.where(upper, mirror, np.arange(off.shape[0])), np.where(upper, off, 0)
            else:
                src[:], shift[:] = np.arange(off.shape[0]), 0
            np.multiply(stT[west], dinv, out=wchain)
            if shift[east]:  # the east coefficient of p read as the west one of p + 1
                np.multiply(stT[west, 1:], dinv[:-1], out=echain[:-1])
                echain[-1] = 0.0
            else:
                np.multiply(stT[east], dinv, out=echain)
        fine = self._levels[0]
        self._fine_symmetric = bool(_g.stencil_symmetric(self._st[0], fine.off, fine.inner, self._mirrors[0], 0.0))
        if self._fine_T is not self._smoothers[0][0]:
            self._fine_T[...] = self._st[0].T

    def _coarse_matrix(self) -> np.ndarray:
        """The coarsest operator as a dense ``(Nc, Nc)`` matrix."""
        lv, st = self._levels[-1], self._st[-1]
        pos = np.full(lv.size, -1, dtype=np.int64)
        pos[lv.inner] = np.arange(lv.inner.shape[0])
        dense = np.zeros((lv.inner.shape[0],) * 2)
        for s, o in enumerate(lv.off):
            cols = pos[lv.inner + o]
            ok = cols >= 0
            dense[np.flatnonzero(ok), cols[ok]] += st[lv.inner[ok], s]
        return dense

    def __call__(self, r):
        return self.apply_dot(r)[0] if len(self._shape) == 2 and len(self._levels) > 1 else self._apply(r)

    def apply_dot(self, r) -> tuple[np.ndarray, float]:
        """``(M r, r . M r)``; in 2D the product is summed while the V-cycle writes its result."""
        if len(self._shape) != 2 or len(self._levels) == 1:
            z = self._apply(r)
            return z, float(np.dot(r, z))
        r = np.ascontiguousarray(r, dtype=np.float64)
        z = np.empty(r.shape[0])
        rz = _g.vcycle_2d(r, z, self._cycle_levels, self._shapes, self._smoothers, self._Ws, self._residuals,
                          self._levels[-1].inner, self._coarse_inv, self.sweeps)
        return z, rz

    def _apply(self, r):
        """``M r`` by the general V-cycle (3D), or the coarsest level's inverse alone."""
        if len(self._levels) == 1:
            return self._coarse_inv @ r
        z = np.empty(r.shape[0])
        _g.vcycle(np.ascontiguousarray(r, dtype=np.float64), z, self._cycle_levels, self._cycle_transfers,
                  self._levels[-1].inner, self._coarse_inv, self.sweeps)
        return z


def _laplacian(shape: tuple[int, ...]) -> sp.csr_matrix:
    """The 5-/7-point Laplacian on ``shape`` (Dirichlet), tagged with its grid."""
    eye = [sp.identity(n, format="csr") for n in shape]
    A = sp.csr_matrix((int(np.prod(shape)),) * 2)
    for e, n in enumerate(shape):
        t = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1])
        term = functools.reduce(sp.kron, [t if i == e else eye[i] for i in range(len(shape))])
        A = A + term
    A = sp.csr_matrix(A)
    A.grid_shape = tuple(shape)
    return A


def warm_up(shape: tuple[int, ...] | None = None) -> None:
    """Load every kernel specialisation the V-cycle uses (2D and 3D, both interpolations) and
    the 2D stencil product; with ``shape`` (cells per dimension) also the V-cycle's for that
    grid's number of levels (the kernels take one tuple entry per level, so each level count is
    a specialisation of its own, compiled once on a machine and then loaded from numba's cache)."""
    combos = list(itertools.product(("operator", "linear"), ("double", "single")))
    grids = [((12, 12), combos), ((6, 6, 6), combos)]
    if shape is not None and len(grid_levels(tuple(shape))[0]) > 1:
        grids.append((tuple(shape), [("auto", "double"), ("auto", "single")]))
    for shape, settings in grids:
        A = _laplacian(shape)
        for interpolation, precision in settings:
            M = GMGPreconditioner(interpolation, precision=precision)
            M.setup(A)
            v = np.ones(A.shape[0])
            M(v)
            product = M.matvec_dot_for(A)
            if product is not None:
                product(v, np.empty_like(v))
