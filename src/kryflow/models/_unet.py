"""U-Net (Ronneberger et al. 2015) for 2D and 3D grids."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import RegisteredModel, conv_cls

__all__ = ["UNet"]


class _DoubleConv(nn.Module):
    def __init__(self, conv: type[nn.Module], cin: int, cout: int):
        super().__init__()
        self.a = conv(cin, cout, 3, padding=1)
        self.b = conv(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.b(F.gelu(self.a(x))))


class UNet(RegisteredModel):
    """U-Net with ``depth`` down/up levels; channels ``width * 2**level``.

    Downsampling is average pooling and upsampling is nearest-neighbour followed by a
    convolution (instead of transposed convolutions) so that every parameter lives in a
    plain Conv layer that K-FAC/MKOR cover. No normalisation layers, for the same reason
    and because batch statistics would make per-sample curvature ill-defined.

    Input (B, in_channels, *grid) → (B, out_channels, *grid); every grid axis must be
    divisible by ``2**depth``.
    """

    name = "unet"

    @classmethod
    def resolution_divisor(cls, **kwargs) -> int:
        """Every grid axis must be divisible by ``2**depth`` (one halving per level)."""
        return 2 ** kwargs.get("depth", cls.declared_arguments()["depth"])

    def __init__(self, in_channels: int, out_channels: int, dim: int, width: int = 16, depth: int = 3):
        super().__init__()
        self._record(locals())
        self.dim, self.depth = dim, depth
        conv = conv_cls(dim)
        chans = [width * 2**level for level in range(depth + 1)]
        self.inc = _DoubleConv(conv, in_channels, chans[0])
        self.down = nn.ModuleList(_DoubleConv(conv, chans[i], chans[i + 1]) for i in range(depth))
        self.up_conv = nn.ModuleList(conv(chans[i + 1], chans[i], 3, padding=1) for i in range(depth))
        self.up = nn.ModuleList(_DoubleConv(conv, 2 * chans[i], chans[i]) for i in range(depth))
        self.out = conv(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *grid) → (B, out_channels, *grid)."""
        divisor = 2**self.depth
        if x.dim() != self.dim + 2 or any(n % divisor for n in x.shape[2:]):
            raise ValueError(
                f"UNet(dim={self.dim}, depth={self.depth}) needs input (B, C, *grid) with {self.dim} grid axes "
                f"divisible by {divisor}; got shape {tuple(x.shape)} (resize the grid or lower depth)"
            )
        pool = F.avg_pool2d if self.dim == 2 else F.avg_pool3d
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(pool(skips[-1], 2)))
        h = skips.pop()
        for i in reversed(range(self.depth)):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = F.gelu(self.up_conv[i](h))
            h = self.up[i](torch.cat([skips.pop(), h], dim=1))
        return self.out(h)
