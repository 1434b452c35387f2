"""Dilated ResNet (Stachenfeld et al. 2022, "Learned coarse models for efficient turbulence simulation")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import RegisteredModel, conv_cls

__all__ = ["DilatedResNet"]


class DilatedResNet(RegisteredModel):
    """Encoder conv → ``blocks`` residual blocks of 3×3 convs with the given dilations → decoder conv.

    Dilations grow the receptive field without downsampling, so any grid size works
    (divisor 1). Input (B, in_channels, *grid) → (B, out_channels, *grid).
    """

    name = "resnet"

    def __init__(self, in_channels: int, out_channels: int, dim: int, width: int = 32, blocks: int = 4,
                 dilations=(1, 2, 4, 8, 4, 2, 1)):
        super().__init__()
        self._record(locals())
        dilations = tuple(dilations)
        if not dilations or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dilations):
            raise ValueError(f"dilations must be a non-empty list of positive ints, got {dilations!r}")
        self.dim = dim
        conv = conv_cls(dim)
        self.encode = conv(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.ModuleList(conv(width, width, 3, padding=d, dilation=d) for d in dilations) for _ in range(blocks)
        )
        self.decode = conv(width, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *grid) → (B, out_channels, *grid)."""
        if x.dim() != self.dim + 2:
            raise ValueError(
                f"DilatedResNet(dim={self.dim}) expects (B, C, *grid) with {self.dim} grid axes, got {tuple(x.shape)}"
            )
        h = self.encode(x)
        for block in self.blocks:
            r = h
            for c in block:
                r = F.gelu(c(r))
            h = h + r
        return self.decode(h)
