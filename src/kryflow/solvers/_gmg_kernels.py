"""Compiled (numba) kernels of the geometric multigrid preconditioner (:mod:`._gmg`).

Every level is a structured grid stored *padded*: one ghost layer around the ``n_0 x ... x
n_{d-1}`` cells, flat in C order, so that a stencil neighbour ``p + off[s]`` of an interior point
``p`` is always a valid index (ghost values stay 0 and no stencil entry points at a ghost). An
operator is a stencil array ``st`` ``(Np, S)``: row ``p`` holds the coefficients of the ``S``
offsets ``off`` (flat, padded) of that level; ``inner`` ``(N,)`` lists the padded index of each
unknown in natural (C) order.

Coarsening is vertex-style (every other cell: fine natural index ``2I + 1`` is coarse cell I, in
every dimension), so that Galerkin coarse operators of a 5-/7-point stencil are 9-/27-point
stencils and stay so on every level. A fine point has up to ``2^d`` coarse parents: per
dimension the lower one ``(i - 1) // 2`` and, for an even (non-coarse) index, also the upper one;
corner ``k`` of a point sets bit ``e`` for the upper parent along ``e``. The prolongation is
stored as full rows ``W`` ``(Np, 2^d)`` with the padded coarse index of each corner in
``parent`` ``(Np, 2^d)`` (zero weights for missing corners): measured faster than packing the
nonzero weights, whose extra indirections cost more than the zeros they skip.

Smoothing is lexicographic Gauss–Seidel, forward before and backward after the coarse
correction. (Red-black / multicolour sweeps break the point-to-point dependency chain, but
measured no faster here and cost V-cycle iterations: ``benchmarks/README.md``.) All kernels run
serially (one solver job per core is the workflow's parallelism) and are specialised by numba
for float64 or float32 level data.
"""

from __future__ import annotations

from numba import njit

__all__ = ["fine_stencil", "interpolation", "galerkin", "inverse_diagonal", "vcycle", "BAD_STENCIL"]

BAD_STENCIL = -1  # fine_stencil's answer for a matrix entry that is not a +-1 neighbour on the grid


@njit(cache=True)
def fine_stencil(indptr, indices, data, inner, slot_of, slot_base, st):
    """Fill ``st`` ``(Np, S)`` from a CSR matrix on the grid: entry ``(i, j)`` goes to row
    ``inner[i]``, slot ``slot_of[inner[j] - inner[i] + slot_base]``. Returns 0, or
    :data:`BAD_STENCIL` at the first nonzero entry outside the stencil."""
    st[:] = 0.0
    width = slot_of.shape[0]
    for i in range(inner.shape[0]):
        p = inner[i]
        for k in range(indptr[i], indptr[i + 1]):
            d = inner[indices[k]] - p + slot_base
            if d < 0 or d >= width or slot_of[d] < 0:
                if data[k] != 0.0:
                    return BAD_STENCIL
                continue
            st[p, slot_of[d]] += data[k]
    return 0


@njit(cache=True)
def interpolation(st, deltas, inner, even_mask, strides, ghost_parent, operator_dependent, W):
    """Prolongation weights ``W`` ``(Np_fine, 2^d)`` of the fine points (rows of ghosts stay 0).

    A point whose even (non-coarse) dimensions are ``m`` (bit mask ``even_mask[i]``) is
    interpolated from its neighbours along ``m``, which have fewer even dimensions and so are done
    first (points are handled by increasing number of even dimensions). ``operator_dependent``
    (black-box multigrid, Dendy 1982): the point's stencil collapsed onto the dimensions ``m``
    (summed over the offsets along the others), ``W_p = -sum_{delta != 0} c_delta W_{p+delta} /
    c_0``, so that interpolation follows the coefficient across jumps and the Dirichlet boundary;
    otherwise bi/trilinear, ``0.5`` per even dimension. ``ghost_parent[i, k]``: corner ``k`` of
    point ``i`` is outside the coarse grid (its weight is forced to 0).
    """
    d = deltas.shape[1]
    ncorner = W.shape[1]
    W[:] = 0.0
    for ones in range(d + 1):
        for i in range(inner.shape[0]):
            m = even_mask[i]
            bits = 0
            for e in range(d):
                bits += (m >> e) & 1
            if bits != ones:
                continue
            p = inner[i]
            if m == 0:
                W[p, 0] = 1.0
                continue
            if operator_dependent:
                c0 = 0.0
                for s in range(deltas.shape[0]):
                    a = st[p, s]
                    if a == 0.0:
                        continue
                    q = p
                    up = 0
                    for e in range(d):
                        if (m >> e) & 1 and deltas[s, e] != 0:
                            q += deltas[s, e] * strides[e]
                            if deltas[s, e] > 0:
                                up |= 1 << e
                    if q == p:
                        c0 += a
                        continue
                    for kq in range(ncorner):
                        w = W[q, kq]
                        if w != 0.0:
                            W[p, kq | up] -= a * w
                if c0 != 0.0:
                    for k in range(ncorner):
                        W[p, k] /= c0
            else:
                w = 0.5**ones
                for k in range(ncorner):
                    if (k & ~m) == 0:
                        W[p, k] = w
            for k in range(ncorner):
                if ghost_parent[i, k]:
                    W[p, k] = 0.0


