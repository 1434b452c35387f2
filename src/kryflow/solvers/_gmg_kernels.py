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

The general kernels above walk ``inner`` and read ``parent``, which suits any dimension; a 2D
grid gets its own V-cycle (:func:`vcycle_2d`, below) that applies the same operator with the
grid's rows in its loops, and :func:`star_matvec_dot_2d`, the product with the fine 5-point
operator that CG uses in place of A's CSR product.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["fine_stencil", "interpolation", "galerkin", "inverse_diagonal", "vcycle", "vcycle_2d", "star_matvec_dot_2d",
           "stencil_symmetric",
           "BAD_STENCIL"]

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
def _coarse_solve(coarse_inner, coarse_inv, b, x):
    """``x = A_c^-1 b`` on the coarsest level's interior points, from its dense inverse."""
    for i in range(coarse_inner.shape[0]):
        acc = coarse_inv[i, 0] * b[coarse_inner[0]]
        for j in range(1, coarse_inner.shape[0]):
            acc += coarse_inv[i, j] * b[coarse_inner[j]]
        x[coarse_inner[i]] = acc


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
            _coarse_solve(coarse_inner, coarse_inv, b, x)
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


# --- 2D: the same V-cycle with the grid's structure in the loops ---------------------------------
# On a 2D level of n0 x n1 cells the padded index of cell (i, j) (1-based, ghosts at 0 and n + 1)
# is ``i * (n1 + 2) + j``, so the kernels below walk rows and columns instead of ``inner``, and
# compute a fine point's coarse parents instead of reading ``parent``: padded fine row ``pi`` has
# its lower parent at padded coarse row ``pi >> 1`` and its upper one next to it (a missing
# parent has weight 0 and lands on a ghost, which stays 0). Two chains that serialised the general
# kernels are gone: a Gauss–Seidel sweep keeps the neighbour it has just updated in a register,
# and the restriction gathers each coarse point's nine fine children (from the stored fine
# residual) instead of scattering into the coarse array point after point.


@njit(cache=True)
def _sweep_2d(stT, off, src, shift, others, ahead, chain, dinv, x, b, row, n0, n1, forward):
    """One lexicographic Gauss–Seidel sweep (forward, or backward) on an ``n0 x n1`` level:
    ``x_p = dinv_p (b_p - sum_{s != centre} stT[s, p] x_{p + off[s]})``.

    Row by row: first, vectorised along the row, everything but the neighbour updated just
    before p (west forward, east backward), from old or already-swept values (``ahead``: the
    other in-row slot, ``others``: those of the rows beside); then the chain along the row,
    ``x_p = row_p dinv_p - chain_p x_prev`` with ``chain = stT[west or east] * dinv``. The
    coefficient of slot s at p is read as ``stT[src[s], p + shift[s]]`` (see :func:`vcycle_2d`).
    """
    s0 = n1 + 2
    step = 1 if forward else -1
    for ii in range(n0):
        base = (ii + 1 if forward else n0 - ii) * s0 + 1
        # row views: indices from 0 up let the compiler drop numba's negative-index wraparound
        # and vectorise the loops along the row
        a0 = base + shift[ahead]
        bb, xx, aa = b[base:base + n1], x[base + step:base + step + n1], stT[src[ahead], a0:a0 + n1]
        for j in range(n1):
            row[j] = bb[j] - aa[j] * xx[j]
        for k in range(others.shape[0]):
            s = others[k]
            a0 = base + shift[s]
            xx, aa = x[base + off[s]:base + off[s] + n1], stT[src[s], a0:a0 + n1]
            for j in range(n1):
                row[j] -= aa[j] * xx[j]
        dd, cc, xo = dinv[base:base + n1], chain[base:base + n1], x[base:base + n1]
        last = 0.0  # the ghost before the row's first point
        for jj in range(n1):
            j = jj if forward else n1 - 1 - jj
            last = row[j] * dd[j] - cc[j] * last
            xo[j] = last


