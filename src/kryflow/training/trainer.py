"""The training loop: one loop for every optimizer.

How a step is taken (plain backward, ``create_graph=True``, a closure, forward-only
perturbations, layer hooks) is the optimizer registry's business: the loop hands a
``loss_fn`` to ``StepRunner.step`` and never asks which optimizer it runs.

Budgets are equal across optimizers: ``max_steps`` and/or ``max_seconds`` (training time,
excluding validation) and/or ``max_grad_evals`` (gradient-equivalent evaluations: a forward pass
counts a third, a backward pass two thirds; what a zeroth-order method is matched on).
Checkpoints every ``checkpoint_every`` steps hold everything needed to continue exactly as an
uninterrupted run would on CPU: weights, optimizer and scheduler state, RNG states, the position
in the epoch, the history and the elapsed time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kryflow._registry import Registry
from kryflow.training.surrogate import Surrogate, save_surrogate

log = logging.getLogger(__name__)

__all__ = ["train_cell", "Checkpoint", "TrainResult", "select_device", "loss_function", "LOSSES", "HISTORY_COLUMNS"]

HISTORY_COLUMNS = ["step", "epoch", "seconds", "train_loss", "val_rel_l2", "lr", "step_seconds", "memory_mb",
                   "grad_evals"]


def select_device(kind: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA where there is none is an error."""
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    return torch.device(kind)


# ----------------------------------------------------------------------------------- losses
Loss = Callable[[Surrogate, torch.Tensor, torch.Tensor], torch.Tensor]

#: Training losses by name (``training.loss``): ``loss(surrogate, x, y)`` on a batch of physical
#: inputs ``x`` (B, C_in, *grid) and targets ``y`` (B, C_out, *grid), returning a 0-dim tensor.
LOSSES: Registry[Loss] = Registry("loss")


