"""The training loop: one loop for every optimizer.

How a step is taken (plain backward, ``create_graph=True``, a closure, forward-only
perturbations, layer hooks) is the optimizer registry's business: the loop hands a
``loss_fn`` to ``StepRunner.step`` and never asks which optimizer it runs.

Budgets are equal across optimizers: ``max_steps`` and/or ``max_seconds`` (training time,
excluding validation). Checkpoints every ``checkpoint_every`` steps hold everything needed to
continue exactly as an uninterrupted run would on CPU: weights, optimizer and scheduler state,
RNG states, the position in the epoch, the history and the elapsed time.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kryflow.training.surrogate import Surrogate, save_surrogate

log = logging.getLogger(__name__)

__all__ = ["train_cell", "TrainResult", "select_device", "loss_function", "HISTORY_COLUMNS"]

HISTORY_COLUMNS = ["step", "epoch", "seconds", "train_loss", "val_rel_l2", "lr", "step_seconds", "memory_mb"]


def select_device(kind: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA where there is none is an error."""
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    return torch.device(kind)


def _rel_l2(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    b = pred.shape[0]
    diff = (pred - true).reshape(b, -1).norm(dim=1)
    return (diff / true.reshape(b, -1).norm(dim=1).clamp_min(1e-12)).mean()


def _grad_fd(u: torch.Tensor) -> list[torch.Tensor]:
    """Forward differences along every spatial axis (grid units)."""
    return [torch.diff(u, dim=d) for d in range(2, u.ndim)]


def loss_function(name: str):
    """Loss on physical fields. rel_l2: mean relative L2; mse: on normalised fields is the
    trainer's choice (see below); h1: relative L2 of the field plus its finite-difference gradient."""
    if name == "rel_l2":
        return _rel_l2
    if name == "mse":
        return lambda p, t: torch.mean((p - t) ** 2) / torch.mean(t**2).clamp_min(1e-12)
    if name == "h1":
        def h1(p, t):
            num = ((p - t) ** 2).flatten(1).sum(1)
            den = (t**2).flatten(1).sum(1)
            for gp, gt in zip(_grad_fd(p), _grad_fd(t)):
                num = num + ((gp - gt) ** 2).flatten(1).sum(1)
                den = den + (gt**2).flatten(1).sum(1)
            return torch.sqrt(num / den.clamp_min(1e-12)).mean()
        return h1
    raise ValueError(f"unknown loss '{name}'; valid: rel_l2, mse, h1")


class TrainResult(dict):
    """status ('finished'|'diverged'), reason, steps, train_seconds, seconds_per_step, peak_memory_mb."""


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


@torch.no_grad()
def validate(surrogate: Surrogate, loader, device) -> float:
    """Mean relative L2 over a split, on physical fields."""
    surrogate.eval()
    total, count = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        pred = surrogate(x)
        b = x.shape[0]
        err = (pred - y).reshape(b, -1).norm(dim=1) / y.reshape(b, -1).norm(dim=1).clamp_min(1e-12)
        total += float(err.sum())
        count += b
    surrogate.train()
    return total / max(count, 1)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _dataset_digest(path) -> str:
    from kryflow.data import dataset_digest

    return dataset_digest(path)


def _write_history(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in HISTORY_COLUMNS})
    os.replace(tmp, path)


