"""Base class of the registered models: records constructor arguments so a checkpoint reloads into
the right class, registers the class by name, and checks its arguments in one place."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from kryflow._registry import ParameterError, Registry, unknown_names

__all__ = ["MODELS", "RegisteredModel", "conv_cls", "grid_coordinates"]

#: The models by name; a model registers itself by subclassing :class:`RegisteredModel` with a ``name``.
MODELS: Registry[type[RegisteredModel]] = Registry("model", package="kryflow.models")

_REQUIRED = ("in_channels", "out_channels", "dim")


class RegisteredModel(nn.Module):
    """A model registered by ``name`` whose constructor arguments are recorded in :attr:`config`.

    Subclasses set ``name`` and call ``self._record(locals())`` first thing in ``__init__``; that
    checks every argument against the constructor's declared defaults (:meth:`check_arguments`).
    ``per_axis`` names integer arguments that may also be given as one positive integer per grid axis.
    """

    name: str = ""
    per_axis: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.name:
            MODELS.register(cls.name, cls)

    @classmethod
    def declared_arguments(cls) -> dict[str, Any]:
        """Keyword arguments besides in/out channels and dim, with their defaults (lists for tuples)."""
        sig = inspect.signature(cls.__init__)
        return {
            k: (list(p.default) if isinstance(p.default, tuple) else p.default)
            for k, p in sig.parameters.items()
            if k != "self" and k not in _REQUIRED
        }

    @classmethod
    def check_arguments(cls, kwargs: dict[str, Any]) -> None:
        """Check keyword arguments (without in/out channels and dim) against the declared defaults.

        An argument must have its default's type (bool, int, finite float, list) and numbers must be
        positive. Raises :class:`ParameterError` naming the argument.
        """
        declared = cls.declared_arguments()
        unknown_names(kwargs, declared, f"model {cls.name!r}", "argument")
        for key, value in kwargs.items():
            _check_like_default(key, value, declared[key], key in cls.per_axis)

    @classmethod
    def resolution_divisor(cls, **kwargs: Any) -> int:
        """Every grid axis must be divisible by this (1 unless the model downsamples)."""
        return 1

    def _record(self, init_locals: dict) -> None:
        kwargs = {k: v for k, v in init_locals.items() if k not in ("self", "__class__")}
        _check_dim(kwargs["dim"])
        for key in ("in_channels", "out_channels"):
            _check_like_default(key, kwargs[key], 1, False)
        type(self).check_arguments({k: v for k, v in kwargs.items() if k not in _REQUIRED})
        # tuples become lists so the config is JSON/YAML-serialisable and compares equal after a round trip
        self._config = {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}

    @property
    def config(self) -> dict:
        return dict(self._config)


def _check_dim(dim: Any) -> None:
    if dim not in (2, 3) or isinstance(dim, bool):
        raise ParameterError(f"dim must be 2 or 3 (spatial dimensions of the grid), got {dim!r}", "dim")


def _check_like_default(key: str, value: Any, default: Any, per_axis: bool) -> None:
    """One argument against its default: same kind of value, numbers > 0."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = is_int(value) or (per_axis and isinstance(value, (list, tuple)) and all(map(is_int, value)))
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = True
    if not ok:
        kind = "an integer or one per axis" if per_axis else type(default).__name__
        raise ParameterError(f"{key} must be {kind} like the default {default!r}, got {value!r}", key)
    numbers = value if per_axis and isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0 for v in numbers):
        raise ParameterError(f"{key} must be positive, got {value!r}", key)


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
