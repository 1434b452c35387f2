"""Base class that records constructor arguments so a checkpoint reloads into the right model."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RegisteredModel", "check_dim", "conv_cls", "grid_coordinates"]


class RegisteredModel(nn.Module):
    """A model whose constructor arguments are recorded in :attr:`config`.

    Subclasses set ``name`` and call ``self._record(locals())`` first thing in ``__init__``.
    """

    name: str = ""

    def _record(self, init_locals: dict) -> None:
        kwargs = {k: v for k, v in init_locals.items() if k not in ("self", "__class__")}
        # tuples become lists so the config is JSON/YAML-serialisable and compares equal after a round trip
        self._config = {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}

    @property
    def config(self) -> dict:
        return dict(self._config)


def check_dim(dim: int) -> int:
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3 (spatial dimensions of the grid), got {dim!r}")
    return dim


def check_positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def conv_cls(dim: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dim]


def grid_coordinates(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Normalised node coordinates ``i / n`` in [0, 1) for the periodic grid of ``x``.

    Arguments:
        x: (B, C, *grid) tensor; only its shape, dtype and device are used.

    Returns:
        (B, dim, *grid) tensor. Nodes ``i / n`` nest: every second node of a grid of size 2n is a
        node of the grid of size n, so resolution transfer compares values at the same points.
    """
    grid = x.shape[2:]
    axes = [torch.arange(n, device=x.device, dtype=x.dtype) / n for n in grid]
    mesh = torch.meshgrid(*axes, indexing="ij")
    coords = torch.stack(mesh, dim=0)
    return coords.unsqueeze(0).expand(x.shape[0], *coords.shape)
