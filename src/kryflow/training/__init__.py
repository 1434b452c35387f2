"""Training: one loop for every optimizer, checkpoints, resume, divergence handling."""

from kryflow.training.surrogate import Surrogate, load_surrogate, save_surrogate
from kryflow.training.trainer import (
    HISTORY_COLUMNS, LOSSES, Checkpoint, TrainResult, loss_function, select_device, train_cell,
)

__all__ = [
    "HISTORY_COLUMNS",
    "LOSSES",
    "Checkpoint",
    "Surrogate",
    "TrainResult",
    "load_surrogate",
    "loss_function",
    "save_surrogate",
    "select_device",
    "train_cell",
]
