"""Vectorised finite-volume assembly on uniform cell-centred grids of [0, 1]^dim.

Unknowns are cell averages at centres ``(i + 1/2) h`` with ``h = 1/n``, flattened in C order
(last axis fastest). Zero Dirichlet values sit on the boundary faces, half a cell away from
the outermost centres.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp

__all__ = ["diffusion_operator", "advection_operator", "check_field", "on_grid"]


def on_grid(A: sp.csr_matrix, shape: tuple[int, ...]) -> sp.csr_matrix:
    """``A`` tagged with the cell grid its rows live on (``A.grid_shape``, C order), so that a
    solver can use the structure (a geometric multigrid, matrix-free stencils); returns ``A``."""
    A.grid_shape = tuple(int(s) for s in shape)
    return A


def check_field(name: str, field: np.ndarray, shape: tuple[int, ...], positive: bool = False) -> np.ndarray:
    """Return ``field`` as float64 after checking shape, finiteness and (optionally) positivity."""
    arr = np.asarray(field, dtype=np.float64)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape} but the grid is {tuple(shape)}; pass a grid-shaped array")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values; every cell needs a finite value")
    if positive and not np.all(arr > 0):
        raise ValueError(
            f"{name} must be strictly positive (min is {arr.min():.3g}); a diffusion coefficient "
            "<= 0 makes the operator singular or indefinite"
        )
    return arr


@lru_cache(maxsize=16)
def _face_pairs(shape: tuple[int, ...]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per axis: flat indices of the (low, high) cells on each interior face."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    pairs = []
    for ax in range(len(shape)):
        lo = np.take(idx, np.arange(shape[ax] - 1), axis=ax).ravel()
        hi = np.take(idx, np.arange(1, shape[ax]), axis=ax).ravel()
        pairs.append((lo, hi))
    return tuple(pairs)


def _slices(a: np.ndarray, ax: int):
    lo = [slice(None)] * a.ndim
    hi = [slice(None)] * a.ndim
    lo[ax] = slice(0, -1)
    hi[ax] = slice(1, None)
    return a[tuple(lo)], a[tuple(hi)]


def _boundary(a: np.ndarray, ax: int, side: int) -> tuple:
    sl = [slice(None)] * a.ndim
    sl[ax] = side
    return tuple(sl)


def diffusion_operator(a: np.ndarray) -> sp.csr_matrix:
    """Matrix of ``u -> -div(a grad u)`` with zero Dirichlet data, harmonic-mean face coefficients.

    **Arguments:**
        a: coefficient, shape ``(n, n)`` or ``(n, n, n)``, strictly positive, finite.

    **Returns:**
        SPD CSR matrix of size ``N x N`` (``N = a.size``), units of ``a / length²`` on [0, 1]^dim,
        tagged with its grid (:func:`on_grid`).
    """
    a = np.asarray(a, dtype=np.float64)
    shape = a.shape
    h2 = (1.0 / shape[0]) ** 2
    diag = np.zeros(shape)
    rows, cols, vals = [], [], []
    for ax, (lo_idx, hi_idx) in enumerate(_face_pairs(shape)):
        a_lo, a_hi = _slices(a, ax)
        t = 2.0 * a_lo * a_hi / (a_lo + a_hi) / h2  # harmonic mean: exact flux across a material jump
        d_lo, d_hi = _slices(diag, ax)
        d_lo += t
        d_hi += t
        # boundary faces: value 0 at distance h/2 -> transmissibility 2 a / h²
        diag[_boundary(a, ax, 0)] += 2.0 * a[_boundary(a, ax, 0)] / h2
        diag[_boundary(a, ax, -1)] += 2.0 * a[_boundary(a, ax, -1)] / h2
        tf = t.ravel()
        rows += [lo_idx, hi_idx]
        cols += [hi_idx, lo_idx]
        vals += [-tf, -tf]
    n = a.size
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag.ravel())
    A = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return on_grid(A.tocsr(), shape)


def advection_operator(velocity: tuple[np.ndarray, ...]) -> sp.csr_matrix:
    """Matrix of ``u -> v·grad u`` by first-order upwinding, zero Dirichlet data.

    **Arguments:**
        velocity: one array per axis, each grid-shaped (cell-centred components, finite).

    **Returns:**
        Nonsymmetric CSR matrix ``N x N``, units of velocity / length. Rows are M-matrix-like:
        diagonal ``sum |v_ax| / h`` (doubled on the inflow boundary, ghost value ``-u``).
    """
    shape = velocity[0].shape
    h = 1.0 / shape[0]
    n = int(np.prod(shape))
    diag = np.zeros(shape)
    rows, cols, vals = [], [], []
    for ax, (lo_idx, hi_idx) in enumerate(_face_pairs(shape)):
        v = np.asarray(velocity[ax], dtype=np.float64)
        diag += np.abs(v) / h
        v_lo, v_hi = _slices(v, ax)
        # row "hi" looks back to "lo" when v > 0; row "lo" looks ahead to "hi" when v < 0
        back = -np.maximum(v_hi, 0.0).ravel() / h
        ahead = np.minimum(v_lo, 0.0).ravel() / h
        rows += [hi_idx, lo_idx]
        cols += [lo_idx, hi_idx]
        vals += [back, ahead]
        first, last = _boundary(v, ax, 0), _boundary(v, ax, -1)
        diag[first] += np.maximum(v[first], 0.0) / h
        diag[last] += np.maximum(-v[last], 0.0) / h
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag.ravel())
    A = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return on_grid(A.tocsr(), shape)
