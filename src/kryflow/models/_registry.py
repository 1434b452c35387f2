"""Building, describing and rebuilding registered models by name (the registry is ``MODELS``)."""

from __future__ import annotations

from torch import nn

from ._base import _REQUIRED, MODELS, RegisteredModel

__all__ = ["MODELS", "build_model", "model_config", "model_from_config", "model_parameters", "resolution_divisor"]


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
