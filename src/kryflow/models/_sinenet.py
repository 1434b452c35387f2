"""SineNet (Zhang et al., "Learning Temporal Dynamics in Time-Dependent PDEs", ICLR 2024) for 2D and 3D grids.

A SineNet is a sequence of *waves*, each a small U-Net that updates one latent state:
``h ← h + wave_k(h)``. A single U-Net must carry the features of the input time through every skip
connection although the output lives one time step later (the skips are misaligned in time); a
wave moves the state a fraction of that step, so each wave's skips join features that are nearly
aligned. Inside a wave the encoder sees, at every coarser level, the wave's own input pooled to that
level beside the features it computed (the paper's "disentangled" downsampling), so multi-scale
processing does not have to carry the state along; every stage is residual.

For time-dependent data the history of ``k`` states arrives flattened into the channels and the
``horizon`` predicted states leave as channels: the model maps ``in_channels`` to ``out_channels``
on a grid like every kryflow model, and the task decides what the channels mean.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kryflow._registry import ParameterError

from ._base import RegisteredModel, conv_cls

__all__ = ["SineNet"]

_PADDINGS = ("zeros", "circular")
_INTERPOLATIONS = ("linear", "nearest", "cubic")


class _ConvBlock(nn.Module):
    """Two 3×3 (×3) convolutions, each followed by one-group normalisation (optional) and GELU."""

    def __init__(self, conv: type[nn.Module], cin: int, cout: int, norm: bool, padding_mode: str):
        super().__init__()
        self.a = conv(cin, cout, 3, padding=1, padding_mode=padding_mode)
        self.b = conv(cout, cout, 3, padding=1, padding_mode=padding_mode)
        # one group: per-sample statistics over channels and grid, nothing shared across a batch
        self.norm_a = nn.GroupNorm(1, cout) if norm else nn.Identity()
        self.norm_b = nn.GroupNorm(1, cout) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm_b(self.b(F.gelu(self.norm_a(self.a(x))))))


class _Stage(nn.Module):
    """A residual stage: ``blocks`` conv blocks on ``cat(main, extra)``; ``main`` reaches the first
    block's output through a 1×1 projection, each later block's input reaches its output unchanged.

    Arguments:
        c_main, c_extra: channels of the tensor the shortcut starts from and of the one joined to it
            (0: none).
    """

    def __init__(self, conv, c_main: int, c_extra: int, cout: int, blocks: int, norm: bool, padding_mode: str):
        super().__init__()
        self.blocks = nn.ModuleList(
            _ConvBlock(conv, c_main + c_extra if i == 0 else cout, cout, norm, padding_mode) for i in range(blocks))
        self.shortcut = conv(c_main, cout, 1)

    def forward(self, main: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = main if extra is None else torch.cat([main, extra], dim=1)
        skip = self.shortcut(main)
        for block in self.blocks:
            h = block(h) + skip
            skip = h
        return h


class _Wave(nn.Module):
    """One wave: a U-Net from the latent state (B, chans[0], *grid) to its update, same shape.

    Level ``l`` (1..depth) halves the grid and has ``chans[l]`` channels. With ``disentangle`` every
    level below the first also receives the wave's input pooled to its grid.
    """

    def __init__(self, conv, chans: list[int], blocks: int, norm: bool, padding_mode: str, disentangle: bool):
        super().__init__()
        depth = len(chans) - 1
        self.disentangle = disentangle
        # at the first level the pooled input *is* the pooled state: joining it again adds nothing
        self.down = nn.ModuleList(
            _Stage(conv, chans[lv], chans[0] if disentangle and lv > 0 else 0, chans[lv + 1], blocks, norm,
                   padding_mode) for lv in range(depth))
        # main: the coarser level upsampled; extra: this level's encoder output (the skip)
        self.up = nn.ModuleList(
            _Stage(conv, chans[lv + 1], chans[lv], chans[lv], blocks, norm, padding_mode) for lv in range(depth))

    def forward(self, x: torch.Tensor, pool, upsample) -> torch.Tensor:
        skips, h, pooled = [x], x, x
        for lv, stage in enumerate(self.down):
            h = pool(h)
            pooled = pool(pooled) if self.disentangle else pooled
            h = stage(h, pooled if self.disentangle and lv > 0 else None)
            skips.append(h)
        h = skips.pop()
        for lv in reversed(range(len(self.up))):
            h = self.up[lv](upsample(h), skips.pop())
        return h


class SineNet(RegisteredModel):
    """SineNet: ``waves`` U-Nets in sequence, each adding its output to the latent state.

    Input (B, in_channels, *grid) → output (B, out_channels, *grid), grid 2D or 3D with every axis
    divisible by ``2**depth``. Time history arrives flattened into ``in_channels``, future steps
    leave as ``out_channels``.

    Arguments:
        in_channels, out_channels, dim: channels and spatial dimension (2 or 3).
        width: channels of the latent state (the top level of every wave).
        waves: number of waves (the paper's K; its main model has 8).
        depth: halvings of the grid inside a wave.
        multiplier: channels grow by this factor per level (``int(width * multiplier**l)``); the
            paper uses 2 for one wave and less (1.425 for K = 8) to keep the parameter count.
        blocks: conv blocks per stage.
        norm: one-group normalisation after every convolution of a block (the paper's choice). Off
            by default as in kryflow's U-Net: then every parameter lives in a convolution that
            K-FAC and MKOR precondition (they give a normalisation's scale and shift the plain
            gradient), and the U-Net comparison differs in the waves alone.
        disentangle: every coarser encoder level also sees the wave's input pooled to its grid.
        padding: ``"zeros"`` (walls, Dirichlet data) or ``"circular"`` (periodic domains); K-FAC and
            MKOR cover zero-padded convolutions only and give circular ones the plain gradient.
        interpolation: upsampling, ``"linear"`` (bi-/trilinear), ``"nearest"`` or ``"cubic"``
            (bicubic, the paper's; 2D only).
    """

    name = "sinenet"

    @classmethod
    def resolution_divisor(cls, **kwargs) -> int:
        """Every grid axis must be divisible by ``2**depth`` (one halving per level)."""
        return 2 ** kwargs.get("depth", cls.declared_arguments()["depth"])

    @classmethod
    def check_arguments(cls, kwargs: dict[str, Any]) -> None:
        """The base checks plus the string options' choices and at least one channel at every level."""
        strings = {"padding": _PADDINGS, "interpolation": _INTERPOLATIONS}
        super().check_arguments({k: v for k, v in kwargs.items() if k not in strings})
        for key, choices in strings.items():
            if key in kwargs and kwargs[key] not in choices:
                raise ParameterError(f"{key} must be one of {list(choices)}, got {kwargs[key]!r}", key)
        kw = {**cls.declared_arguments(), **kwargs}
        if int(kw["width"] * kw["multiplier"] ** kw["depth"]) < 1 or int(kw["width"] * kw["multiplier"]) < 1:
            raise ParameterError(f"multiplier {kw['multiplier']!r} leaves a level of width {kw['width']} without "
                                 "channels; use a multiplier >= 1", "multiplier")

    def __init__(self, in_channels: int, out_channels: int, dim: int, width: int = 16, waves: int = 4,
                 depth: int = 3, multiplier: float = 1.5, blocks: int = 1, norm: bool = False,
                 disentangle: bool = True, padding: str = "zeros", interpolation: str = "linear"):
        super().__init__()
        self._record(locals())
        if interpolation == "cubic" and dim != 2:
            raise ParameterError("interpolation 'cubic' is bicubic, 2D only (torch has no tricubic); use 'linear' "
                                 "in 3D", "interpolation")
        self.dim, self.depth, self.padding = dim, depth, padding
        self._mode = {"linear": {2: "bilinear", 3: "trilinear"}[dim], "nearest": "nearest",
                      "cubic": "bicubic"}[interpolation]
        conv = conv_cls(dim)
        chans = [int(width * multiplier**lv) for lv in range(depth + 1)]
        self.lift = conv(in_channels, width, 3, padding=1, padding_mode=padding)
        self.waves = nn.ModuleList(_Wave(conv, chans, blocks, norm, padding, disentangle) for _ in range(waves))
        self.project = conv(width, out_channels, 3, padding=1, padding_mode=padding)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return (F.avg_pool2d if self.dim == 2 else F.avg_pool3d)(x, 2)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        align = {} if self._mode == "nearest" else {"align_corners": False}
        if self.padding != "circular":
            return F.interpolate(x, scale_factor=2, mode=self._mode, **align)
        # periodic grid: interpolate across the wrap-around too (two cells feed a cubic stencil)
        p = 2
        up = F.interpolate(F.pad(x, (p,) * (2 * self.dim), mode="circular"), scale_factor=2, mode=self._mode, **align)
        return up[(slice(None), slice(None)) + (slice(2 * p, -2 * p),) * self.dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *grid) → (B, out_channels, *grid)."""
        divisor = 2**self.depth
        if x.dim() != self.dim + 2 or any(n % divisor for n in x.shape[2:]):
            raise ValueError(
                f"SineNet(dim={self.dim}, depth={self.depth}) needs input (B, C, *grid) with {self.dim} grid axes "
                f"divisible by {divisor}; got shape {tuple(x.shape)} (resize the grid or lower depth)"
            )
        h = self.lift(x)
        for wave in self.waves:
            h = h + wave(h, self._pool, self._upsample)  # the residual per wave
        return self.project(h)
