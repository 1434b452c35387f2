"""Fourier neural operator (Li et al. 2021) for 2D and 3D grids with real-stored spectral weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import RegisteredModel, conv_cls, grid_coordinates

__all__ = ["FNO", "ModeMixing", "SpectralConv"]


class ModeMixing(nn.Module):
    """Per-mode complex channel mixing ``y[b,o,k] = sum_i x[b,i,k] W[i,o,k]``.

    The weight is stored as a REAL tensor of shape (in, out, corners, *modes, 2) and viewed as
    complex in ``forward``: curvature optimizers reject complex parameters and zeroth-order
    perturbations of complex tensors are half-scaled, so real storage lets every optimizer
    treat it like any other parameter. K-FAC hooks on this module (inputs and outputs are the
    retained Fourier coefficients).
    """

    def __init__(self, in_channels: int, out_channels: int, corners: int, modes: tuple[int, ...]):
        super().__init__()
        # Reference FNO initialisation: uniform magnitudes scaled by 1/(in*out), so the spectral
        # path starts small next to the pointwise path.
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(in_channels, out_channels, corners, *modes, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Arguments:
            x: (B, in, corners, *m) complex, with m <= the stored modes (coarse grids use fewer).

        Returns:
            (B, out, corners, *m) complex.
        """
        m = x.shape[3:]
        w = torch.view_as_complex(self.weight)
        w = w[(slice(None), slice(None), slice(None)) + tuple(slice(0, k) for k in m)]
        return torch.einsum("bic...,ioc...->boc...", x, w)


class SpectralConv(nn.Module):
    """Fourier layer: FFT, keep the lowest modes, mix channels per mode, inverse FFT.

    Resolution-invariant: the weights are indexed by frequency, not grid position, so a model
    trained at n evaluates at 2n. On grids too coarse for the configured modes the highest
    modes are dropped (the weights for them are simply unused).
    """

    def __init__(self, in_channels: int, out_channels: int, modes: tuple[int, ...]):
        super().__init__()
        self.dim = len(modes)
        self.modes = tuple(modes)
        self.out_channels = out_channels
        # rfft halves the last axis only; every other axis keeps positive and negative
        # frequencies, giving 2**(dim-1) corner blocks of low modes.
        self.corners = 2 ** (self.dim - 1)
        self.mix = ModeMixing(in_channels, out_channels, self.corners, self.modes)

    def _corner_slices(self, grid: tuple[int, ...]) -> tuple[list[tuple[slice, ...]], tuple[int, ...]]:
        full, last = grid[:-1], grid[-1]
        m_full = [min(m, n // 2) for m, n in zip(self.modes[:-1], full)]
        m_last = min(self.modes[-1], last // 2 + 1)
        slices = []
        for c in range(self.corners):
            s = []
            for axis, m in enumerate(m_full):
                negative = (c >> axis) & 1
                s.append(slice(-m, None) if negative else slice(0, m))
            s.append(slice(0, m_last))
            slices.append(tuple(s))
        return slices, (*m_full, m_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Arguments:
            x: (B, in, *grid) real.

        Returns:
            (B, out, *grid) real.
        """
        grid = tuple(x.shape[2:])
        axes = tuple(range(-self.dim, 0))
        # FFTs in float32 even under autocast: half-precision FFTs need power-of-two sizes.
        xh = torch.fft.rfftn(x.float(), dim=axes, norm="ortho")
        slices, m = self._corner_slices(grid)
        lead = (slice(None), slice(None))
        blocks = torch.stack([xh[lead + s] for s in slices], dim=2)  # (B, in, corners, *m)
        yb = self.mix(blocks)
        out = torch.zeros(x.shape[0], self.out_channels, *xh.shape[2:], dtype=yb.dtype, device=x.device)
        # Assign in reverse so that, on grids where positive and negative blocks meet, the
        # positive block wins consistently (coarse grids only).
        for c in reversed(range(self.corners)):
            out[lead + slices[c]] = yb[:, :, c]
        return torch.fft.irfftn(out, s=grid, dim=axes, norm="ortho").to(x.dtype)


class FNO(RegisteredModel):
    """Fourier neural operator.

    Input (B, in_channels, *grid) → output (B, out_channels, *grid), grid 2D or 3D of any size.
    Normalised grid coordinates are appended to the input internally.

    Arguments:
        in_channels, out_channels, dim: channels and spatial dimension (2 or 3).
        width: channels of the Fourier layers.
        modes: Fourier modes kept per axis (int, or one per axis).
        layers: number of Fourier layers.
        projection_width: hidden channels of the pointwise output projection.
    """

    name = "fno"
    per_axis = ("modes",)

    def __init__(self, in_channels: int, out_channels: int, dim: int, width: int = 32, modes=12,
                 layers: int = 4, projection_width: int = 128):
        super().__init__()
        self._record(locals())
        if isinstance(modes, int):
            modes = (modes,) * dim
        modes = tuple(modes)
        if len(modes) != dim or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in modes):
            raise ValueError(f"modes must be a positive int or a list of {dim} positive ints, got {modes!r}")
        self.dim = dim
        conv = conv_cls(dim)
        self.lift = conv(in_channels + dim, width, 1)
        self.spectral = nn.ModuleList(SpectralConv(width, width, modes) for _ in range(layers))
        self.pointwise = nn.ModuleList(conv(width, width, 1) for _ in range(layers))
        self.project = nn.Sequential(conv(width, projection_width, 1), nn.GELU(), conv(projection_width, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *grid) → (B, out_channels, *grid)."""
        if x.dim() != self.dim + 2:
            raise ValueError(
                f"FNO(dim={self.dim}) expects input (B, C, *grid) with {self.dim} grid axes, got {tuple(x.shape)}"
            )
        h = self.lift(torch.cat([x, grid_coordinates(x, self.dim)], dim=1))
        last = len(self.spectral) - 1
        for i, (spec, point) in enumerate(zip(self.spectral, self.pointwise)):
            h = spec(h) + point(h)
            if i < last:
                h = F.gelu(h)
        return self.project(h)
