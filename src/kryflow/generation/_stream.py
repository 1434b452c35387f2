"""Online training data: K generator processes draw and solve fresh samples while a trainer
learns from them (``training.data: online``; after Meyer et al., "Training Deep Surrogate Models
with Large Scale Online Learning", ICML 2023, and their Melissa framework).

The stream is a data source, not a second trainer: :class:`OnlineStream` iterates batches ``(x, y)``
cut exactly as the loader cuts the stored train split (the dataset's task decides the cut), and the
trainer's one loop takes them. Validation, test and the normalisation statistics stay the stored
store's (its train split): they never drift with the stream.

Who makes what (the server decides the inputs, as in Melissa): the indices from ``first_index``
(default: the store's ``num_samples``, so no stored split is drawn again) on are cut into blocks of
``block``; generator ``k`` of ``K`` solves blocks ``k, k+K, k+2K, ...`` with its own
:class:`~kryflow.generation.SampleGenerator`, whose sequence solver keeps its state (warm starts,
solution windows, recycle spaces) through its blocks. A streamed sample is therefore the sample
offline generation makes for that index (inputs value for value, outputs within the solver's
tolerance). A generator hands each sample into its own bounded queue and waits while the queue is
full (back-pressure); the trainer takes samples into its buffer (:mod:`._buffer`) where the buffer
has room, and before the first step until it holds ``watermark`` samples.

Two modes:

* ``free`` (default): the trainer takes what has arrived, generators running at their own pace;
  the stream records what it did (samples made, taken, rejected, used, reused, the use-count
  histogram, generator throughput and back-pressure, the trainer's wait, the buffer's fill).
* ``lockstep``: the trainer takes samples in index order, exactly as many before each step as the
  buffer's policy takes when everything has arrived, waiting for them. Same config and seed, same
  batches (and on CPU the same weights), at the price of the trainer waiting for the generators.

Faults: a solve that misses its tolerance is never handed to the trainer (the sample is counted
as rejected and its index recorded); a generator process that dies is started again at the first
index it had not handed over, its indices redone (at most ``restarts`` times); if every generator
is gone, or none hands over anything for ``timeout`` seconds, the stream raises
:class:`OnlineStreamError` naming the cause, never hangs.

Resume: :meth:`OnlineStream.state_dict` holds the buffer (its items, their use counts, its random
state), each generator's position and the counters; a trainer checkpoint keeps it, and a resumed
stream starts its generators where they were. What a resume changes: a generator's solver state
starts afresh, so samples solved after it match an uninterrupted run's within the tolerance (bit for
bit with a direct solver); samples that were in the queues at the kill are made again; in free mode
which samples arrive when differs anyway (:attr:`OnlineStream.resume_note`).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue as queue_module
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kryflow._registry import Param, ParameterError, check_params

from ._buffer import BUFFER_POLICIES, BufferItem, SampleBuffer

log = logging.getLogger(__name__)

__all__ = ["DATA_SOURCES", "ONLINE_MODES", "ONLINE_OPTIONS", "OnlineStream", "OnlineStreamError", "generator_main",
           "online_options"]

#: ``training.data``: where a cell's training samples come from.
DATA_SOURCES = ("stored", "online")
#: ``training.online.mode``.
ONLINE_MODES = ("free", "lockstep")

#: ``training.online`` keys, their defaults and what they accept (:func:`online_options` checks them).
ONLINE_OPTIONS: dict[str, Param] = {
    "generators": Param.integer(1, 1, doc="generator processes K, each with its own sequence solver"),
    "block": Param.integer(16, 1, doc="indices a generator solves as one block (its solver state carries on)"),
    "first_index": Param.integer(None, 0, optional=True,
                                 doc="first streamed index (null: the store's num_samples, after every stored split)"),
    "buffer": Param.integer(256, 1, doc="samples the trainer holds (at least a batch)"),
    "watermark": Param.integer(None, 1, optional=True,
                               doc="samples in the buffer before the first step (null: half the buffer)"),
    "policy": Param.choice("reservoir", *BUFFER_POLICIES, doc="buffer policy (kryflow.generation.BUFFER_POLICIES)"),
    "max_uses": Param.integer(1, 1, doc="firo: a sample leaves the buffer after this many uses"),
    "queue": Param.integer(8, 1, doc="samples a generator may hold finished ahead of the trainer"),
    "mode": Param.choice("free", *ONLINE_MODES, doc="free (own pace, recorded) or lockstep (reproducible)"),
    "timeout": Param.number(300.0, 0.0, low_open=True, doc="seconds without a sample before the cell fails"),
    "restarts": Param.integer(3, 0, doc="restarts of a generator that died before the cell fails"),
    "threads": Param.integer(1, 1, doc="BLAS and compiled-kernel threads of each generator"),
}


class OnlineStreamError(RuntimeError):
    """The stream cannot go on: every generator died, none produced within the timeout, or every
    solve misses its tolerance. The message names the cause."""


def online_options(online: Mapping[str, Any] | None, *, batch_size: int, num_samples: int) -> dict[str, Any]:
    """The ``training.online`` section with defaults, checked.

    **Arguments:**
        online: the section as configured (None: all defaults).
        batch_size: the cell's ``training.batch_size``.
        num_samples: the stored dataset's ``num_samples`` (its indices 0 .. num_samples-1).

    **Returns:** every option of :data:`ONLINE_OPTIONS`, ``first_index`` and ``watermark``
    resolved. Raises :class:`ParameterError` naming the option: a buffer smaller than a batch, a
    watermark above the buffer, ``max_uses`` with another policy than ``firo``, a first index inside
    the stored splits (or any out-of-range value).
    """
    given = dict(online or {})
    opts = check_params(ONLINE_OPTIONS, given, "training.online", "key")
    if opts["buffer"] < batch_size:
        raise ParameterError(f"buffer {opts['buffer']} is smaller than a batch ({batch_size} samples): a batch "
                             "draws distinct samples from the buffer; raise buffer or lower batch_size", "buffer")
    if opts["watermark"] is None:
        opts["watermark"] = max(1, opts["buffer"] // 2)
    if opts["watermark"] > opts["buffer"]:
        raise ParameterError(f"watermark {opts['watermark']} is above the buffer ({opts['buffer']} samples): "
                             "training would never start; lower watermark or raise buffer", "watermark")
    if "max_uses" in given and opts["policy"] != "firo":
        raise ParameterError(f"max_uses bounds the uses of a sample under policy firo; policy is "
                             f"{opts['policy']!r} (reservoir reuses as often as the generators fall behind, fifo "
                             "uses each sample once)", "max_uses")
    if opts["first_index"] is None:
        opts["first_index"] = int(num_samples)
    if opts["first_index"] < num_samples:
        raise ParameterError(f"first_index {opts['first_index']} overlaps the stored dataset (indices 0 .. "
                             f"{num_samples - 1} hold its train, validation and test samples); stream from "
                             f"{num_samples} on (null: the default)", "first_index")
    return opts


# ------------------------------------------------------------------- generator process
def _blocks(k: int, start: int, first: int, block: int, generators: int) -> Iterator[tuple[int, int]]:
    """Generator ``k``'s index blocks from index ``start`` on: ``[a, b)`` of blocks k, k+K, ..."""
    b = (start - first) // block
    if b % generators != k:
        raise ValueError(f"index {start} is not in a block of generator {k}")
    a = start
    while True:
        yield a, first + (b + 1) * block
        b += generators
        a = first + b * block