@njit(cache=True)
def galerkin(st, off, inner, W, parent, slot_of, slot_base, stc):
    """Coarse operator ``stc = P^T A P`` (stencil ``(Np_coarse, S_coarse)``, zeroed here) from the
    fine stencil ``st`` and the prolongation ``W``/``parent``; coarse slots by ``slot_of[delta +
    slot_base]``."""
    stc[:] = 0.0
    ncorner = W.shape[1]
    for i in range(inner.shape[0]):
        p = inner[i]
        for k in range(ncorner):
            wp = W[p, k]
            if wp == 0.0:
                continue
            I = parent[p, k]
            for s in range(off.shape[0]):
                a = st[p, s]
                if a == 0.0:
                    continue
                q = p + off[s]
                wa = wp * a
                for l in range(ncorner):
                    wq = W[q, l]
                    if wq != 0.0:
                        stc[I, slot_of[parent[q, l] - I + slot_base]] += wa * wq


@njit(cache=True)
def inverse_diagonal(st, centre, inner, dinv):
    """``dinv[p] = 1 / st[p, centre]`` on the interior points; returns False at a zero pivot."""
    for i in range(inner.shape[0]):
        p = inner[i]
        a = st[p, centre]
        if a == 0.0:
            return False
        dinv[p] = 1.0 / a
    return True


@njit(cache=True)
def _sweep(st, off, inner, dinv, x, b, forward):
    """One Gauss–Seidel sweep ``x_p += dinv_p (b - A x)_p``, in natural or reverse order."""
    n = inner.shape[0]
    for t in range(n):
        p = inner[t] if forward else inner[n - 1 - t]
        r = b[p]
        for s in range(off.shape[0]):
            r -= st[p, s] * x[p + off[s]]
        x[p] += r * dinv[p]


@njit(cache=True)
def _residual_restrict(st, off, inner, x, b, W, parent, bc):
    """``bc = P^T (b - A x)`` (``bc`` zeroed here), without storing the fine residual."""
    bc[:] = 0.0
    ncorner = W.shape[1]
    for t in range(inner.shape[0]):
        p = inner[t]
        r = b[p]
        for s in range(off.shape[0]):
            r -= st[p, s] * x[p + off[s]]
        for k in range(ncorner):
            bc[parent[p, k]] += W[p, k] * r


@njit(cache=True)
def _prolong_add(inner, W, parent, xc, x):
    """``x += P xc`` on the interior points."""
    ncorner = W.shape[1]
    for t in range(inner.shape[0]):
        p = inner[t]
        acc = W[p, 0] * xc[parent[p, 0]]
        for k in range(1, ncorner):
            acc += W[p, k] * xc[parent[p, k]]
        x[p] += acc


@njit(cache=True)
def vcycle(r, z, levels, transfers, coarse_inner, coarse_inv, sweeps):
    """``z = M r``: one V-cycle from a zero start, ``sweeps`` forward Gauss–Seidel sweeps before
    and as many backward sweeps after each coarse correction (so M is symmetric for symmetric A),
    the coarsest level solved exactly (``coarse_inv``).

    **Arguments:**
        r, z: ``(N,)`` float64 in the natural order of the unknowns (``z`` is written).
        levels: per level ``(st, off, inner, dinv, x, b)``, fine to coarse (padded arrays).
        transfers: per level but the coarsest ``(W, parent)`` to the next coarser one.
        coarse_inner, coarse_inv: interior points of the coarsest level and its inverse ``(Nc, Nc)``.
    """
    nlev = len(levels)
    inner, b = levels[0][2], levels[0][5]
    for i in range(inner.shape[0]):
        b[inner[i]] = r[i]
    for lev in range(nlev):
        st, off, inner, dinv, x, b = levels[lev]
        x[:] = 0.0
        if lev == nlev - 1:
            for i in range(coarse_inner.shape[0]):
                acc = coarse_inv[i, 0] * b[coarse_inner[0]]
                for j in range(1, coarse_inner.shape[0]):
                    acc += coarse_inv[i, j] * b[coarse_inner[j]]
                x[coarse_inner[i]] = acc
            break
        for _ in range(sweeps):
            _sweep(st, off, inner, dinv, x, b, True)
        W, parent = transfers[lev]
        _residual_restrict(st, off, inner, x, b, W, parent, levels[lev + 1][5])
    for lev in range(nlev - 2, -1, -1):
        st, off, inner, dinv, x, b = levels[lev]
        W, parent = transfers[lev]
        _prolong_add(inner, W, parent, levels[lev + 1][4], x)
        for _ in range(sweeps):
            _sweep(st, off, inner, dinv, x, b, False)
    inner, x = levels[0][2], levels[0][4]
    for i in range(inner.shape[0]):
        z[i] = x[inner[i]]
