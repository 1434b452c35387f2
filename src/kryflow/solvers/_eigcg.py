"""eigCG: the Ritz pairs of a CG run, harvested from its Lanczos vectors with O(m) storage."""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

__all__ = ["EigCG", "small_eigh"]


def small_eigh(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric eigendecomposition of a small ``(m, m)`` matrix: ascending eigenvalues ``(m,)``
    and eigenvectors as columns ``(m, m)``.

    LAPACK ``syev``: for the 10-50 sized matrices here it is much faster than numpy's default
    divide-and-conquer path, whose threading overhead dominates at this size.
    """
    return sla.eigh(S, driver="ev", check_finite=False)


class EigCG:
    """Streaming thick-restart Lanczos on the (deflated, preconditioned) CG Lanczos vectors.

    Keeps a window of ``m`` vectors and the projected matrix T (tridiagonal, plus a dense
    block after restarts). When full it restarts to the 2k vectors spanned by the k smallest
    Ritz vectors of T_m and of T_{m-1} (Stathopoulos & Orginos 2010), so a whole solve feeds
    the harvest for O(m) storage.

    **Arguments:**
        n: N, the vector length. k: Ritz pairs wanted. m: window size (at least ``2k + 2``).
    """

    def __init__(self, n: int, k: int, m: int):
        self.k, self.m = k, max(m, 2 * k + 2)
        self.V = np.empty((self.m, n))
        self.T = np.zeros((self.m, self.m))
        self.j = 0  # vectors in the window
        self.active = True
        self.restarts = 0

    def push(self, v: np.ndarray, diag: float) -> None:
        """Append Lanczos vector ``v`` (N,) with its diagonal entry ``v^T A v``."""
        if not self.active:
            return
        self.V[self.j] = v
        self.T[self.j, self.j] = diag
        self.j += 1

    def couple(self, off: float) -> None:
        """Coupling ``v_last^T A v_next`` between the last pushed vector and the next one."""
        if not self.active:
            return
        j = self.j
        if j == self.m:
            last_row = self._restart()
            j = self.j
            self.T[j, :j] = off * last_row  # (V Q)^T A v_next = Q^T e_{m-1} * off
        else:
            self.T[j, :j] = 0.0
            self.T[j, j - 1] = off
        self.T[:j, j] = self.T[j, :j]

    def _restart(self) -> np.ndarray:
        m, k = self.m, self.k
        _, Y1 = small_eigh(self.T[:m, :m])
        _, Y2 = small_eigh(self.T[: m - 1, : m - 1])
        Y = np.zeros((m, 2 * k))
        Y[:, :k] = Y1[:, :k]
        Y[: m - 1, k:] = Y2[:, :k]
        Q, _ = np.linalg.qr(Y)
        self.V[: 2 * k] = Q.T @ self.V[:m]
        Tn = Q.T @ self.T[:m, :m] @ Q
        self.T[:] = 0.0
        self.T[: 2 * k, : 2 * k] = 0.5 * (Tn + Tn.T)
        self.j = 2 * k
        self.restarts += 1
        return Q[m - 1].copy()

    def stop(self) -> None:
        """The Lanczos relation ends (CG restarted): later vectors are not taken."""
        self.active = False

    def ritz_pairs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The k smallest Ritz values (ascending) and vectors (rows) of the window; None if empty."""
        j = self.j
        if j == 0:
            return None
        theta, S = small_eigh(self.T[:j, :j])
        k = min(self.k, j)
        return theta[:k], S[:, :k].T @ self.V[:j]

    def ritz_vectors(self) -> np.ndarray | None:
        """The k smallest Ritz vectors of the window, rows of shape (<=k, N); None if empty."""
        got = self.ritz_pairs()
        return None if got is None else got[1]
