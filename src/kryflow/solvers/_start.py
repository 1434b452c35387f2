"""Warm starts from the span of earlier solutions of the same matrix.

Along a sequence ``A x_i = b_i`` with one matrix (every time step of a heat trajectory), each
solution ``x_i`` is kept with its right-hand side ``b_i``. Since ``A x_i = b_i`` to the solve's
tolerance, the start ``x0 = X c`` has the residual ``b - B c`` up to that tolerance, so the
coefficients that minimise the start's residual over the span of the last k solutions are a
k-by-k least-squares problem on the right-hand sides alone: no product with A. This is the
projection onto earlier solutions of Fischer ("Projection techniques for iterative solution of
Ax = b with successive right-hand sides", CMAME 1998), in its residual-minimising form, which
needs no A-orthogonalisation (and so no matvec) and holds for nonsymmetric A as well. The span
contains the previous solution, so the start is never worse than it (up to the tolerance).

Cost per solve: two passes over the k kept right-hand sides and one over the k solutions
(``B b``, ``X^T c``), two vector copies and a k-by-k eigenproblem.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SolutionWindow"]

# eigenvalues of the Gram matrix B B^T below this fraction of the largest are dropped. The
# right-hand sides of a slowly changing trajectory are nearly collinear, and a looser cut (1e-8,
# 1e-10) drops directions that still lower the start's residual (benchmarks/README.md)
_GRAM_RCOND = 1e-14


class SolutionWindow:
    """The last ``size`` solutions of one matrix and their right-hand sides, in a ring.

    **Arguments:**
        size: solutions kept (>= 1).

    :meth:`start` gives the residual-minimising combination for a new ``b`` (None while
    empty); :meth:`add` keeps a converged solution; :meth:`clear` forgets them all (a new
    matrix: the identity ``A x_i = b_i`` no longer holds).
    """

    def __init__(self, size: int):
        if int(size) < 1:
            raise ValueError(f"a solution window holds at least 1 solution, got {size}")
        self.size = int(size)
        self._x: np.ndarray | None = None  # (size, N) solutions
        self._b: np.ndarray | None = None  # (size, N) right-hand sides
        self._gram = np.zeros((self.size, self.size))  # b_i . b_j of the kept ones
        self._count = 0
        self._next = 0
        self._cross: tuple[np.ndarray, np.ndarray] | None = None  # (b, B b) of the last start()

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._count = self._next = 0
        self._cross = None

    def start(self, b: np.ndarray) -> np.ndarray | None:
        """``x0 = X c`` with ``c`` minimising ``||b - B c||`` over the kept pairs; None if none."""
        k = self._count
        if k == 0 or self._b is None or self._b.shape[1] != b.shape[0]:
            return None
        cross = self._b[:k] @ b
        self._cross = (b, cross)
        w, v = np.linalg.eigh(self._gram[:k, :k])
        keep = w > w[-1] * _GRAM_RCOND
        if not keep.any():
            return None
        c = v[:, keep] @ ((v[:, keep].T @ cross) / w[keep])
        return c @ self._x[:k]

    def add(self, x: np.ndarray, b: np.ndarray) -> None:
        """Keep ``x`` (a solution of ``A x = b`` to the tolerance) and ``b``; the oldest pair
        goes when the window is full."""
        n = b.shape[0]
        if self._b is None or self._b.shape[1] != n:
            self._x, self._b = np.empty((self.size, n)), np.empty((self.size, n))
            self.clear()
        k, slot = self._count, self._next
        cross = self._cross[1] if self._cross is not None and self._cross[0] is b else self._b[:k] @ b
        self._cross = None
        self._x[slot], self._b[slot] = x, b
        row = np.zeros(self.size)
        row[:k] = cross
        row[slot] = float(b @ b)
        self._gram[slot, :] = row
        self._gram[:, slot] = row
        self._count = min(k + 1, self.size)
        self._next = (slot + 1) % self.size
