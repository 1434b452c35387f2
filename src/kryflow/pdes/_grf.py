"""Gaussian random fields on the unit square/cube and seeded paths through GRF space."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

__all__ = ["GaussianRandomField"]


class GaussianRandomField:
    """Stationary Gaussian random field with Matérn-like spectrum on a periodic uniform grid.

    The field is ``xi = C^{1/2} w`` (constant mode removed) with white noise ``w`` and covariance operator
    ``C = (-Δ + τ²)^(-α)`` (periodic on [0, 1)^dim), normalised so every grid value has unit
    marginal variance. Because ``w -> xi`` is linear, a rotation in white-noise space
    ``w_k = cos(θ) w_{k-1} + sin(θ) η_k`` keeps the marginal law of ``xi_k`` exactly the GRF;
    that is how drifting (correlated) sequences are built (:meth:`draws`, :meth:`path`).

    **Arguments:**
        shape: grid shape, ``(n, n)`` or ``(n, n, n)``.
        alpha: smoothness exponent α > dim/2 (larger = smoother).
        tau: inverse correlation length τ > 0 (larger = shorter correlation).
    """

    def __init__(self, shape: tuple[int, ...], alpha: float = 2.0, tau: float = 3.0):
        if len(shape) not in (2, 3) or min(shape) < 2:
            raise ValueError(f"GRF shape must be (n, n) or (n, n, n) with n >= 2, got {shape}")
        if not alpha > 0 or not tau > 0:
            raise ValueError(f"GRF needs alpha > 0 and tau > 0, got alpha={alpha}, tau={tau}")
        self.shape = tuple(int(s) for s in shape)
        freqs = np.meshgrid(*[np.fft.fftfreq(s, d=1.0 / s) for s in self.shape], indexing="ij")
        k2 = sum(f.astype(np.float64) ** 2 for f in freqs)
        spectrum = (4.0 * np.pi**2 * k2 + tau**2) ** (-alpha)
        # zero-mean fields (as in the FNO benchmark): otherwise the constant mode dominates for
        # small tau and a thresholded field is often a single constant
        spectrum.flat[0] = 0.0
        # Var(xi(x)) = mean(spectrum) for the unnormalised filter; divide it out.
        self._filter = np.sqrt(spectrum / spectrum.mean())

    def from_noise(self, noise: np.ndarray) -> np.ndarray:
        """Map white noise of shape ``self.shape`` to a field of the same shape (float64)."""
        return np.fft.ifftn(np.fft.fftn(noise) * self._filter).real

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One independent field, shape ``self.shape``, unit marginal variance."""
        return self.from_noise(rng.standard_normal(self.shape))

    def noise(self, seed: int, stream: int, index: int) -> np.ndarray:
        """White noise of shape ``self.shape`` drawn from ``(seed, stream, index)`` alone."""
        return np.random.default_rng([int(seed), int(stream), int(index)]).standard_normal(self.shape)

    def draws(self, seed: int, stream: int, indices: Iterable[int], relation: str,
              drift_angle: float) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, field)`` for the sorted ``indices`` of the path ``(seed, stream)``.

        ``relation="iid"``: field k comes from the noise of ``(seed, stream, k)`` alone.
        ``relation="drift"``: the white noise rotates, ``w_k = cos θ w_{k-1} + sin θ η_k`` with
        ``η_k`` from ``(seed, stream, k)``, so neighbours correlate at ``cos θ``; field k depends on
        every earlier η and is found by walking the recursion from 0 (cheap: no FFT on the way).
        Either way a field depends on ``(seed, stream, index)`` only, never on which other
        indices are asked for (a shard of a dataset gets the fields a whole run would).
        """
        wanted = sorted(int(k) for k in indices)
        if not wanted:
            return
        if relation == "iid":
            for k in wanted:
                yield k, self.from_noise(self.noise(seed, stream, k))
            return
        targets = set(wanted)
        fresh = (self.noise(seed, stream, k) for k in range(wanted[-1] + 1))
        for k, w in enumerate(self._walk(fresh, relation, drift_angle)):
            if k in targets:
                yield k, self.from_noise(w)

    def path(self, rng: np.random.Generator, num: int, relation: str, drift_angle: float):
        """Yield ``num`` fields related by ``relation`` ("drift" or "iid") from one generator."""
        fresh = (rng.standard_normal(self.shape) for _ in range(num))
        for w in self._walk(fresh, relation, drift_angle):
            yield self.from_noise(w)

    @staticmethod
    def _walk(fresh: Iterator[np.ndarray], relation: str, drift_angle: float) -> Iterator[np.ndarray]:
        """The white noise of each step: the fresh draw (iid), or the rotation of the previous one
        towards it (drift)."""
        c, s = np.cos(drift_angle), np.sin(drift_angle)
        noise = None
        for eta in fresh:
            noise = eta if noise is None or relation != "drift" else c * noise + s * eta
            yield noise
