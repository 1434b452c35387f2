"""A trained network together with the normalisation it was trained with.

The network sees normalised inputs and predicts normalised targets; ``Surrogate`` maps
physical inputs to physical outputs, so evaluation, the MLflow model and any user all score
the same de-normalised fields. Normalisation statistics come from the dataset's training split.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

__all__ = ["Surrogate", "save_surrogate", "load_surrogate"]


def _shape(stat: np.ndarray | torch.Tensor, dim: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(stat, dtype=np.float32))
    return t.reshape(1, -1, *([1] * dim))


class Surrogate(nn.Module):
    """Physical-units wrapper: ``y = decode(net(encode(x)))`` (a residual next-step model:
    ``y = x_last + decode(net(encode(x)))``, the last given state's channels of ``x`` added back).

    Arguments:
        net: maps (B, C_in, *grid) -> (B, C_out, *grid) in normalised units.
        stats: ``{"x_mean","x_std","y_mean","y_std"}`` arrays of shape (C_in,) / (C_out,).
        dim: number of spatial dimensions (2 or 3).

        task: what the network was trained for, kept with it (None: ``final_state``; a next-step
            model's :meth:`~kryflow.data.TrajectoryLayout.as_dict`: history, horizon, which channels
            are static and which are states), so evaluation rolls it out without the config.
    """

    def __init__(self, net: nn.Module, stats: Mapping[str, np.ndarray], dim: int, task: Mapping | None = None):
        super().__init__()
        self.task = dict(task) if task is not None else None
        self._residual = None
        if self.task is not None and self.task.get("residual"):
            from kryflow.data import TrajectoryLayout

            self._residual = TrajectoryLayout.from_dict(self.task).last_state_channels()
        self.net = net
        self.dim = int(dim)
        eps = 1e-12
        self.register_buffer("x_mean", _shape(stats["x_mean"], dim))
        self.register_buffer("x_std", _shape(np.maximum(np.asarray(stats["x_std"]), eps), dim))
        self.register_buffer("y_mean", _shape(stats["y_mean"], dim))
        self.register_buffer("y_std", _shape(np.maximum(np.asarray(stats["y_std"]), eps), dim))

    def encode_x(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def encode_y(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.y_mean) / self.y_std

    def decode_y(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.y_std + self.y_mean

    def encode_target(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the network should output for input ``x`` and physical target ``y`` (normalised)."""
        return self.encode_y(y if self._residual is None else y - x[:, self._residual])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode_y(self.net(self.encode_x(x)))
        return out if self._residual is None else out + x[:, self._residual]

    def stats(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).detach().cpu().flatten().numpy()
                for k in ("x_mean", "x_std", "y_mean", "y_std")}


def save_surrogate(path, surrogate: Surrogate, extra: Mapping | None = None) -> None:
    """Save architecture config, weights and normalisation (reloadable without the dataset)."""
    from kryflow.models import model_config

    torch.save(
        {
            "model_config": model_config(surrogate.net),
            "state_dict": surrogate.net.state_dict(),
            "stats": surrogate.stats(),
            "dim": surrogate.dim,
            "task": surrogate.task,
            **dict(extra or {}),
        },
        path,
    )


def load_surrogate(path, map_location="cpu") -> Surrogate:
    from kryflow.models import model_from_config

    blob = torch.load(path, map_location=map_location, weights_only=False)
    net = model_from_config(blob["model_config"])
    net.load_state_dict(blob["state_dict"])
    surrogate = Surrogate(net, blob["stats"], blob["dim"], task=blob.get("task"))
    # what it was trained on (family, grid, channels), kept on the module so a logged MLflow model has it too
    surrogate.trained_on = blob.get("trained_on")
    return surrogate