def train_cell(
    dataset_path: str | Path,
    out_dir: str | Path,
    *,
    model_name: str,
    model_kwargs: Mapping[str, Any],
    optimizer_name: str,
    optimizer_kwargs: Mapping[str, Any],
    seed: int,
    train_cfg: Mapping[str, Any],
    tracker=None,
    progress: bool = True,
) -> TrainResult:
    """Train one grid cell; write checkpoint.pt, model.pt, history.csv and train.json to out_dir.

    A checkpoint already in ``out_dir`` is resumed from (after a kill the rerun continues).
    """
    from tqdm.auto import tqdm

    from kryflow.data import grid_shape, make_loader, normalization_stats, open_dataset
    from kryflow.models import build_model
    from kryflow.optim import build_optimizer, build_scheduler, scale_lr

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = select_device(train_cfg.get("device", "auto"))
    torch.manual_seed(seed)
    np.random.seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    ds = open_dataset(dataset_path)
    shape = tuple(grid_shape(dataset_path))
    dim = len(shape)
    stats = normalization_stats(dataset_path)
    c_in, c_out = len(stats["x_mean"]), len(stats["y_mean"])
    ds.close()

    batch_size = int(train_cfg.get("batch_size", 8))
    workers = int(train_cfg.get("num_workers", 0))
    train_loader = make_loader(dataset_path, "train", batch_size=batch_size, shuffle=True, seed=seed,
                               num_workers=workers, device=device)
    val_loader = make_loader(dataset_path, "val", batch_size=max(batch_size, 16), shuffle=False,
                             seed=seed, num_workers=0, device=device)

    net = build_model(model_name, in_channels=c_in, out_channels=c_out, dim=dim, **dict(model_kwargs))
    surrogate = Surrogate(net, stats, dim).to(device)
    hp = {k: v for k, v in optimizer_kwargs.items() if k != "name"}
    lr = float(hp.pop("lr"))
    if train_cfg.get("base_batch_size"):
        lr = scale_lr(optimizer_name, lr, batch_size, int(train_cfg["base_batch_size"]))
    runner = build_optimizer(optimizer_name, surrogate.net, lr=lr, **hp)
    max_steps = int(train_cfg.get("max_steps", 200))
    sched_cfg = dict(train_cfg.get("scheduler") or {})
    scheduler = build_scheduler(runner, kind=sched_cfg.get("kind", "constant"), total_steps=max_steps,
                                warmup_steps=int(sched_cfg.get("warmup_steps", 0)))
    loss_of = loss_function(train_cfg.get("loss", "rel_l2"))
    use_normalised_mse = train_cfg.get("loss") == "mse"

    max_seconds = train_cfg.get("max_seconds")
    eval_every = int(train_cfg.get("eval_every", 25))
    ckpt_every = int(train_cfg.get("checkpoint_every", 50))
    div_factor = float(train_cfg.get("divergence_factor", 1e3))

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "train_seconds": 0.0, "initial_loss": None,
             "history": [], "window": []}
    ckpt_path = out / "checkpoint.pt"
    # What a checkpoint must share with this run to be resumed: everything that changes the
    # trajectory. Budgets and logging cadence may change (a longer max_steps continues).
    fingerprint = json.dumps(
        {"model": [model_name, dict(model_kwargs)], "optimizer": [optimizer_name, dict(optimizer_kwargs)],
         "seed": int(seed), "dataset": _dataset_digest(dataset_path),
         "training": {k: v for k, v in dict(train_cfg).items()
                      if k not in ("max_steps", "max_seconds", "eval_every", "checkpoint_every", "device",
                                   "num_workers")}},
        sort_keys=True, default=str,
    )
    if ckpt_path.exists():
        blob = torch.load(ckpt_path, map_location=device, weights_only=False)
        if blob.get("fingerprint") != fingerprint:
            stale = ckpt_path.with_name("checkpoint.stale.pt")
            os.replace(ckpt_path, stale)
            log.warning("%s was written by another configuration of this cell; moved it to %s and "
                        "training starts afresh", ckpt_path, stale.name)
            blob = None
    else:
        blob = None
    if blob is not None:
        surrogate.net.load_state_dict(blob["model"])
        runner.load_state_dict(blob["optimizer"])
        if scheduler is not None and blob.get("scheduler") is not None:
            scheduler.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["torch_rng"])
        np.random.set_state(blob["numpy_rng"])
        if device.type == "cuda" and blob.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(blob["cuda_rng"], device)
        state = blob["state"]
        log.info("resumed from %s at step %d", ckpt_path, state["step"])

    def save_checkpoint() -> None:
        _atomic_save(
            {
                "model": surrogate.net.state_dict(),
                "optimizer": runner.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "state": state,
                "fingerprint": fingerprint,
            },
            ckpt_path,
        )

    status, reason = "finished", None
    bar = tqdm(total=max_steps, initial=state["step"], desc=f"{model_name}/{optimizer_name}/{seed}",
               disable=not progress, mininterval=2.0)
    surrogate.train()
    done = state["step"] >= max_steps
    while not done:
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(state["epoch"])
        for b_idx, (x, y) in enumerate(train_loader):
            if b_idx < state["batch_in_epoch"]:
                continue  # resuming inside an epoch: same order, skip what was consumed
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if use_normalised_mse:
                xn, yn = surrogate.encode_x(x), surrogate.encode_y(y)
                loss_fn = lambda: torch.mean((surrogate.net(xn) - yn) ** 2)  # noqa: E731
            else:
                loss_fn = lambda: loss_of(surrogate(x), y)  # noqa: E731
            t0 = time.perf_counter()
            loss = float(runner.step(loss_fn))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            if scheduler is not None:
                scheduler.step()
            state["step"] += 1
            state["batch_in_epoch"] = b_idx + 1
            state["train_seconds"] += dt
            state["window"].append(loss)
            if state["initial_loss"] is None and math.isfinite(loss):
                state["initial_loss"] = loss
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3g}", step_s=f"{dt:.3f}")

            diverged = not math.isfinite(loss) or (
                state["initial_loss"] is not None and loss > div_factor * max(state["initial_loss"], 1e-12)
            )
            step = state["step"]
            last = step >= max_steps or (max_seconds is not None and state["train_seconds"] >= max_seconds)
            if diverged or step % eval_every == 0 or last:
                window = state["window"]
                row = {
                    "step": step,
                    "epoch": state["epoch"],
                    "seconds": round(state["train_seconds"], 6),
                    "train_loss": float(np.mean(window)) if window else float("nan"),
                    "val_rel_l2": float("nan") if diverged else validate(surrogate, val_loader, device),
                    "lr": runner.optimizer.param_groups[0]["lr"],
                    "step_seconds": state["train_seconds"] / step,
                    "memory_mb": _peak_memory_mb(device),
                }
                state["window"] = []
                state["history"].append(row)
                if tracker is not None:
                    tracker.log_metrics({k: v for k, v in row.items() if k not in ("step",)}, step=step)
            if diverged:
                status = "diverged"
                reason = (f"loss {loss:.3g} at step {step} is not finite or exceeds "
                          f"{div_factor:g}x the initial loss {state['initial_loss']}")
                done = True
                break
            if step % ckpt_every == 0:
                save_checkpoint()
            if last:
                done = True
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
        if len(train_loader) == 0:
            raise RuntimeError(f"{dataset_path}: the train split yields no batch (batch_size {batch_size})")
    bar.close()
    save_checkpoint()

    _write_history(state["history"], out / "history.csv")
    save_surrogate(out / "model.pt", surrogate.to("cpu"),
                   extra={"status": status, "steps": state["step"], "dataset": str(dataset_path)})
    surrogate.to(device)
    result = TrainResult(
        status=status,
        reason=reason,
        steps=state["step"],
        train_seconds=state["train_seconds"],
        seconds_per_step=state["train_seconds"] / max(state["step"], 1),
        peak_memory_mb=_peak_memory_mb(device),
        device=str(device),
        final_val_rel_l2=next((r["val_rel_l2"] for r in reversed(state["history"])
                               if not math.isnan(r["val_rel_l2"])), float("nan")),
    )
    with open(out / "train.json", "w") as fh:
        json.dump(result, fh, indent=2, sort_keys=True, default=float)
    return result
