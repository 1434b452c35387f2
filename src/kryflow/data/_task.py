"""Learning tasks: what a model learns from a dataset, and how its ``(x, y)`` pairs are cut.

A dataset's ``task`` (config key ``datasets.<name>.task``) is one of

* ``final_state`` (the default): the store's inputs -> its targets, one pair per sample (Darcy's
  ``a -> u``, heat's ``(a, u0) -> u(T)``);
* ``next_step``: on a time-dependent family (one whose store holds trajectories), the static
  inputs and ``history`` consecutive states -> the next ``horizon`` states. The states of a
  sample are its initial state (an input, e.g. ``u0``) followed by its saved trajectory (an
  output with a ``time`` dimension), ``L = 1 + len(time)`` states in all.

The windows of a trajectory are cut by the loader when it reads them (never stored twice), as
pdearena's datapipes cut theirs: window ``s`` has the inputs ``states[s : s+k]`` and the targets
``states[s+k : s+k+h]``, ``s = 0 .. L-k-h``. Time is flattened into channels on the way in
(``x = [static..., state_0(t_s)..., state_0(t_s+1)...]``, time-major, as SineNet's and pdearena's
models take a history) and the model's ``h·C`` output channels are unflattened into ``h`` states
on the way out (:meth:`TrajectoryLayout.split_output`). Splits stay by sample, i.e. by trajectory:
a trajectory's windows are all train, all validation or all test.

**Pushforward** (Brandstetter, Worrall & Welling, ICLR 2022): with ``pushforward: m > 0`` each
training batch draws ``u`` from ``0..m`` (seeded by the loader's seed and epoch); its targets are
then the ``(u+1)·h`` states after the window, and the loss (:func:`unrolled_loss`) unrolls the
model ``u`` times without gradient before training the last step on the last ``h`` states, so the
model learns from inputs drawn from its own prediction errors. ``u = 0`` is teacher forcing.
Validation always uses teacher-forced one-step windows.

**Residual** (``residual: true``): the network predicts the change of each state from the last
given one, normalised by the train statistics of that change (per step ahead), and the surrogate
adds the last given state back (:class:`~kryflow.training.Surrogate`); inputs, targets, losses and
rollouts stay in states. Off by default, as pdearena's and SineNet's models predict states.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from kryflow._registry import ParameterError

from . import _schema as S
from ._store import split_indices

__all__ = ["TASK_KINDS", "Task", "TrajectoryLayout", "check_task", "task_stats", "trajectory_layout",
           "unrolled_loss"]

#: The learning tasks a dataset may declare (``datasets.<name>.task.kind``).
TASK_KINDS = ("final_state", "next_step")


def _integer(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}", name)
    return int(value)


@dataclass(frozen=True)
class Task:
    """A dataset's learning task (see the module docstring).

    **Arguments:**
    - kind: ``"final_state"`` or ``"next_step"``.
    - history: k, the states a next-step model sees (>= 1).
    - horizon: h, the states it predicts at once (>= 1).
    - pushforward: m, the most unrolled steps without gradient per training batch (0: teacher
      forcing only).
    - residual: the network predicts the change from the last given state.
    """

    kind: str = "final_state"
    history: int = 1
    horizon: int = 1
    pushforward: int = 0
    residual: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping | Task | None) -> Task:
        """The task of a config mapping ``{kind, history, horizon, pushforward}`` (None: final_state).
        Raises :class:`ParameterError` naming the bad key."""
        if isinstance(cfg, Task):
            return cfg
        cfg = dict(cfg or {})
        kind = cfg.pop("kind", "final_state")
        if kind not in TASK_KINDS:
            raise ParameterError(f"unknown learning task {kind!r}; valid: {', '.join(TASK_KINDS)}", "kind")
        unknown = sorted(set(cfg) - {"history", "horizon", "pushforward", "residual"})
        if unknown:
            raise ParameterError(f"unknown key {unknown[0]!r} (a task takes kind, history, horizon, pushforward, "
                                 "residual)", unknown[0])
        if kind == "final_state":
            if cfg:
                raise ParameterError(f"{sorted(cfg)[0]} belongs to a next_step task; final_state maps the inputs "
                                     "to the final state and takes no other key", sorted(cfg)[0])
            return cls()
        residual = cfg.get("residual", False)
        if not isinstance(residual, bool):
            raise ParameterError(f"residual must be true or false, got {residual!r}", "residual")
        return cls("next_step", _integer(cfg.get("history", 1), "history", 1),
                   _integer(cfg.get("horizon", 1), "horizon", 1), _integer(cfg.get("pushforward", 0), "pushforward", 0),
                   residual)

    @property
    def next_step(self) -> bool:
        return self.kind == "next_step"

    def teacher_forced(self) -> Task:
        """The same task without pushforward (what validation and evaluation cut)."""
        return replace(self, pushforward=0)

    def as_dict(self) -> dict:
        return {"kind": self.kind} if not self.next_step else asdict(self)

    def states_needed(self) -> int:
        """States a trajectory must have: history, and the horizon of every unrolled step."""
        return self.history + self.horizon * (1 + self.pushforward)


def check_task(task: Task, states: Mapping[str, Any], num_states: int, family: str) -> None:
    """A next-step task must fit the family's trajectories: the family steps in time (``states``
    not empty) and ``history + horizon·(1 + pushforward)`` is at most the ``num_states`` stored
    states (the initial state and the saved ones). Raises :class:`ParameterError` naming the key."""
    if not task.next_step:
        return
    if not states:
        raise ParameterError(f"a next_step task needs trajectories (a time dimension), but {family} is steady "
                             "here: use kind final_state, or a time-dependent family (heat, navier_stokes, "
                             "advection_diffusion with num_steps > 0)", "kind")
    if task.states_needed() > num_states:
        unroll = f" x (1 + pushforward {task.pushforward})" if task.pushforward else ""
        key = "pushforward" if task.history + task.horizon <= num_states else "horizon"
        raise ParameterError(
            f"history {task.history} + horizon {task.horizon}{unroll} needs {task.states_needed()} states, but a "
            f"trajectory stores {num_states} (the initial state and num_steps / save_every saved ones); lower "
            f"history, horizon or pushforward, or save more states", key)


# ------------------------------------------------------------------ a task on a store
@dataclass(frozen=True)
class TrajectoryLayout:
    """A next-step task on one store: which variables are static, which are states, and how the
    ``(x, y)`` channels are laid out.

    **Arguments:**
    - task: the :class:`Task` (``next_step``).
    - static: input variables that stay fixed along a trajectory (coefficient, mask, forcing).
    - states: state names (``u``; ``vx``, ``vy``), C of them.
    - initial: their initial-state input variables (``u0``; ``vx0``, ``vy0``).
    - trajectories: their trajectory output variables (``trajectory``; ``trajectory_vx``, ...).
    - times: the L state times, 0 first (the store's ``time`` coordinate after it).

    Channels: ``x`` is ``(B, len(static) + k·C, *grid)`` (static first, then the k states
    time-major: all C channels of the oldest state first), ``y`` is ``(B, h·C, *grid)``, likewise.
    """

    task: Task
    static: tuple[str, ...]
    states: tuple[str, ...]
    initial: tuple[str, ...]
    trajectories: tuple[str, ...]
    times: tuple[float, ...]

    @property
    def num_states(self) -> int:
        return len(self.times)

    @property
    def num_channels(self) -> int:
        """C: state channels."""
        return len(self.states)

    @property
    def in_channels(self) -> int:
        return len(self.static) + self.task.history * self.num_channels

    @property
    def out_channels(self) -> int:
        return self.task.horizon * self.num_channels

    @property
    def windows_per_trajectory(self) -> int:
        return self.num_states - self.task.history - self.task.horizon + 1

    @property
    def read_names(self) -> list[str]:
        """The store variables a sample is read from, in :meth:`assemble` order."""
        return list(self.static) + list(self.initial) + list(self.trajectories)

    def input_names(self) -> list[str]:
        """Channel names of ``x``: ``mask``, ``vx[t-1]``, ``vy[t-1]``, ``vx[t]``, ``vy[t]``."""
        k = self.task.history
        return list(self.static) + [f"{s}[t{'-' + str(k - 1 - i) if i < k - 1 else ''}]"
                                    for i in range(k) for s in self.states]

    def target_names(self) -> list[str]:
        """Channel names of ``y``: ``vx[t+1]``, ``vy[t+1]``, ..."""
        return [f"{s}[t+{j + 1}]" for j in range(self.task.horizon) for s in self.states]

    def as_dict(self) -> dict:
        """What a saved model keeps of its task (JSON-ready)."""
        return {**self.task.as_dict(), "static": list(self.static), "states": list(self.states),
                "initial": list(self.initial), "trajectories": list(self.trajectories), "times": list(self.times)}

    @classmethod
    def from_dict(cls, d: Mapping) -> TrajectoryLayout:
        task = Task.from_config({k: d[k] for k in ("kind", "history", "horizon", "pushforward", "residual")
                                 if k in d})
        return cls(task, tuple(d["static"]), tuple(d["states"]), tuple(d["initial"]), tuple(d["trajectories"]),
                   tuple(float(t) for t in d["times"]))

    def with_task(self, task: Task) -> TrajectoryLayout:
        return replace(self, task=task)

    # -- cutting -------------------------------------------------------------------------
    def assemble(self, blocks: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Arrays read in :attr:`read_names` order for n samples -> ``static`` (n, S, *grid) and
        ``states`` (n, L, C, *grid), float32."""
        ns, c = len(self.static), self.num_channels
        n, grid = blocks[0].shape[0], blocks[len(self.static)].shape[1:]
        static = (np.stack(blocks[:ns], axis=1) if ns else np.zeros((n, 0, *grid)))
        initial = np.stack(blocks[ns:ns + c], axis=1)[:, None]  # (n, 1, C, *grid)
        traj = np.stack(blocks[ns + c:], axis=2)  # (n, T, C, *grid)
        states = np.concatenate([initial.astype(np.float32, copy=False), traj.astype(np.float32, copy=False)], 1)
        return (torch.from_numpy(np.ascontiguousarray(static, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(states)))

    def windows(self, num_samples: int) -> torch.Tensor:
        """Every window of ``num_samples`` trajectories: int64 ``(num_samples·W, 2)`` of (sample,
        start), sample-major."""
        w = self.windows_per_trajectory
        sample = torch.arange(num_samples).repeat_interleave(w)
        start = torch.arange(w).repeat(num_samples)
        return torch.stack([sample, start], 1)

    def model_input(self, static: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """``x`` (B, S + k·C, *grid) from ``static`` (B, S, *grid) and ``history`` (B, k, C, *grid)."""
        return torch.cat([static, history.flatten(1, 2)], 1)

    def split_output(self, y: torch.Tensor) -> torch.Tensor:
        """A model output or target ``(B, h·C, *grid)`` as ``(B, h, C, *grid)`` states."""
        return y.reshape(y.shape[0], -1, self.num_channels, *y.shape[2:])

    def cut(self, static: torch.Tensor, states: torch.Tensor, items: torch.Tensor,
            unrolls: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(x, y)`` batch of windows ``items`` (B, 2) of (sample, start): ``x`` from the k
        states at the start, ``y`` the next ``(unrolls + 1)·h`` states (flattened into channels).
        A window too late for ``unrolls`` starts at the latest start that leaves room."""
        k, h = self.task.history, self.task.horizon
        span = k + (unrolls + 1) * h
        sample = items[:, 0].to(states.device)
        start = items[:, 1].clamp(max=self.num_states - span).to(states.device)
        t = start[:, None] + torch.arange(span, device=states.device)  # (B, span)
        seq = states[sample[:, None], t]  # (B, span, C, *grid)
        x = self.model_input(static.index_select(0, sample), seq[:, :k])
        return x, seq[:, k:].flatten(1, 2)

    def last_state_channels(self) -> list[int]:
        """The channels of ``x`` holding the last given state, once per predicted step (``h·C``):
        what a residual model adds its output to."""
        first = len(self.static) + (self.task.history - 1) * self.num_channels
        return list(range(first, first + self.num_channels)) * self.task.horizon

    def advance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The next model input: ``x``'s window moved on by the predicted (or true) ``h`` states ``y``."""
        ns, kc = len(self.static), self.task.history * self.num_channels
        return torch.cat([x[:, :ns], torch.cat([x[:, ns:], y], 1)[:, -kc:]], 1)


def _family_states(attrs: Mapping, path: Path) -> tuple[dict, list[str]]:
    """The store's family's ``states`` (state -> (initial input, trajectory output)) and inputs."""
    from kryflow.pdes import build_family

    name = attrs.get("pde_family")
    if name is None:
        raise S.DatasetError(f"{path} names no PDE family (an imported dataset): a next_step task needs a "
                             "generated trajectory dataset")
    fam = build_family(name, **dict(attrs.get("pde_params") or {}))
    return dict(fam.states), list(attrs[S.ATTR_INPUTS])


def trajectory_layout(path, task: Task | Mapping | None) -> TrajectoryLayout | None:
    """The :class:`TrajectoryLayout` of a next-step ``task`` on the store at ``path``; None for
    ``final_state``. Raises :class:`~kryflow.data.DatasetError` when the store holds no
    trajectories or too few states for the task."""
    task = Task.from_config(task)
    if not task.next_step:
        return None
    path = Path(path)
    attrs = S.read_group_attrs(path)
    states, inputs = _family_states(attrs, path)
    if not states:
        raise S.DatasetError(f"{path} ({attrs.get('pde_family')}) has no time dimension: a next_step task needs "
                             "trajectories")
    initial = tuple(v[0] for v in states.values())
    time = np.asarray(zarr.open_array(path / "time", mode="r")[...], dtype=np.float64)
    try:
        check_task(task, states, 1 + time.size, str(attrs.get("pde_family")))
    except ParameterError as exc:
        raise S.DatasetError(f"{path}: {exc}") from None
    return TrajectoryLayout(task, tuple(n for n in inputs if n not in initial), tuple(states), initial,
                            tuple(v[1] for v in states.values()), (0.0, *(float(t) for t in time)))


def task_stats(path, layout: TrajectoryLayout | None) -> dict[str, np.ndarray]:
    """Train-split normalisation statistics in the task's channel layout.

    ``final_state``: :func:`~kryflow.data.normalization_stats`. ``next_step``: static channels from
    the store's statistics; every state channel from its train-split values over all L states
    (initial and saved, pooled over time and grid: the statistics of what the model sees at any
    step, not those of the initial state alone), repeated for each of the k input and h output
    steps; with ``residual`` the outputs' from the change ``s(t+j) - s(t)`` over every window,
    per step ahead j. A zero std is returned as 1.
    """
    from ._store import normalization_stats
    from ._writer import _Moments

    base = normalization_stats(path)
    if layout is None:
        return base
    path = Path(path)
    attrs = S.read_group_attrs(path)
    inputs = list(attrs[S.ATTR_INPUTS])
    idx = split_indices(path, "train")
    chunk = int(attrs[S.ATTR_CHUNK])
    k, h = layout.task.history, layout.task.horizon
    state_m = [_Moments() for _ in layout.states]
    change_m = [[_Moments() for _ in layout.states] for _ in range(h)]  # [step ahead][state]
    for c, (init, traj) in enumerate(zip(layout.initial, layout.trajectories)):
        a0, at = zarr.open_array(path / init, mode="r"), zarr.open_array(path / traj, mode="r")
        for block in np.unique(idx // chunk):  # one chunk of samples at a time: memory stays bounded
            sel = idx[(idx // chunk) == block]
            seq = np.concatenate([np.asarray(a0.get_orthogonal_selection((sel,)))[:, None],
                                  np.asarray(at.get_orthogonal_selection((sel,)))], 1).astype(np.float64)
            state_m[c].add(seq)
            if layout.task.residual:
                for j in range(1, h + 1):
                    change_m[j - 1][c].add(seq[:, j:] - seq[:, :-j])

    def moments(ms):
        return (np.asarray([m.mean for m in ms], np.float32),
                np.asarray([m.std if m.std > 0 else 1.0 for m in ms], np.float32))

    sm, ss = moments(state_m)
    pos = [inputs.index(n) for n in layout.static]
    out = {"x_mean": np.concatenate([base["x_mean"][pos], np.tile(sm, k)]).astype(np.float32),
           "x_std": np.concatenate([base["x_std"][pos], np.tile(ss, k)]).astype(np.float32),
           "y_mean": np.tile(sm, h), "y_std": np.tile(ss, h)}
    if layout.task.residual:
        per_step = [moments(ms) for ms in change_m]
        out["y_mean"] = np.concatenate([m for m, _ in per_step])
        out["y_std"] = np.concatenate([s for _, s in per_step])
    return out


def unrolled_loss(loss: Callable, layout: TrajectoryLayout | None) -> Callable:
    """``loss(surrogate, x, y)`` for the task: unchanged for ``final_state`` and teacher forcing;
    with pushforward, a batch whose ``y`` holds ``(u+1)·h`` states first unrolls the model ``u``
    times from ``x`` without gradient, then scores the last step against the last ``h`` states."""
    if layout is None or layout.task.pushforward == 0:
        return loss
    width = layout.out_channels

    def pushforward(surrogate, x, y):
        unrolls = y.shape[1] // width - 1
        if unrolls:
            with torch.no_grad():
                for _ in range(unrolls):
                    x = layout.advance(x, surrogate(x))
            y = y[:, -width:]
        return loss(surrogate, x, y)

    return pushforward
