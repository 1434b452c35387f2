"""Building, describing and rebuilding registered models by name (the registry is ``MODELS``)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import _REQUIRED, MODELS, RegisteredModel

__all__ = [
    "MODELS", "build_model", "matched_width", "model_config", "model_from_config", "model_parameters",
    "parameter_count", "resolution_divisor",
]


def model_parameters(name: str) -> dict:
    """Keyword arguments accepted by model ``name`` (besides in/out channels and dim) and their defaults."""
    return MODELS[name].declared_arguments()


def build_model(name: str, *, in_channels: int, out_channels: int, dim: int, **kwargs) -> nn.Module:
    """Build a registered model. Input (B, in_channels, *grid) float32 → (B, out_channels, *grid).

    Raises:
        ValueError: unknown name or keyword (the message lists the valid ones), or a bad value.
    """
    cls = MODELS[name]
    cls.check_arguments(kwargs)  # unknown names first: the constructor would raise a bare TypeError
    return cls(in_channels=in_channels, out_channels=out_channels, dim=dim, **kwargs)


def model_config(model: nn.Module) -> dict:
    """``{"name", "in_channels", "out_channels", "dim", **kwargs}`` — enough to rebuild the model."""
    if not isinstance(model, RegisteredModel):
        raise ValueError(f"model_config needs a model built by kryflow.models.build_model, got {type(model).__name__}")
    return model.config


def model_from_config(config: dict) -> nn.Module:
    """Inverse of :func:`model_config`."""
    config = dict(config)
    missing = [k for k in ("name", *_REQUIRED) if k not in config]
    if missing:
        raise ValueError(f"model config lacks {missing}; it needs name, in_channels, out_channels, dim (+ kwargs)")
    name = config.pop("name")
    return build_model(name, **config)


def resolution_divisor(name: str, **kwargs) -> int:
    """Every grid axis must be divisible by this (U-Net: 2**depth; FNO and ResNet: 1)."""
    cls = MODELS[name]
    cls.check_arguments(kwargs)
    return cls.resolution_divisor(**kwargs)


def parameter_count(name: str, *, in_channels: int, out_channels: int, dim: int, **kwargs) -> int:
    """Number of trainable parameters of model ``name`` with these arguments.

    The model is built on torch's meta device: no memory is allocated and nothing is initialised,
    so wide 3D models are counted as cheaply as small ones.
    """
    with torch.device("meta"):
        model = build_model(name, in_channels=in_channels, out_channels=out_channels, dim=dim, **kwargs)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_width(target: int, name: str, *, in_channels: int, out_channels: int, dim: int, key: str = "width",
                  **kwargs) -> tuple[int, int]:
    """The integer argument ``key`` of model ``name`` whose parameter count is nearest ``target``.

    For comparisons at a matched parameter count: e.g. the U-Net width that matches a SineNet,
    ``matched_width(parameter_count("sinenet", ...), "unet", ...)``. The other arguments stay as
    given; the count must grow with ``key`` (it does for every width of kryflow's models).

    **Returns:** ``(value, its parameter count)``.
    """
    def count(value: int) -> int:
        return parameter_count(name, in_channels=in_channels, out_channels=out_channels, dim=dim,
                               **{**kwargs, key: value})

    lo, hi = 1, 1
    while count(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # count(lo) < target <= count(hi), or lo == hi == 1
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    best = min({lo, hi}, key=lambda v: (abs(count(v) - target), v))
    return best, count(best)
