"""Solve order apart from storage order: a cheap sketch of every sample's inputs and a
nearest-neighbour chain through them (as SKR orders its systems, so that recycling meets
similar neighbours). The order only changes how fast a dataset is made, never what it holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["ORDERS", "input_sketch", "similarity_order", "solve_order"]

#: ``solver.order`` values: samples in storage order, or a nearest-neighbour chain of their inputs.
ORDERS = ("as_sampled", "similarity")


def input_sketch(fields: Mapping[str, np.ndarray], size: int = 8) -> np.ndarray:
    """A sample's inputs, block-averaged to at most ``size`` cells per axis and concatenated.

    **Arguments:**
        fields: input name -> grid-shaped array (``(n, n)`` or ``(n, n, n)``), in a fixed order.
        size: cells per axis of the sketch (the grid size if smaller; a divisor of it is used).

    **Returns:** float64 vector of length ``len(fields) * s**dim`` (s the sketch size).
    """
    parts = []
    for name in sorted(fields):
        a = np.asarray(fields[name], dtype=np.float64)
        n = a.shape[0]
        s = max(d for d in range(1, min(size, n) + 1) if n % d == 0)
        shape = sum(((s, n // s) for _ in range(a.ndim)), ())
        parts.append(a.reshape(shape).mean(axis=tuple(range(1, 2 * a.ndim, 2))).ravel())
    return np.concatenate(parts)


def similarity_order(sketches: np.ndarray) -> np.ndarray:
    """Nearest-neighbour chain through ``sketches`` ``(K, D)``: start at row 0, always go on to the
    nearest row not yet visited (Euclidean; ties to the lower index), after standardising each
    column over the rows. O(K² D) time, O(K) memory beyond the input.

    **Returns:** int64 permutation ``(K,)``: position i holds the row solved i-th.
    """
    x = np.asarray(sketches, dtype=np.float64)
    k = x.shape[0]
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    order = np.empty(k, dtype=np.int64)
    visited = np.zeros(k, dtype=bool)
    current = 0
    for i in range(k):
        order[i] = current
        visited[current] = True
        if i + 1 == k:
            break
        d = np.einsum("ij,ij->i", x - x[current], x - x[current])
        d[visited] = np.inf
        current = int(np.argmin(d))
    return order


def solve_order(order: str, sketches: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """The positions of a block of samples in the order they are solved.

    **Arguments:**
        order: one of :data:`ORDERS`.
        sketches: one :func:`input_sketch` per sample of the block, in storage order.

    **Returns:** int64 permutation of ``range(len(sketches))``.
    """
    if order == "as_sampled":
        return np.arange(len(sketches), dtype=np.int64)
    if order == "similarity":
        return similarity_order(np.stack(list(sketches)) if len(sketches) else np.zeros((0, 1)))
    raise ValueError(f"solver.order must be one of {ORDERS}, got {order!r}")
