"""Torch loading of kryflow stores: whole chunks per read, deterministic shuffling, and the
learning task's windows cut from trajectories on the fly (:mod:`kryflow.data._task`)."""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.core.sync import sync as zarr_sync

from . import _schema as S
from ._store import split_indices
from ._task import Task, trajectory_layout

# in_memory=None holds a split in memory when its x and y take at most this many bytes.
IN_MEMORY_LIMIT_BYTES = int(os.environ.get("KRYFLOW_IN_MEMORY_LIMIT_BYTES", 1 << 30))


class ChunkReader(torch.utils.data.Dataset):
    """Map-style dataset whose items are chunks: item k -> (x, y) of the split's samples in chunk k.

    **Returns (per item):** ``x`` float32 (n, C_in, *grid), ``y`` float32 (n, C_out, *grid), n <= chunk_samples.
    With a ``next_step`` task the item is the chunk's whole trajectories instead: ``static``
    (n, S, *grid) and ``states`` (n, L, C, *grid) (:meth:`TrajectoryLayout.assemble`), from which
    the loader cuts windows. Zarr arrays are opened lazily in each process, so the object is cheap
    to send to workers.
    """

    def __init__(self, path, split: str, task: Task | None = None) -> None:
        self.path = Path(path)
        attrs = S.read_group_attrs(self.path)
        self.layout = trajectory_layout(self.path, task)
        if self.layout is None:
            self.inputs = list(attrs[S.ATTR_INPUTS])
            self.targets = list(attrs[S.ATTR_TARGETS])
        else:  # the variables a trajectory is assembled from; channels are the layout's
            self.inputs = list(self.layout.static) + list(self.layout.initial)
            self.targets = list(self.layout.trajectories)
        self.chunk_samples = int(attrs[S.ATTR_CHUNK])
        idx = split_indices(self.path, split)
        chunk_of = idx // self.chunk_samples
        self.chunks = np.unique(chunk_of)
        # positions inside each chunk that belong to the split
        self.local = [idx[chunk_of == c] - c * self.chunk_samples for c in self.chunks]
        self.num_samples = int(idx.size)
        self.num_stored = int(attrs[S.ATTR_NUM])
        self._arrays = None

    def __len__(self) -> int:
        return len(self.chunks)

    def _open(self):
        if self._arrays is None:
            g = zarr.open_group(self.path, mode="r", zarr_format=3)
            self._arrays = ([g[n] for n in self.inputs], [g[n] for n in self.targets])
        return self._arrays

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def _blocks(self, arrays, k: int) -> list[np.ndarray]:
        c = int(self.chunks[k])
        sel = slice(c * self.chunk_samples, min((c + 1) * self.chunk_samples, self.num_stored))
        asyncs = [getattr(a, "_async_array", None) for a in arrays]
        if all(a is not None for a in asyncs):
            # one round trip to zarr's event loop for all variables: their chunks decode concurrently
            async def gather():
                return await asyncio.gather(*(a.getitem(sel) for a in asyncs))

            return list(zarr_sync(gather()))
        return [a[sel] for a in arrays]

    def __getitem__(self, k: int):
        xs, ys = self._open()
        blocks = self._blocks(xs + ys, k)
        local = self.local[k]
        if local.size != blocks[0].shape[0]:
            blocks = [b[local] for b in blocks]
        if self.layout is not None:
            return self.layout.assemble(blocks)
        x = np.stack(blocks[: len(xs)], axis=1).astype(np.float32, copy=False)
        y = np.stack(blocks[len(xs) :], axis=1).astype(np.float32, copy=False)
        return torch.from_numpy(x), torch.from_numpy(y)

    def item_bytes(self) -> int:
        xs, ys = self._open()
        per_sample = sum(4 * math.prod(a.shape[1:]) for a in xs + ys)
        return per_sample * self.num_samples


