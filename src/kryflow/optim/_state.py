"""State loading that keeps the dtypes our optimizers store on purpose."""

from __future__ import annotations

import torch

__all__ = ["KeepStateDtypes"]


class KeepStateDtypes:
    """Mixin for ``torch.optim.Optimizer`` subclasses.

    ``Optimizer.load_state_dict`` casts every floating state tensor to its parameter's dtype,
    which would silently drop the imaginary part of complex Kronecker factors (spectral layers)
    and the float64 Gram matrix of M-FAC. We reload, then put the saved tensors back with their
    own dtype (moved to the parameter's device).
    """

    def load_state_dict(self, state_dict: dict) -> None:
        # tensors are restored here, everything else (hyperparameters, counters) by torch
        plain = {
            pid: {k: v for k, v in st.items() if not torch.is_tensor(v)} for pid, st in state_dict["state"].items()
        }
        super().load_state_dict({**state_dict, "state": plain})
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, param in zip(ids, params):
            for key, value in state_dict["state"].get(pid, {}).items():
                if torch.is_tensor(value):
                    self.state[param][key] = value.to(device=param.device).clone()