def _rel_l2(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    b = pred.shape[0]
    diff = (pred - true).reshape(b, -1).norm(dim=1)
    return (diff / true.reshape(b, -1).norm(dim=1).clamp_min(1e-12)).mean()


def _grad_fd(u: torch.Tensor) -> list[torch.Tensor]:
    """Forward differences along every spatial axis (grid units)."""
    return [torch.diff(u, dim=d) for d in range(2, u.ndim)]


def _h1(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    num = ((p - t) ** 2).flatten(1).sum(1)
    den = (t**2).flatten(1).sum(1)
    for gp, gt in zip(_grad_fd(p), _grad_fd(t)):
        num = num + ((gp - gt) ** 2).flatten(1).sum(1)
        den = den + (gt**2).flatten(1).sum(1)
    return torch.sqrt(num / den.clamp_min(1e-12)).mean()


# rel_l2: mean relative L2 of the physical fields; h1: the same with the finite-difference
# gradient added; mse: mean squared error of the network's normalised output (train statistics)
LOSSES.register("rel_l2", lambda s, x, y: _rel_l2(s(x), y))
LOSSES.register("h1", lambda s, x, y: _h1(s(x), y))
LOSSES.register("mse", lambda s, x, y: torch.mean((s.net(s.encode_x(x)) - s.encode_target(x, y)) ** 2))


def loss_function(name: str) -> Loss:
    """The registered loss ``name`` (``rel_l2``, ``mse``, ``h1``): ``loss(surrogate, x, y)``."""
    return LOSSES[name]


class TrainResult(dict):
    """status ('finished'|'diverged'), reason, steps, train_seconds, seconds_per_step, peak_memory_mb."""


def _reset_peak_memory(device: torch.device) -> None:
    """Start a cell's peak-memory count afresh (several trials train one after another in a
    batch job): CUDA's allocator statistics, or on Linux the process's resident high-water mark."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM (proc(5))
    except OSError:
        pass  # elsewhere the peak is the process's since it started


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
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


def _write_history(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in HISTORY_COLUMNS})
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------- set-up
@dataclass
class _Cell:
    """Everything one training cell runs with, built once by :func:`_build`."""

    device: torch.device
    surrogate: Surrogate
    runner: Any  # kryflow.optim.StepRunner
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: Any
    val_loader: Any
    loss: Loss
    max_steps: int
    max_seconds: float | None
    max_grad_evals: float | None
    eval_every: int
    checkpoint_every: int
    divergence_factor: float
    label: str


def _deterministic_cpu() -> None:
    """torch's deterministic algorithms (warn where an op has none). The public switch also sets
    inductor's flag, importing torch._inductor and torch._dynamo (seconds at every job's start);
    kryflow never compiles, so unless inductor is already loaded only the kernel switch is set."""
    import sys

    if "torch._inductor" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def _surrogate(dataset_path, model_name: str, model_kwargs: Mapping, init_from, layout=None) -> Surrogate:
    """A new surrogate with the train split's normalisation in the task's channel layout
    (``layout``: a next-step task's :class:`~kryflow.data.TrajectoryLayout`, None for final_state),
    or (fine-tuning) the trained one in ``init_from`` with the normalisation it was trained with."""
    from kryflow.data import grid_shape, task_stats
    from kryflow.models import build_model

    if init_from is not None:
        from kryflow.training.surrogate import load_surrogate

        surrogate = load_surrogate(init_from)
        got = surrogate.net.config
        if got["name"] != model_name or any(got.get(k) != v for k, v in model_kwargs.items()):
            raise ValueError(f"{init_from} holds model {got}, not {model_name} {dict(model_kwargs)}; fine-tune the "
                             "model that was trained on the source dataset")
        want = layout.task.teacher_forced().as_dict() if layout is not None else {"kind": "final_state"}
        have = {k: v for k, v in (surrogate.task or {"kind": "final_state"}).items()
                if k in ("kind", "history", "horizon", "residual")}
        if have != {k: v for k, v in want.items() if k != "pushforward"}:
            raise ValueError(f"{init_from} was trained for the task {have}, not {want}; fine-tune a model of the "
                             "same task")
        return surrogate
    stats = task_stats(dataset_path, layout)
    dim = len(grid_shape(dataset_path))
    net = build_model(model_name, in_channels=len(stats["x_mean"]), out_channels=len(stats["y_mean"]), dim=dim,
                      **dict(model_kwargs))
    return Surrogate(net, stats, dim, task=layout.as_dict() if layout is not None else None)


def _build(dataset_path, model_name: str, model_kwargs: Mapping, optimizer_name: str, optimizer_kwargs: Mapping,
           seed: int, train_cfg: Mapping, init_from=None, train_source=None) -> _Cell:
    """Seeds, data loaders, the surrogate (:func:`_surrogate`), optimizer, schedule. The dataset's
    learning task (``train_cfg["task"]``, :class:`~kryflow.data.Task`) decides how the loaders cut
    ``(x, y)`` from a sample and, with pushforward, how the loss unrolls; the loop is the same.
    ``train_source``: the training batches come from it (an online stream) instead of the stored
    train split; validation and normalisation stay the store's."""
    from kryflow.data import Task, make_loader, trajectory_layout, unrolled_loss
    from kryflow.optim import build_optimizer, build_scheduler, scale_lr

    device = select_device(train_cfg.get("device", "auto"))
    torch.manual_seed(seed)
    np.random.seed(seed)
    if device.type == "cpu":
        _deterministic_cpu()
    task = Task.from_config(train_cfg.get("task"))
    layout = trajectory_layout(dataset_path, task)
    surrogate = _surrogate(dataset_path, model_name, model_kwargs, init_from, layout).to(device)
    batch_size = int(train_cfg.get("batch_size", 8))
    train_loader = train_source if train_source is not None else make_loader(
        dataset_path, "train", batch_size=batch_size, shuffle=True, seed=seed,
        num_workers=int(train_cfg.get("num_workers", 0)), device=device, task=task)
    # validation: teacher-forced one-step windows (what the loss scores at u = 0)
    val_loader = make_loader(dataset_path, "val", batch_size=max(batch_size, 16), shuffle=False,
                             seed=seed, num_workers=0, device=device, task=task.teacher_forced())
    hp = {k: v for k, v in optimizer_kwargs.items() if k != "name"}
    lr = float(hp.pop("lr"))
    if train_cfg.get("base_batch_size"):
        lr = scale_lr(optimizer_name, lr, batch_size, int(train_cfg["base_batch_size"]))
    runner = build_optimizer(optimizer_name, surrogate.net, lr=lr, **hp)
    max_steps = int(train_cfg.get("max_steps", 200))
    sched_cfg = dict(train_cfg.get("scheduler") or {})
    scheduler = build_scheduler(runner, kind=sched_cfg.get("kind", "constant"), total_steps=max_steps,
                                warmup_steps=int(sched_cfg.get("warmup_steps", 0)))
    return _Cell(device, surrogate, runner, scheduler, train_loader, val_loader,
                 unrolled_loss(loss_function(train_cfg.get("loss", "rel_l2")), layout), max_steps,
                 train_cfg.get("max_seconds"),
                 train_cfg.get("max_grad_evals"),
                 int(train_cfg.get("eval_every", 25)), int(train_cfg.get("checkpoint_every", 50)),
                 float(train_cfg.get("divergence_factor", 1e3)), f"{model_name}/{optimizer_name}/{seed}")


def _fresh_state() -> dict:
    return {"step": 0, "epoch": 0, "batch_in_epoch": 0, "train_seconds": 0.0, "initial_loss": None,
            "history": [], "window": [], "grad_evals": 0.0}


class Checkpoint:
    """``checkpoint.pt`` of a cell: everything needed to continue exactly as an uninterrupted run
    would on CPU (weights, optimizer and scheduler state, RNG states, the position in the epoch,
    the history and the elapsed time), written atomically, and the fingerprint of what shapes the
    trajectory, so a checkpoint of another configuration is never resumed.

    **Arguments:**
        path: the checkpoint file.
        fingerprint: :meth:`fingerprint` of the cell's configuration.
    """

    # budgets and logging cadence may change between runs (a longer max_steps continues)
    FREE_KEYS = ("max_steps", "max_seconds", "max_grad_evals", "eval_every", "checkpoint_every", "device",
                 "num_workers")

    def __init__(self, path: Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint_text = fingerprint

    @classmethod
    def fingerprint(cls, model_name, model_kwargs, optimizer_name, optimizer_kwargs, seed, dataset_digest,
                    train_cfg: Mapping) -> str:
        return json.dumps(
            {"model": [model_name, dict(model_kwargs)], "optimizer": [optimizer_name, dict(optimizer_kwargs)],
             "seed": int(seed), "dataset": dataset_digest,
             "training": {k: v for k, v in dict(train_cfg).items() if k not in cls.FREE_KEYS}},
            sort_keys=True, default=str,
        )

    def resume(self, cell: _Cell) -> dict | None:
        """Load a matching checkpoint into ``cell`` and return its training state; a checkpoint of
        another configuration is moved to ``checkpoint.stale.pt`` and None is returned."""
        if not self.path.exists():
            return None
        blob = torch.load(self.path, map_location=cell.device, weights_only=False)
        if blob.get("fingerprint") != self.fingerprint_text:
            stale = self.path.with_name("checkpoint.stale.pt")
            os.replace(self.path, stale)
            log.warning("%s was written by another configuration of this cell; moved it to %s and "
                        "training starts afresh", self.path, stale.name)
            return None
        cell.surrogate.net.load_state_dict(blob["model"])
        cell.runner.load_state_dict(blob["optimizer"])
        cell.scheduler.load_state_dict(blob["scheduler"])
        if blob.get("source") is not None:  # a data source that keeps its own position (an online stream)
            cell.train_loader.load_state_dict(blob["source"])
        torch.set_rng_state(blob["torch_rng"])
        np.random.set_state(blob["numpy_rng"])
        if cell.device.type == "cuda" and blob.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(blob["cuda_rng"], cell.device)
        log.info("resumed from %s at step %d", self.path, blob["state"]["step"])
        return blob["state"]

    def save(self, cell: _Cell, state: dict) -> None:
        _atomic_save(
            {
                "model": cell.surrogate.net.state_dict(),
                "optimizer": cell.runner.state_dict(),
                "scheduler": cell.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(),
                "cuda_rng": torch.cuda.get_rng_state(cell.device) if cell.device.type == "cuda" else None,
                "state": state,
                "source": cell.train_loader.state_dict() if hasattr(cell.train_loader, "state_dict") else None,
                "fingerprint": self.fingerprint_text,
            },
            self.path,
        )


# ------------------------------------------------------------------------------------ loop
def _step(cell: _Cell, state: dict, b_idx: int, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimisation step on a batch; returns its loss and advances the state."""
    x, y = x.to(cell.device, non_blocking=True), y.to(cell.device, non_blocking=True)
    t0 = time.perf_counter()
    loss = float(cell.runner.step(lambda: cell.loss(cell.surrogate, x, y)))
    if cell.device.type == "cuda":
        torch.cuda.synchronize(cell.device)
    dt = time.perf_counter() - t0
    cell.scheduler.step()
    state["step"] += 1
    state["batch_in_epoch"] = b_idx + 1
    state["train_seconds"] += dt
    state["grad_evals"] = state.get("grad_evals", 0.0) + cell.runner.last_grad_evals
    state["window"].append(loss)
    if state["initial_loss"] is None and math.isfinite(loss):
        state["initial_loss"] = loss
    return loss


def _record(cell: _Cell, state: dict, diverged: bool, tracker) -> None:
    """A history row (validation error, mean training loss since the last row, cost)."""
    step, window = state["step"], state["window"]
    row = {
        "step": step,
        "epoch": state["epoch"],
        "seconds": round(state["train_seconds"], 6),
        "train_loss": float(np.mean(window)) if window else float("nan"),
        "val_rel_l2": float("nan") if diverged else validate(cell.surrogate, cell.val_loader, cell.device),
        "lr": cell.runner.optimizer.param_groups[0]["lr"],
        "step_seconds": state["train_seconds"] / step,
        "memory_mb": _peak_memory_mb(cell.device),
        "grad_evals": state.get("grad_evals", 0.0),
    }
    state["window"] = []
    state["history"].append(row)
    if tracker is not None:
        tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step=step)


def _batches(loader, skip: int):
    """``(index, batch)`` of an epoch from batch ``skip`` on (a resumed epoch): a stored split
    replays its epoch (same order) and skips what was consumed; a source that restored its own
    position from the checkpoint (an online stream) goes on from there."""
    if hasattr(loader, "load_state_dict"):
        return enumerate(loader, start=skip)
    return ((b, batch) for b, batch in enumerate(loader) if b >= skip)


def _loop(cell: _Cell, state: dict, checkpoint: Checkpoint, tracker, progress: bool,
          dataset_path) -> tuple[str, str | None]:
    """Steps until the budget (steps or training seconds) is spent or the loss diverges."""
    from tqdm.auto import tqdm

    bar = tqdm(total=cell.max_steps, initial=state["step"], desc=cell.label, disable=not progress, mininterval=2.0)
    cell.surrogate.train()
    status, reason = "finished", None
    done = state["step"] >= cell.max_steps
    while not done:
        if hasattr(cell.train_loader, "set_epoch"):
            cell.train_loader.set_epoch(state["epoch"])
        for b_idx, (x, y) in _batches(cell.train_loader, state["batch_in_epoch"]):
            loss = _step(cell, state, b_idx, x, y)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3g}")
            initial = state["initial_loss"]
            diverged = not math.isfinite(loss) or (initial is not None
                                                   and loss > cell.divergence_factor * max(initial, 1e-12))
            step = state["step"]
            last = (step >= cell.max_steps
                    or (cell.max_seconds is not None and state["train_seconds"] >= cell.max_seconds)
                    or (cell.max_grad_evals is not None and state["grad_evals"] >= cell.max_grad_evals))
            if diverged or step % cell.eval_every == 0 or last:
                _record(cell, state, diverged, tracker)
            if diverged:
                status = "diverged"
                reason = (f"loss {loss:.3g} at step {step} is not finite or exceeds "
                          f"{cell.divergence_factor:g}x the initial loss {initial}")
            elif step % cell.checkpoint_every == 0:
                checkpoint.save(cell, state)
                if tracker is not None:  # what the checkpoint resumes from is in MLflow too
                    tracker.flush()
            if diverged or last:
                done = True
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
        if len(cell.train_loader) == 0:
            raise RuntimeError(f"{dataset_path}: the train split yields no batch (batch_size {cell.train_loader.batch_size})")
    bar.close()
    return status, reason


def _finish(cell: _Cell, state: dict, status: str, reason: str | None, out: Path, dataset_path) -> TrainResult:
    """history.csv, model.pt (the surrogate on CPU) and train.json."""
    from kryflow.data import trained_on_of_store

    _write_history(state["history"], out / "history.csv")
    # trained_on: family, grid and channels, so a surrogate start checks the model against a dataset
    save_surrogate(out / "model.pt", cell.surrogate.to("cpu"),
                   extra={"status": status, "steps": state["step"], "dataset": str(dataset_path),
                          "trained_on": trained_on_of_store(dataset_path).as_dict()})
    cell.surrogate.to(cell.device)
    result = TrainResult(
        status=status,
        reason=reason,
        steps=state["step"],
        train_seconds=state["train_seconds"],
        seconds_per_step=state["train_seconds"] / max(state["step"], 1),
        peak_memory_mb=_peak_memory_mb(cell.device),
        device=str(cell.device),
        grad_evals=state.get("grad_evals", 0.0),
        final_val_rel_l2=next((r["val_rel_l2"] for r in reversed(state["history"])
                               if not math.isnan(r["val_rel_l2"])), float("nan")),
    )
    with open(out / "train.json", "w") as fh:
        json.dump(result, fh, indent=2, sort_keys=True, default=float)
    return result


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
    init_from: str | Path | None = None,
    train_source=None,
) -> TrainResult:
    """Train one grid cell; write checkpoint.pt, model.pt, history.csv and train.json to out_dir.

    A checkpoint of the same configuration already in ``out_dir`` is resumed from (after a kill
    the rerun continues); one of another configuration is set aside and training starts afresh.
    ``init_from``: a trained ``model.pt`` to fine-tune (its weights and normalisation) instead of a
    freshly initialised model. ``train_source``: where the training batches come from instead of
    the stored train split (:class:`kryflow.generation.OnlineStream`: the loader's interface, and
    ``state_dict``/``load_state_dict`` kept in the checkpoint so that a resume goes on where it was).
    """
    from kryflow.data import dataset_digest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cell = _build(dataset_path, model_name, model_kwargs, optimizer_name, optimizer_kwargs, seed, train_cfg, init_from,
                  train_source)
    _reset_peak_memory(cell.device)
    shaping = dict(train_cfg)
    if init_from is not None:  # a fine-tuning run's trajectory starts from that model
        shaping["init_from"] = hashlib.sha256(Path(init_from).read_bytes()).hexdigest()
    fingerprint = Checkpoint.fingerprint(model_name, model_kwargs, optimizer_name, optimizer_kwargs, seed,
                                         dataset_digest(dataset_path), shaping)
    checkpoint = Checkpoint(out / "checkpoint.pt", fingerprint)
    state = checkpoint.resume(cell) or _fresh_state()
    status, reason = _loop(cell, state, checkpoint, tracker, progress, dataset_path)
    checkpoint.save(cell, state)
    return _finish(cell, state, status, reason, out, dataset_path)