class SplitLoader:
    """Batches ``(x, y)`` of one split, in physical units.

    Iterating yields ``x`` (B, C_in, *grid) and ``y`` (B, C_out, *grid) float32 tensors on
    ``device``. With ``shuffle`` the order is a function of ``(seed, epoch)`` only: in memory a
    full permutation; when streaming, the chunk order is permuted and samples are shuffled within
    a window of ``shuffle_chunks`` chunks. ``set_epoch(e)`` picks the epoch; otherwise each new
    iteration advances it by one.

    With a ``next_step`` ``task`` the items are the windows of the split's trajectories (every
    start of every trajectory, :meth:`TrajectoryLayout.windows`), cut from the trajectories as
    batches are made (:meth:`TrajectoryLayout.cut`): ``x`` (B, S + k·C, *grid), ``y``
    (B, h·C, *grid), or ``(u+1)·h·C`` channels in a pushforward batch that unrolls ``u`` times
    (``u`` drawn per batch from ``(seed, epoch)``). Shuffling permutes windows as it permutes samples.
    """

    def __init__(
        self,
        path,
        split: str,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        num_workers: int = 0,
        in_memory: bool | None = None,
        device=None,
        drop_last: bool = False,
        shuffle_chunks: int = 8,
        task: Task | None = None,
    ) -> None:
        if batch_size < 1:
            raise S.DatasetError(f"{path}: batch_size must be positive")
        self.path = Path(path)
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.drop_last = drop_last
        self.shuffle_chunks = max(1, int(shuffle_chunks))
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.reader = ChunkReader(self.path, split, task)
        self.layout = self.reader.layout
        if self.layout is None:
            self.inputs, self.targets = self.reader.inputs, self.reader.targets
        else:  # channel names of the windows
            self.inputs, self.targets = self.layout.input_names(), self.layout.target_names()
        if self.reader.num_samples == 0:
            raise S.DatasetError(f"{self.path}: split {split!r} is empty")
        if in_memory is None:
            in_memory = self.reader.item_bytes() <= IN_MEMORY_LIMIT_BYTES
        self.in_memory = bool(in_memory)
        self._pin = self.device.type == "cuda"
        self._epoch = 0
        self._x = self._y = None
        self._loader = None
        self._chunk_order: list[int] = []
        if self.in_memory:
            self._load_all()

    @property
    def num_samples(self) -> int:
        """Samples in the split."""
        return self.reader.num_samples

    split_size = num_samples

    @property
    def num_items(self) -> int:
        """Pairs per epoch: samples, or (next_step) the windows of the split's trajectories."""
        if self.layout is None:
            return self.num_samples
        return self.num_samples * self.layout.windows_per_trajectory

    @property
    def in_channels(self) -> int:
        return len(self.inputs)

    @property
    def out_channels(self) -> int:
        return len(self.targets)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        xs, _ = self.reader._open()
        return tuple(int(n) for n in xs[0].shape[1:])

    def __len__(self) -> int:
        n, b = self.num_items, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def _load_all(self) -> None:
        xs, ys = zip(*(self.reader[k] for k in range(len(self.reader))))
        x, y = torch.cat(xs), torch.cat(ys)
        if self.device.type != "cpu":
            x, y = x.to(self.device), y.to(self.device)  # small by definition: keep it on the device
        self._x, self._y = x, y

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def _unrolls(self, epoch: int):
        """Per batch, the pushforward unrolls ``u`` in ``0..m`` (always 0 without pushforward)."""
        m = self.layout.task.pushforward if self.layout is not None else 0
        rng = np.random.default_rng([self.seed, epoch, 1])  # a stream apart from the shuffling's
        while True:
            yield int(rng.integers(0, m + 1)) if m else 0

    def __iter__(self):
        epoch = self._epoch
        self._epoch += 1
        if self.in_memory:
            yield from self._iter_memory(epoch)
        else:
            yield from self._iter_stream(epoch)

    def _to_device(self, x, y):
        if self.device.type == "cpu":
            return x, y
        if self._pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _batches(self, x, y, order, stop: int):
        # index_select is much faster than advanced indexing for gathering whole samples
        for i0 in range(0, stop, self.batch_size):
            if order is None:
                yield x[i0 : i0 + self.batch_size], y[i0 : i0 + self.batch_size]
            else:
                idx = order[i0 : i0 + self.batch_size]
                yield x.index_select(0, idx), y.index_select(0, idx)

    def _windows(self, static, states, items, order, stop: int, unrolls):
        """Batches cut from trajectories: ``items`` (n, 2) windows in ``order`` (None: as they are)."""
        for i0 in range(0, stop, self.batch_size):
            sel = items[i0 : i0 + self.batch_size] if order is None else items[order[i0 : i0 + self.batch_size]]
            yield self.layout.cut(static, states, sel, next(unrolls))

    def _iter_memory(self, epoch: int):
        n, b = self.num_items, self.batch_size
        order = torch.from_numpy(self._rng(epoch).permutation(n)).to(self._x.device) if self.shuffle else None
        stop = (n // b) * b if self.drop_last else n
        if self.layout is None:
            yield from self._batches(self._x, self._y, order, stop)
        else:
            items = self.layout.windows(self.num_samples).to(self._x.device)
            yield from self._windows(self._x, self._y, items, order, stop, self._unrolls(epoch))

    def _chunk_loader(self):
        # created once so that worker processes persist across epochs; the sampler reads the
        # chunk order of the current epoch
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.reader,
                batch_size=None,
                sampler=_EpochOrder(self),
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
                prefetch_factor=2 if self.num_workers else None,
            )
        return self._loader

    def _iter_stream(self, epoch: int):
        if self.layout is not None:
            yield from self._iter_stream_windows(epoch)
            return
        rng = self._rng(epoch)
        nchunks = len(self.reader)
        self._chunk_order = (rng.permutation(nchunks) if self.shuffle else np.arange(nchunks)).tolist()
        b = self.batch_size
        # shuffle window: peak memory is about twice the window, whatever the dataset size
        window = max(self.shuffle_chunks * self.reader.chunk_samples, 2 * b)
        pool_x, pool_y, pooled = [], [], 0

        def drain(final: bool):
            px = torch.cat(pool_x) if len(pool_x) > 1 else pool_x[0]
            py = torch.cat(pool_y) if len(pool_y) > 1 else pool_y[0]
            pool_x.clear()
            pool_y.clear()
            order = torch.from_numpy(rng.permutation(pooled)) if self.shuffle else None
            nfull = (pooled // b) * b
            stop = pooled if final and not self.drop_last else nfull
            for x, y in self._batches(px, py, order, stop):
                yield self._to_device(x, y)
            if not final and nfull < pooled:  # carry the remainder (< one batch) into the next window
                rest = order[nfull:] if order is not None else torch.arange(nfull, pooled)
                pool_x.append(px.index_select(0, rest))
                pool_y.append(py.index_select(0, rest))

        for x, y in self._chunk_loader():
            pool_x.append(x)
            pool_y.append(y)
            pooled += x.shape[0]
            if pooled >= window:
                yield from drain(final=False)
                pooled = sum(t.shape[0] for t in pool_x)
        if pooled:
            yield from drain(final=True)

    def _iter_stream_windows(self, epoch: int):
        """Streaming with a next-step task: whole trajectories are pooled chunk by chunk and their
        windows shuffled within the pool; windows left over (less than a batch) are carried into
        the next pool with their trajectories."""
        rng = self._rng(epoch)
        unrolls = self._unrolls(epoch)
        nchunks = len(self.reader)
        self._chunk_order = (rng.permutation(nchunks) if self.shuffle else np.arange(nchunks)).tolist()
        b = self.batch_size
        window = max(self.shuffle_chunks * self.reader.chunk_samples, 1)
        pool_s, pool_t, carry = [], [], None  # carry: windows (sample in the pool, start) left over

        def drain(final: bool):
            static = torch.cat(pool_s) if len(pool_s) > 1 else pool_s[0]
            states = torch.cat(pool_t) if len(pool_t) > 1 else pool_t[0]
            pool_s.clear()
            pool_t.clear()
            fresh_from = 0 if carry is None else int(carry[:, 0].max()) + 1
            items = self.layout.windows(static.shape[0] - fresh_from)
            items[:, 0] += fresh_from
            items = items if carry is None else torch.cat([carry, items])
            n = items.shape[0]
            order = torch.from_numpy(rng.permutation(n)) if self.shuffle else None
            nfull = (n // b) * b
            stop = n if final and not self.drop_last else nfull
            for x, y in self._windows(static, states, items, order, stop, unrolls):
                yield self._to_device(x, y)
            if final or nfull == n:
                return None
            rest = items[order[nfull:]] if order is not None else items[nfull:]
            keep, local = torch.unique(rest[:, 0], return_inverse=True)  # their trajectories, renumbered
            pool_s.append(static.index_select(0, keep))
            pool_t.append(states.index_select(0, keep))
            return torch.stack([local, rest[:, 1]], 1)

        for static, states in self._chunk_loader():
            pool_s.append(static)
            pool_t.append(states)
            if sum(t.shape[0] for t in pool_t) >= window:
                carry = yield from drain(final=False)
        if pool_t:
            yield from drain(final=True)


class _EpochOrder(torch.utils.data.Sampler):
    def __init__(self, loader: SplitLoader) -> None:
        self.loader = loader

    def __iter__(self):
        return iter(self.loader._chunk_order)

    def __len__(self) -> int:
        return len(self.loader._chunk_order)


def make_loader(path, split: str, **options) -> SplitLoader:
    """Loader of one split of a kryflow store: ``SplitLoader(path, split, **options)``.

    **Arguments:**
    - path, split: the store and ``"train"``, ``"val"`` or ``"test"``.
    - batch_size, shuffle (required), seed, drop_last: as in ``torch.utils.data.DataLoader``; the
      order is reproducible for a seed and epoch.
    - num_workers: worker processes reading chunks when streaming.
    - in_memory: hold the split in memory (on ``device``); ``None`` = when it takes at most
      ``KRYFLOW_IN_MEMORY_LIMIT_BYTES`` (default 1 GiB).
    - device: where batches go (pinned host memory is used for CUDA transfers).
    - shuffle_chunks: streaming shuffle window, in chunks.
    - task: the learning task (:class:`~kryflow.data.Task`); ``next_step`` cuts windows of the
      trajectories (see :class:`SplitLoader`); None or ``final_state``: one pair per sample.

    **Returns:** an iterable with ``len()`` (batches per epoch), ``num_samples``, ``set_epoch``.
    """
    return SplitLoader(path, split, **options)
