"""Optimizer registry: torch, pytorch-optimizer and our own (AdaHessian, K-FAC, M-FAC, MKOR, zeroth-order).

``build_optimizer(name, model, lr=..., weight_decay=..., **extras)`` returns a
:class:`StepRunner`; the trainer calls only ``runner.step(loss_fn)``.
"""

from ._adahessian import AdaHessian
from ._kfac import KFAC
from ._layers import LayerCapture, covered_layers, patches
from ._mfac import MFAC, woodbury_ihvp
from ._mkor import MKOR, sherman_morrison
from ._space import SHARED_SPACE, Dim, apply_setting, check_space, draw_settings, space_from_config
from ._registry import (
    OPTIMIZERS, OptimizerSpec, StepRunner, build_optimizer, build_scheduler, check_hyperparameters, scale_lr,
)
from ._zo import ZerothOrderSPSA

__all__ = [
    "SHARED_SPACE", "Dim", "apply_setting", "check_space", "draw_settings", "space_from_config",
    "AdaHessian", "KFAC", "MFAC", "MKOR", "OPTIMIZERS", "LayerCapture", "OptimizerSpec", "StepRunner",
    "ZerothOrderSPSA", "build_optimizer", "build_scheduler", "check_hyperparameters", "covered_layers", "patches",
    "scale_lr", "sherman_morrison", "woodbury_ihvp",
]
