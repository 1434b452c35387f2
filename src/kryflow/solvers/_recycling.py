"""The abstract base of methods that carry a recycle space from one solve to the next."""

from __future__ import annotations

import abc
from typing import Any

from ._common import MatrixFingerprint, python_scalar
from ._methods import ADAPTIVE, RECYCLE_DIM, SequenceMethod

__all__ = ["RecyclingMethod"]


class RecyclingMethod(SequenceMethod):
    """A method with a recycle space of up to ``recycle_dim`` vectors (abstract).

    **Arguments:**
        recycle_dim: k, the most vectors the space holds (0: none, the plain method).
        adaptive: switch recycling off while solves without a recycle space take fewer than 2k
            iterations (a strong preconditioner: building and applying the space then costs more
            matvecs than it can save), and back on when a solve needs 4k iterations or more.

    Subclasses implement :meth:`_drop_space` (and ``recycle_dim``, ``_iterate``).
    Derived data built from A (A·W, C = A·U) is checked against a :class:`MatrixFingerprint`
    of the matrix it came from (``_fp``), so a changed matrix passed as unchanged is caught.
    """

    recycles = True

    def __init__(self, recycle_dim: int = 8, adaptive: bool = True):
        self.k = int(RECYCLE_DIM.validate("recycle_dim", python_scalar(recycle_dim)))
        self.adaptive = bool(ADAPTIVE.validate("adaptive", python_scalar(adaptive)))
        self.active = True
        self._fingerprint = MatrixFingerprint()
        self._fp: tuple | None = None

    @classmethod
    def from_options(cls, recycle_dim: int, **options: Any) -> RecyclingMethod:
        return cls(recycle_dim, **options)

    def reset(self) -> None:
        """Forget the recycle space (e.g. when the problem size changes)."""
        self._drop_space()
        self._fp = None

    @abc.abstractmethod
    def _drop_space(self) -> None:
        """Empty the recycle space (recycling switched off)."""

    def _adapt(self, iterations: int, used_k: int, k: int) -> bool | None:
        """Apply the ``adaptive`` rule after a solve of ``iterations`` that used ``used_k`` vectors,
        with ``k`` the vectors recycling would add. **Returns:** True when recycling was switched
        on, False when off (the space is dropped), None when nothing changed."""
        if not (self.adaptive and self.k > 0):
            return None
        # judged only on solves without a recycle space, else recycling success would switch it off
        if self.active and used_k == 0 and iterations < 2 * k:
            self.active = False
            self._drop_space()
            return False
        if not self.active and iterations >= 4 * k:
            self.active = True
            return True
        return None
