"""What a training step does, counted op by op, and a roofline model of its time on a GPU.

Where no GPU has been measured, a plan prices the GPU jobs with this model: every kernel a step
launches costs the longest of its arithmetic at the device's sustained rate, its memory traffic
at the device's sustained bandwidth, and the host's time to launch it (eager PyTorch issues one
kernel per operation; small models on a large GPU are bound by that). The counts are measured
(one real step under a dispatch mode); the device rates are assumptions, named in
:data:`GPU_PROFILES` and printed with every plan. A measured GPU (``kryflow plan --measure-device
cuda`` on a GPU node) replaces the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["GPU_PROFILES", "count_step", "model_step_seconds"]

#: Sustained rates assumed for the model: float32 FLOP/s (no tensor cores: PyTorch's default
#: float32 matmuls), memory bandwidth in bytes/s, and seconds per launched kernel (eager
#: PyTorch's host-side cost per op). Peak figures from the vendors' data sheets times 0.6
#: (arithmetic) and 0.75 (bandwidth).
GPU_PROFILES: dict[str, dict[str, float]] = {
    "h100": {"flops": 0.6 * 67e12, "bandwidth": 0.75 * 3.35e12, "launch": 8e-6,
             "source": "H100 SXM: 67 TFLOP/s FP32, 3.35 TB/s HBM3"},
    "a100": {"flops": 0.6 * 19.5e12, "bandwidth": 0.75 * 2.04e12, "launch": 8e-6,
             "source": "A100 SXM 80GB: 19.5 TFLOP/s FP32, 2.04 TB/s HBM2e"},
}

# FFTs are not in torch's FLOP registry: 5 n log2 n per complex transform of length n (the usual
# radix-2 count), half that for real-input ones.
_FFT = {"_fft_r2c": 2.5, "_fft_c2r": 2.5, "_fft_c2c": 5.0}


def _nbytes(t) -> int:
    import torch

    if isinstance(t, torch.Tensor) and t.device.type != "meta":
        return t.numel() * t.element_size()
    return 0


def count_step(step: Callable[[], Any]) -> dict:
    """Run ``step`` once and count every kernel it launches.

    **Returns:** ``ops``: a compact list ``[[flops, bytes, weight], ...]`` of the non-view
    operations (bytes: every tensor read and written; weight 1: the kernel runs once a step), their
    sums ``flops`` and ``bytes``, and ``kernels`` (their number).
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import flop_registry

    ops: list[list[float]] = []

    class _Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if getattr(func, "is_view", False) or func.name().split("::")[-1].split(".")[0] in (
                    "detach", "alias", "lift_fresh", "_local_scalar_dense", "empty", "empty_like", "new_empty"):
                return out
            packet = func.overloadpacket
            flops = 0.0
            if packet in flop_registry:
                try:
                    flops = float(flop_registry[packet](*args, **kwargs, out_val=out))
                except Exception:  # noqa: BLE001 (a formula that does not take these arguments)
                    flops = 0.0
            else:
                name = packet.__name__
                if name in _FFT and isinstance(args[0], torch.Tensor):
                    n = max(2, math.prod(args[0].shape[d] for d in args[1])) if len(args) > 1 else 2
                    flops = _FFT[name] * args[0].numel() * math.log2(n)
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            tensors += [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            ops.append([flops, float(sum(_nbytes(t) for t in tensors)), 1.0])
            return out

    with _Count():
        step()
    return {"ops": ops, "flops": float(sum(o[0] for o in ops)), "bytes": float(sum(o[1] for o in ops)),
            "kernels": len(ops)}


def model_step_seconds(ops: list[list[float]], profile: Mapping[str, float]) -> float:
    """The roofline model's seconds for the counted ``ops`` of one step on ``profile``: every
    kernel its weight (the share of steps it runs in) times the longest of its arithmetic, its
    traffic and its launch."""
    f, b, launch = profile["flops"], profile["bandwidth"], profile["launch"]
    return float(sum((o[2] if len(o) > 2 else 1.0) * max(o[0] / f, o[1] / b, launch) for o in ops))