@njit(cache=True)
def _residual_2d(stT, off, src, shift, x, b, r, n0, n1):
    """``r = b - A x`` on the interior of an ``n0 x n1`` level (ghosts of ``r`` untouched, 0)."""
    s0 = n1 + 2
    for i in range(1, n0 + 1):
        base = i * s0 + 1
        rr, bb = r[base:base + n1], b[base:base + n1]
        for j in range(n1):
            rr[j] = bb[j]
        for s in range(off.shape[0]):
            a0 = base + shift[s]
            xx, aa = x[base + off[s]:base + off[s] + n1], stT[src[s], a0:a0 + n1]
            for j in range(n1):
                rr[j] -= aa[j] * xx[j]


@njit(cache=True)
def _restrict_2d(W, r, bc, nc0, nc1, n1):
    """``bc = P^T r`` on an ``nc0 x nc1`` coarse level: coarse (I, J) (padded) gathers the fine
    padded rows and columns ``2I - 1 .. 2I + 1`` x ``2J - 1 .. 2J + 1``; the fine row ``2I - 1``
    (column ``2J - 1``) has it as its upper parent (corner bit 0, resp. 1)."""
    s0, c0 = n1 + 2, nc1 + 2
    for I in range(1, nc0 + 1):
        out = bc[I * c0 + 1:I * c0 + 1 + nc1]
        for J in range(nc1):
            out[J] = 0.0
        for di in range(3):
            fine = (2 * I - 1 + di) * s0 + 1
            rr, ww = r[fine:fine + n1 + 1], W[fine:fine + n1 + 1]
            up = 1 if di == 0 else 0
            for J in range(nc1):
                q = 2 * J
                out[J] += ww[q, up + 2] * rr[q] + ww[q + 1, up] * rr[q + 1] + ww[q + 2, up] * rr[q + 2]


@njit(cache=True)
def _prolong_add_2d(W, xc, x, n0, n1, nc1):
    """``x += P xc`` on an ``n0 x n1`` level from its coarse level (``nc1`` coarse columns)."""
    s0, c0 = n1 + 2, nc1 + 2
    for i in range(1, n0 + 1):
        lo = (i >> 1) * c0
        base = i * s0 + 1
        xx, ww = x[base:base + n1], W[base:base + n1]
        below, above = xc[lo:lo + c0], xc[lo + c0:lo + 2 * c0]
        for j in range(n1):
            q = (j + 1) >> 1
            xx[j] += ww[j, 0] * below[q] + ww[j, 1] * above[q] + ww[j, 2] * below[q + 1] + ww[j, 3] * above[q + 1]


@njit(cache=True)
def vcycle_2d(r, z, levels, shapes, smoothers, Ws, residuals, coarse_inner, coarse_inv, sweeps):
    """:func:`vcycle` on a 2D grid (the same operator M, up to rounding) with the kernels above.

    **Arguments:**
        r, z, levels, coarse_inner, coarse_inv, sweeps: as in :func:`vcycle` (only ``x``, ``b``
            and, on the coarsest level, nothing else of a level's tuple is read).
        shapes: ``(L, 2)`` int64, cells per dimension of each level.
        smoothers: per level but the coarsest ``(stT, off, src, shift, others, west, east,
            wchain, echain, dinv)``: the stencil slot-major ``(S, Np)``, its offsets, where each
            slot is read (below), the non-centre slots but west and east, those two slots, the
            coefficients ``west * dinv`` and ``east * dinv`` of the sweeps' chains, and ``dinv``.
            Slot s at point p is read as ``stT[src[s], p + shift[s]]``: ``(s, 0)``, or for a
            symmetric level and an offset ``off[s] > 0`` the mirrored slot at the neighbour
            (``a_{p, p+o} = a_{p+o, p}``), so that half the slot arrays are never read.
        Ws: per level but the coarsest its prolongation weights ``(Np, 4)``.
        residuals: per level but the coarsest a padded scratch array for its residual (ghosts 0).

    **Returns:** ``r . z`` (what CG needs of z next, summed while z is written).
    """
    nlev = len(levels)
    n1 = shapes[0, 1]
    b = levels[0][5]
    for i in range(shapes[0, 0]):
        for j in range(n1):
            b[(i + 1) * (n1 + 2) + j + 1] = r[i * n1 + j]
    row = np.empty(shapes[0, 1], levels[0][4].dtype)
    for lev in range(nlev):
        x, b = levels[lev][4], levels[lev][5]
        x[:] = 0.0
        if lev == nlev - 1:
            _coarse_solve(coarse_inner, coarse_inv, b, x)
            break
        n0, n1 = shapes[lev, 0], shapes[lev, 1]
        stT, off, src, shift, others, west, east, wchain, _echain, dinv = smoothers[lev]
        for _ in range(sweeps):
            _sweep_2d(stT, off, src, shift, others, east, wchain, dinv, x, b, row, n0, n1, True)
        _residual_2d(stT, off, src, shift, x, b, residuals[lev], n0, n1)
        _restrict_2d(Ws[lev], residuals[lev], levels[lev + 1][5], shapes[lev + 1, 0], shapes[lev + 1, 1], n1)
    for lev in range(nlev - 2, -1, -1):
        x, b = levels[lev][4], levels[lev][5]
        n0, n1 = shapes[lev, 0], shapes[lev, 1]
        stT, off, src, shift, others, west, east, _wchain, echain, dinv = smoothers[lev]
        _prolong_add_2d(Ws[lev], levels[lev + 1][4], x, n0, n1, shapes[lev + 1, 1])
        for _ in range(sweeps):
            _sweep_2d(stT, off, src, shift, others, west, echain, dinv, x, b, row, n0, n1, False)
    n1 = shapes[0, 1]
    x = levels[0][4]
    rz = 0.0
    for i in range(shapes[0, 0]):
        zz, rr, xx = z[i * n1:(i + 1) * n1], r[i * n1:(i + 1) * n1], x[(i + 1) * (n1 + 2) + 1:(i + 1) * (n1 + 2) + 1 + n1]
        for j in range(n1):
            zz[j] = xx[j]
            rz += rr[j] * zz[j]
    return rz


