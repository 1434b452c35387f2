"""The one place a model name maps to code."""

from __future__ import annotations

import inspect

from torch import nn

from ._base import RegisteredModel
from ._fno import FNO
from ._resnet import DilatedResNet
from ._unet import UNet

__all__ = ["MODELS", "build_model", "model_config", "model_from_config", "model_parameters", "resolution_divisor"]

MODELS: dict[str, type[RegisteredModel]] = {cls.name: cls for cls in (FNO, UNet, DilatedResNet)}
_REQUIRED = ("in_channels", "out_channels", "dim")


def _cls(name: str) -> type[RegisteredModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}")
    return MODELS[name]


def model_parameters(name: str) -> dict:
    """Keyword arguments accepted by model ``name`` (besides in/out channels and dim) and their defaults."""
    sig = inspect.signature(_cls(name).__init__)
    return {
        k: (list(p.default) if isinstance(p.default, tuple) else p.default)
        for k, p in sig.parameters.items()
        if k != "self" and k not in _REQUIRED
    }


def build_model(name: str, *, in_channels: int, out_channels: int, dim: int, **kwargs) -> nn.Module:
    """Build a registered model. Input (B, in_channels, *grid) float32 → (B, out_channels, *grid).

    Raises:
        ValueError: unknown name or keyword (the message lists the valid ones), or a bad value.
    """
    cls = _cls(name)
    valid = model_parameters(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for model {name!r}; valid: {sorted(valid)}")
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
    params = model_parameters(name)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for model {name!r}; valid: {sorted(params)}")
    if name == "unet":
        return 2 ** kwargs.get("depth", params["depth"])
    return 1