def _put(q: Any, msg: tuple, parent: int) -> float:
    """Hand ``msg`` over, waiting while the queue is full (back-pressure); returns the seconds
    waited. A generator whose trainer is gone (another parent) exits instead of waiting forever."""
    t0 = time.perf_counter()
    while True:
        try:
            q.put(msg, timeout=1.0)
            return time.perf_counter() - t0
        except queue_module.Full:
            if os.getppid() != parent:
                os._exit(0)


def generator_main(k: int, spec: Mapping[str, Any], start: int, q: Any, parent: int) -> None:
    """Generator process ``k``: draw and solve its blocks from index ``start`` on, forever, and
    hand every sample over (``("sample", k, index, arrays, busy_s, waited_s)``, or
    ``("rejected", k, index, rel_residual)`` for one whose solve missed the tolerance). The trainer
    ends it. An exception is handed over as ``("error", k, text)`` before the process exits."""
    try:
        from ._sampler import SampleGenerator

        gen = SampleGenerator(spec["family"], spec["params"], spec["seed"], spec["solver"],
                              on_nonconvergence="flag")
        warm = gen.warm_up()
        waited = _put(q, ("ready", k, os.getpid(), warm), parent)
        names = spec["names"]
        for a, b in _blocks(k, start, spec["first_index"], spec["block"], spec["generators"]):
            t0 = time.perf_counter()
            for solved in gen.solve_all(gen.draw(a, b)):
                busy = time.perf_counter() - t0
                if solved.converged:
                    fields = {**solved.inputs, **solved.outputs}
                    arrays = {n: np.asarray(fields[n], dtype=np.float32) for n in names}
                    msg = ("sample", k, solved.index, arrays, busy, waited)
                else:
                    msg = ("rejected", k, solved.index, solved.max_rel_residual, busy, waited)
                waited = _put(q, msg, parent)
                t0 = time.perf_counter()
    except BaseException:  # noqa: BLE001 - whatever it was, the trainer is told before the process exits
        try:
            q.put(("error", k, traceback.format_exc()), timeout=5.0)
            q.close()
            q.join_thread()
        finally:
            os._exit(1)


