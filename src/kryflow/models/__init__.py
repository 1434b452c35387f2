"""Neural surrogates registered by name: FNO, U-Net, dilated ResNet, SineNet (2D and 3D), and
neuraloperator's FNO, TFNO and UNO where the ``neuralop`` extra is installed.

Every model maps (B, C_in, *grid) float32 → (B, C_out, *grid) and records its constructor
arguments (:func:`model_config`) so a checkpoint reloads into the right class. A new model is one
new private module with a :class:`RegisteredModel` subclass that sets ``name``.
"""

from ._base import MODELS, RegisteredModel
from ._fno import FNO, ModeMixing, SpectralConv
from ._registry import (
    build_model, matched_width, model_config, model_from_config, model_parameters, parameter_count, resolution_divisor,
)
from ._resnet import DilatedResNet
from ._sinenet import SineNet
from ._unet import UNet

__all__ = [
    "FNO", "MODELS", "DilatedResNet", "ModeMixing", "RegisteredModel", "SineNet", "SpectralConv", "UNet",
    "build_model", "matched_width", "model_config", "model_from_config", "model_parameters", "parameter_count",
    "resolution_divisor",
]