@njit(cache=True)
def star_matvec_dot_2d(stT, slots, symmetric, p, q, n0, n1):
    """``q = A p`` and ``p . q`` for the 5-point operator of an ``n0 x n1`` grid given by its
    padded slot-major stencil ``stT`` ``(5, Np)`` (float64); ``p``, ``q`` ``(n0 n1,)`` in natural
    order; ``slots``: the slots of the centre and of the row below, row above, west and east.
    ``symmetric`` (A is, exactly): the east and upper coefficients are read as the west and
    lower ones of the neighbours, so that two of the five slot arrays are never read."""
    c, lo, hi, w, e = slots[0], slots[1], slots[2], slots[3], slots[4]
    s0 = n1 + 2
    dot = 0.0
    for i in range(n0):
        base, P = i * n1, (i + 1) * s0 + 1
        qq, pp = q[base:base + n1], p[base:base + n1]
        ac, aw = stT[c, P:P + n1], stT[w, P:P + n1]
        ae = stT[w, P + 1:P + 1 + n1] if symmetric else stT[e, P:P + n1]
        for j in range(n1):
            qq[j] = ac[j] * pp[j]
        for j in range(n1 - 1):
            qq[j + 1] += aw[j + 1] * pp[j]
            qq[j] += ae[j] * pp[j + 1]
        if i > 0:
            below, a = p[base - n1:base], stT[lo, P:P + n1]
            for j in range(n1):
                qq[j] += a[j] * below[j]
        if i < n0 - 1:
            above = p[base + n1:base + 2 * n1]
            a = stT[lo, P + s0:P + s0 + n1] if symmetric else stT[hi, P:P + n1]
            for j in range(n1):
                qq[j] += a[j] * above[j]
        for j in range(n1):
            dot += pp[j] * qq[j]
    return dot


@njit(cache=True)
def stencil_symmetric(st, off, inner, mirror, rtol):
    """Whether the level operator ``st`` ``(Np, S)`` is symmetric, ``|a_{p,p+o} - a_{p+o,p}| <=
    rtol |a_pp|`` at every interior p and offset o (``mirror[s]``: the slot of ``-off[s]``);
    ``rtol = 0``: exactly."""
    centre = 0
    for s in range(off.shape[0]):
        if off[s] == 0:
            centre = s
    for i in range(inner.shape[0]):
        p = inner[i]
        tol = rtol * abs(st[p, centre])
        for s in range(off.shape[0]):
            if off[s] > 0 and abs(st[p, s] - st[p + off[s], mirror[s]]) > tol:
                return False
    return True