# ------------------------------------------------------------------------- the stream
class _Generator:
    """The trainer's record of one generator process."""

    def __init__(self, k: int, start: int):
        self.k = k
        self.process: Any = None
        self.queue: Any = None
        self.pending: collections.deque = collections.deque()  # received, not yet taken
        self.next_taken = start  # the first index not yet taken into the buffer (a resume starts here)
        self.next_received = start  # the first index not yet received (a restart starts here)
        self.restarts = 0
        self.failed: str | None = None  # why it is gone for good
        self.last_error: str | None = None
        self.samples = self.rejected = 0
        self.busy = self.waited = self.warm_up = 0.0


class OnlineStream:
    """Batches of fresh samples for a trainer: a data source with the stored loader's interface
    (iterable of ``(x, y)`` float32 CPU tensors, ``batch_size``, ``len``), plus ``state_dict`` /
    ``load_state_dict`` for the trainer's checkpoint. Use as a context manager (the generator
    processes stop at its end, or at :meth:`close`).

    **Arguments:**
        dataset_path: the cell's stored dataset: the stream draws the same family, parameters, seed
            and solver (its provenance attributes), at indices after it; it keeps the validation and
            test splits and the normalisation statistics.
        training: the cell's ``training`` section: ``batch_size``, ``task``, ``online``
            (:data:`ONLINE_OPTIONS`).
        seed: the cell's seed (the buffer's draws, pushforward unrolls).
        worker: the generator process's entry point (a module-level function with the signature
            of :func:`generator_main`; tests substitute one that fails).

    **Attributes:** ``options`` (the checked ``training.online``), ``resume_note`` (None, or what the
    resume from a checkpoint changed), ``last_indices`` (the sample indices of the last batch).
    """

    def __init__(self, dataset_path: str | os.PathLike, training: Mapping[str, Any], seed: int, *,
                 worker: Callable | None = None):
        from kryflow.data import DatasetError, Task, trajectory_layout
        from kryflow.data._schema import ATTR_INPUTS, ATTR_NUM, ATTR_TARGETS, read_group_attrs

        path = Path(dataset_path)
        attrs = read_group_attrs(path)
        if not attrs.get("pde_family"):
            raise DatasetError(f"{path} names no PDE family (an imported dataset): online training needs a "
                               "generated dataset, whose family, parameters and seed the stream draws from")
        self.batch_size = int(training.get("batch_size", 8))
        self.num_stored = int(attrs[ATTR_NUM])
        self.options = online_options(training.get("online"), batch_size=self.batch_size,
                                      num_samples=self.num_stored)
        self.task = Task.from_config(training.get("task"))
        self.layout = trajectory_layout(path, self.task)
        self.per_sample = 1 if self.layout is None else self.layout.windows_per_trajectory
        if self.layout is None:
            self.inputs, self.targets = list(attrs[ATTR_INPUTS]), list(attrs[ATTR_TARGETS])
            names = self.inputs + self.targets
        else:
            names = self.layout.read_names
        solver = {k: v for k, v in dict(attrs.get("solver") or {}).items() if k not in ("matrix_kind", "order")}
        solver["blas_threads"] = self.options["threads"]
        o = self.options
        self.spec = {"family": attrs["pde_family"], "params": dict(attrs.get("pde_params") or {}),
                     "seed": int(attrs.get("seed", 0)), "solver": solver, "names": list(names),
                     "first_index": o["first_index"], "block": o["block"], "generators": o["generators"]}
        self.seed = int(seed)
        self.worker = worker or generator_main
        self.buffer = SampleBuffer(o["policy"], o["buffer"] * self.per_sample, self.batch_size, seed, o["max_uses"])
        self._gens = [_Generator(k, o["first_index"] + k * o["block"]) for k in range(o["generators"])]
        self._cursor = o["first_index"]  # lockstep: the next index to take
        self._steps = 0
        self._started_buffer = False  # the watermark has been reached
        self._fill: list[int] = []  # buffer fill (samples) at each step
        self._wait: list[float] = []  # seconds the trainer waited before each step
        self._rejected_indices: list[int] = []
        self._last_progress = self._waiting_since = time.perf_counter()
        self._unrolls = np.random.default_rng([self.seed, 26, 1])
        self._started_at: float | None = None
        self._wall = 0.0  # seconds the generators ran, over every run of this stream (resumes too)
        self.resume_note: str | None = None
        self.last_indices: list[int] = []
        self._ctx: Any = None

    # -- the loader's interface ----------------------------------------------------------
    def __len__(self) -> int:
        return sys.maxsize  # an endless stream: the trainer's budget ends it

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        self.start()
        while True:
            yield self._next_batch()

    def __enter__(self) -> OnlineStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- processes -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the generator processes (once; a resumed stream starts them where they were)."""
        if self._ctx is not None:
            return
        import multiprocessing as mp

        self._ctx = mp.get_context("spawn")  # CUDA and torch's thread pools do not survive a fork
        self._started_at = time.perf_counter()
        self._last_progress = self._started_at
        for g in self._gens:
            g.next_received = g.next_taken
            g.pending.clear()
            self._spawn(g)

    def _spawn(self, g: _Generator) -> None:
        g.queue = self._ctx.Queue(maxsize=self.options["queue"])
        g.process = self._ctx.Process(target=self.worker, args=(g.k, self.spec, g.next_received, g.queue,
                                                                 os.getpid()),
                                      name=f"kryflow-generator-{g.k}", daemon=True)
        g.process.start()

    def close(self) -> None:
        """Stop the generator processes (what they made and the trainer did not take is dropped)."""
        if self._ctx is None:
            return
        for g in self._gens:
            if g.process is not None and g.process.is_alive():
                g.process.terminate()
        for g in self._gens:
            if g.process is not None:
                g.process.join(timeout=10)
                if g.process.is_alive():
                    g.process.kill()
                    g.process.join(timeout=10)
            if g.queue is not None:
                g.queue.cancel_join_thread()
                g.queue.close()
            g.process = g.queue = None
        self._wall += time.perf_counter() - (self._started_at or time.perf_counter())
        self._ctx = None

    # -- receiving -----------------------------------------------------------------------
    def _successor(self, index: int) -> int:
        """The index a generator solves after ``index`` (the next block of its own at a block's end)."""
        o = self.options
        first, block, K = o["first_index"], o["block"], o["generators"]
        nxt = index + 1
        if (nxt - first) % block == 0:
            nxt += (K - 1) * block
        return nxt

    def _receive(self, g: _Generator, block: bool) -> tuple | None:
        """The next sample message of generator ``g`` (None: none yet, when not blocking)."""
        while True:
            if g.pending:
                return g.pending.popleft()
            if g.failed is not None:
                if block:
                    raise OnlineStreamError(f"the stream needs the next indices of generator {g.k}, which is "
                                            f"gone: {g.failed}")
                return None
            try:
                msg = g.queue.get(True, 0.1) if block else g.queue.get_nowait()
            except queue_module.Empty:
                if not block:
                    self._check(g)
                    return None
                self._check(g)
                self._check_timeout()
                continue
            if self._control(g, msg):
                g.pending.append(msg)

    def _control(self, g: _Generator, msg: tuple) -> bool:
        """Book a message; True for a sample or a rejected one (to be taken in order)."""
        self._last_progress = time.perf_counter()
        kind = msg[0]
        if kind == "ready":
            g.warm_up += float(msg[3])
            return False
        if kind == "error":
            g.last_error = msg[2].strip().splitlines()[-1] if msg[2].strip() else "unknown error"
            log.warning("generator %d failed:\n%s", g.k, msg[2])
            return False
        g.next_received = self._successor(int(msg[2]))
        g.busy += float(msg[4])
        g.waited += float(msg[5])
        return True

    def _check(self, g: _Generator) -> None:
        """Restart generator ``g`` if its process died (at the first index it had not handed over),
        or give it up after ``restarts`` restarts; raise when every generator is gone."""
        if g.failed is not None or g.process is None or g.process.is_alive():
            return
        code = g.process.exitcode
        if code == 1:  # it failed with an exception and flushed its queue: keep what it handed over, read why
            while True:
                try:
                    msg = g.queue.get(timeout=0.05)
                except (queue_module.Empty, OSError, EOFError):
                    break
                if self._control(g, msg):
                    g.pending.append(msg)
        # a process killed otherwise may have died in the middle of a message: its queue is dropped
        # unread, and what it had not handed over is made again
        cause = f"exit code {code}" + (f" ({g.last_error})" if g.last_error else "")
        g.queue.cancel_join_thread()
        g.queue.close()
        if g.restarts >= self.options["restarts"]:
            g.failed = f"generator {g.k} died {g.restarts + 1} times, the last with {cause}"
            log.error("%s; it is not started again (training.online.restarts is %d)", g.failed,
                      self.options["restarts"])
            if all(h.failed is not None for h in self._gens):
                raise OnlineStreamError("every generator died: " + "; ".join(h.failed for h in self._gens))
            return
        g.restarts += 1
        log.warning("generator %d died (%s); started again at index %d (restart %d of %d)", g.k, cause,
                    g.next_received, g.restarts, self.options["restarts"])
        g.last_error = None
        self._spawn(g)

    def _check_timeout(self) -> None:
        waited = time.perf_counter() - max(self._last_progress, self._waiting_since)
        if waited > self.options["timeout"]:
            alive = [g.k for g in self._gens if g.process is not None and g.process.is_alive()]
            raise OnlineStreamError(
                f"no generator handed over a sample within training.online.timeout = {self.options['timeout']:g} s "
                f"(generators alive: {alive or 'none'}; samples received so far: "
                f"{sum(g.samples + g.rejected for g in self._gens)}); a solve that slow means a stalled generator or "
                "a timeout too short for this family and grid")

    # -- taking into the buffer ----------------------------------------------------------
    def _take(self, g: _Generator, msg: tuple) -> None:
        """Take one received sample into the buffer (or count it rejected)."""
        index = int(msg[2])
        g.next_taken = self._successor(index)
        if msg[0] == "rejected":
            g.rejected += 1
            self._rejected_indices.append(index)
            log.info("sample %d missed the solver tolerance (rel. residual %.3g): not handed to the trainer",
                     index, msg[3])
            self._check_rejections()
            return
        g.samples += 1
        self.buffer.add(self._items(index, msg[3]))

    def _check_rejections(self) -> None:
        rejected = sum(g.rejected for g in self._gens)
        if rejected >= 64 and sum(g.samples for g in self._gens) == 0:
            raise OnlineStreamError(f"every one of the first {rejected} samples missed the solver tolerance: "
                                    "loosen solver.rtol, raise solver.maxiter or use a stronger solver")

    def _items(self, index: int, arrays: Mapping[str, np.ndarray]) -> list[BufferItem]:
        if self.layout is None:
            x = np.stack([arrays[n] for n in self.inputs])
            y = np.stack([arrays[n] for n in self.targets])
            return [BufferItem(index, -1, (x, y))]
        static, states = self.layout.assemble([arrays[n][None] for n in self.layout.read_names])
        data = (static[0].numpy(), states[0].numpy())
        return [BufferItem(index, w, data) for w in range(self.per_sample)]

    def _take_free(self, limit: int) -> int:
        """Take up to ``limit`` samples that have arrived, round robin over the generators."""
        taken, idle = 0, 0
        while taken < limit and idle < len(self._gens):
            idle = 0
            for g in self._gens:
                if taken >= limit:
                    break
                msg = self._receive(g, block=False)
                if msg is None:
                    idle += 1
                    continue
                self._take(g, msg)
                taken += msg[0] == "sample"
        return taken

    def _take_one_blocking(self) -> None:
        """Wait for the next sample (free: from whichever generator; lockstep: the next index)."""
        if self.options["mode"] == "lockstep":
            while True:
                i = self._cursor
                g = self._owner(i)
                msg = self._receive(g, block=True)
                if int(msg[2]) != i:
                    raise OnlineStreamError(f"generator {g.k} handed over index {msg[2]}, expected {i}")
                self._cursor = self._next_global(i)
                self._take(g, msg)
                if msg[0] == "sample":
                    return
        while True:
            if self._take_free(1):
                return
            self._check_timeout()
            time.sleep(0.002)

    def _owner(self, index: int) -> _Generator:
        o = self.options
        return self._gens[((index - o["first_index"]) // o["block"]) % o["generators"]]

    @staticmethod
    def _next_global(index: int) -> int:
        return index + 1

    def _fill_before_step(self) -> None:
        """Take samples before a step: to the watermark before the first, then what the policy has
        room for (free: what has arrived; lockstep: all of it, waiting), then wait until a batch can
        be drawn."""
        per = self.per_sample
        self._waiting_since = time.perf_counter()  # a timeout counts from here at the earliest
        if not self._started_buffer:
            while len(self.buffer.items) < self.options["watermark"] * per:
                self._take_one_blocking()
            self._started_buffer = True
        room = self.buffer.room(per)
        if self.options["mode"] == "lockstep":
            for _ in range(room):
                self._take_one_blocking()
        else:
            self._take_free(room)
        while not self.buffer.can_batch():
            self._take_one_blocking()

    def _next_batch(self) -> tuple[Any, Any]:
        import torch

        t0 = time.perf_counter()
        self._fill_before_step()
        self._wait.append(time.perf_counter() - t0)
        self._fill.append(len(self.buffer.items) // self.per_sample)
        batch = self.buffer.batch()
        self._steps += 1
        self.last_indices = [item.sample for item in batch]
        if self.layout is None:
            x = torch.from_numpy(np.stack([item.data[0] for item in batch]))
            y = torch.from_numpy(np.stack([item.data[1] for item in batch]))
            return x, y
        static = torch.from_numpy(np.stack([item.data[0] for item in batch]))
        states = torch.from_numpy(np.stack([item.data[1] for item in batch]))
        windows = torch.tensor([[j, item.window] for j, item in enumerate(batch)], dtype=torch.int64)
        m = self.task.pushforward
        return self.layout.cut(static, states, windows, int(self._unrolls.integers(0, m + 1)) if m else 0)

    # -- checkpoint --------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The buffer, every generator's position and the counters (for a trainer checkpoint)."""
        elapsed = time.perf_counter() - self._started_at if self._ctx is not None and self._started_at else 0.0
        return {"options": dict(self.options), "buffer": self.buffer.state_dict(), "cursor": self._cursor,
                "steps": self._steps, "started_buffer": self._started_buffer,
                "generators": [{"next_taken": g.next_taken, "samples": g.samples, "rejected": g.rejected,
                                "restarts": g.restarts, "busy": g.busy, "waited": g.waited, "warm_up": g.warm_up}
                               for g in self._gens],
                "fill": np.asarray(self._fill, np.int32), "wait": np.asarray(self._wait, np.float32),
                "rejected_indices": np.asarray(self._rejected_indices, np.int64),
                "unrolls": self._unrolls.bit_generator.state, "wall": self._wall + elapsed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (before the stream starts)."""
        if self._ctx is not None:
            raise RuntimeError("load_state_dict after the stream started")
        if int(state["options"]["generators"]) != len(self._gens):
            raise ValueError("the checkpoint's stream has another number of generators")
        self.buffer.load_state_dict(state["buffer"])
        self._cursor, self._steps = int(state["cursor"]), int(state["steps"])
        self._started_buffer = bool(state["started_buffer"])
        for g, s in zip(self._gens, state["generators"]):
            g.next_taken = g.next_received = int(s["next_taken"])
            g.samples, g.rejected, g.restarts = int(s["samples"]), int(s["rejected"]), int(s["restarts"])
            g.busy, g.waited, g.warm_up = float(s["busy"]), float(s["waited"]), float(s["warm_up"])
        self._fill = [int(v) for v in state["fill"]]
        self._wait = [float(v) for v in state["wait"]]
        self._rejected_indices = [int(v) for v in state["rejected_indices"]]
        self._unrolls.bit_generator.state = state["unrolls"]
        self._wall = float(state["wall"])
        direct = not self._iterative()
        self.resume_note = (
            f"resumed at step {self._steps}: the buffer ({len(self.buffer.items) // self.per_sample} samples, their "
            f"use counts), each generator's position (next indices {[g.next_taken for g in self._gens]}) and the "
            "counters come from the checkpoint; samples that were in the generators' queues at the kill are made "
            "again, by generators whose solver state (warm starts, solution windows, recycle spaces) starts afresh, "
            + ("which changes nothing with this direct solver" if direct else
               "so their outputs match an uninterrupted run's within the solver tolerance, not bit for bit")
            + ("" if self.options["mode"] == "lockstep" else
               "; in free mode which samples arrive when differs from any other run anyway"))

    def _iterative(self) -> bool:
        from kryflow.solvers import SOLVER_METHODS

        method = self.spec["solver"].get("method")
        return method == "choose" or bool(getattr(SOLVER_METHODS.get(method), "uses_preconditioner", True))

    # -- the record ----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What the stream did: samples made (accepted and rejected), taken, used, unique samples
        seen, reuse, the use-count histogram, generator throughput, back-pressure and warm-up, the
        trainer's wait, restarts; ``fill`` and ``wait`` per step."""
        wall = self._wall + (time.perf_counter() - self._started_at if self._ctx is not None and self._started_at
                             else 0.0)
        made = sum(g.samples for g in self._gens)
        rejected = sum(g.rejected for g in self._gens)
        counts = self.buffer.use_counts()
        consumed = self._steps * self.batch_size
        unique_items = sum(n for uses, n in counts.items() if uses > 0)
        busy = sum(g.busy for g in self._gens)
        return {
            "mode": self.options["mode"], "policy": self.options["policy"], "generators": len(self._gens),
            "steps": self._steps, "samples_generated": made + rejected, "samples_accepted": made,
            "samples_rejected": rejected, "rejected_indices": list(self._rejected_indices),
            "items_consumed": consumed, "unique_samples_seen": len(self.buffer.used_samples),
            "unique_items_seen": unique_items, "items_reused": consumed - unique_items,
            "reuse_factor": consumed / unique_items if unique_items else math.nan,
            "use_count_histogram": {str(k): v for k, v in counts.items()},
            "generator_seconds_busy": busy,
            "generator_samples_per_second": (made + rejected) / busy if busy > 0 else math.nan,
            "stream_samples_per_second": (made + rejected) / wall if wall > 0 else math.nan,
            "generator_backpressure_seconds": sum(g.waited for g in self._gens),
            "generator_warm_up_seconds": sum(g.warm_up for g in self._gens),
            "generator_restarts": sum(g.restarts for g in self._gens),
            "trainer_wait_seconds": float(sum(self._wait)), "stream_wall_seconds": wall,
            "buffer_fill_mean": float(np.mean(self._fill)) if self._fill else math.nan,
            "next_index": [g.next_taken for g in self._gens], "resumed": self.resume_note,
            "fill": list(self._fill), "wait": [float(w) for w in self._wait],
        }
