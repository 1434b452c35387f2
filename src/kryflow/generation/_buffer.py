"""The trainer's buffer of streamed samples, and the policies that decide what it keeps and what a
batch draws (:data:`BUFFER_POLICIES`, config key ``training.online.policy``).

An item is one training pair: a sample (``final_state``) or one window of a sample's trajectory
(``next_step``: a sample brings all its windows at once). Every item counts its uses, and the
buffer keeps the histogram of the use counts of the items that left it (Melissa's buffers count
them the same way), so a run can say how often its samples were seen.

* ``fifo``: first in, first out. A batch is the oldest items, each used once; when too few have
  arrived the trainer waits. No reuse.
* ``firo``: first in, random out. A batch draws items at random; an item leaves after
  ``max_uses`` uses (1: every sample used once, in random order). When too few are left the
  trainer waits. Reuse at most ``max_uses``.
* ``reservoir``: a batch draws items at random and nothing leaves by use; once the buffer is full
  each new item replaces one at random (at most a batch of new items per step, so that every item
  has its chance to be drawn). The trainer never waits once the buffer holds a batch; when the
  generators are slower than the trainer, items are drawn again (counted as reuse).

Whatever the policy, the buffer takes new items only where it has room (``room``); what the
generators make beyond that waits in their bounded queues, so fast generators wait for the
trainer (back-pressure). A batch never holds one item twice.

Only numpy here: the buffer and its state pickle into a checkpoint as they are.
"""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kryflow._registry import Registry

__all__ = ["BUFFER_POLICIES", "BufferItem", "BufferPolicy", "SampleBuffer"]


@dataclass
class BufferItem:
    """One training pair in the buffer.

    **Attributes:**
        sample: the sample index it was cut from.
        window: the window's start state (``next_step``), -1 for a whole sample.
        data: the arrays it is cut from (shared by the windows of one sample): ``(x, y)`` float32
            ``(C_in, *grid)``, ``(C_out, *grid)``, or ``(static, states)`` ``(S, *grid)``,
            ``(L, C, *grid)``.
        uses: how many batches it has been in.
    """

    sample: int
    window: int
    data: tuple
    uses: int = 0


#: Buffer policies by name (``training.online.policy``).
BUFFER_POLICIES: Registry[type[BufferPolicy]] = Registry("buffer policy", plural="buffer policies")


class BufferPolicy(abc.ABC):
    """What a buffer keeps and what a batch draws. A subclass with a ``name`` registers itself."""

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.name:
            BUFFER_POLICIES.register(cls.name, cls)

    def room(self, buf: SampleBuffer, per_sample: int) -> int:
        """Samples (of ``per_sample`` items each) the buffer takes now: as many as fit."""
        return max(0, (buf.capacity - len(buf.items)) // per_sample)

    def add(self, buf: SampleBuffer, item: BufferItem) -> None:
        buf.items.append(item)

    def can_batch(self, buf: SampleBuffer) -> bool:
        return len(buf.items) >= buf.batch_size

    @abc.abstractmethod
    def select(self, buf: SampleBuffer) -> list[BufferItem]:
        """The next batch (``batch_size`` distinct items); uses are counted and spent items leave."""


class Fifo(BufferPolicy):
    name = "fifo"

    def select(self, buf: SampleBuffer) -> list[BufferItem]:
        batch, buf.items = buf.items[: buf.batch_size], buf.items[buf.batch_size:]
        for item in batch:
            item.uses += 1
            buf.leave(item)
        return batch


class Firo(BufferPolicy):
    name = "firo"

    def select(self, buf: SampleBuffer) -> list[BufferItem]:
        pick = np.sort(buf.rng.choice(len(buf.items), buf.batch_size, replace=False))
        batch = [buf.items[i] for i in pick]
        for item in batch:
            item.uses += 1
        spent = {int(i) for i in pick if buf.items[i].uses >= buf.max_uses}
        for i in sorted(spent):
            buf.leave(buf.items[i])
        buf.items = [it for j, it in enumerate(buf.items) if j not in spent]
        return batch


class Reservoir(BufferPolicy):
    name = "reservoir"

    def room(self, buf: SampleBuffer, per_sample: int) -> int:
        fill = super().room(buf, per_sample)
        if fill:
            return fill
        return max(1, -(-buf.batch_size // per_sample))  # full: at most a batch of new items replaces old ones

    def add(self, buf: SampleBuffer, item: BufferItem) -> None:
        if len(buf.items) < buf.capacity:
            buf.items.append(item)
            return
        j = int(buf.rng.integers(len(buf.items)))
        buf.leave(buf.items[j])
        buf.items[j] = item

    def select(self, buf: SampleBuffer) -> list[BufferItem]:
        pick = np.sort(buf.rng.choice(len(buf.items), buf.batch_size, replace=False))
        batch = [buf.items[i] for i in pick]
        for item in batch:
            item.uses += 1
        return batch


class SampleBuffer:
    """The items a trainer draws its batches from, under one policy (final).

    **Arguments:**
        policy: a name in :data:`BUFFER_POLICIES`.
        capacity: the most items it holds.
        batch_size: items per batch (at most ``capacity``).
        seed: seed of its random draws (which items a batch takes, which one a new item replaces).
        max_uses: ``firo``: an item leaves after this many uses.

    **Attributes:** ``items``; ``histogram`` (use count -> items that left with it); ``used_samples``
    (the sample indices at least one of whose items has been in a batch).
    """

    def __init__(self, policy: str, capacity: int, batch_size: int, seed: int, max_uses: int = 1):
        if batch_size > capacity:
            raise ValueError(f"a buffer of {capacity} items cannot hold a batch of {batch_size}")
        self.policy = BUFFER_POLICIES[policy]()
        self.capacity, self.batch_size, self.max_uses = int(capacity), int(batch_size), int(max_uses)
        self.rng = np.random.default_rng([int(seed), 26])
        self.items: list[BufferItem] = []
        self.histogram: Counter = Counter()
        self.used_samples: set[int] = set()

    def room(self, per_sample: int = 1) -> int:
        return self.policy.room(self, per_sample)

    def add(self, items: list[BufferItem]) -> None:
        """A sample's items (one, or its windows)."""
        for item in items:
            self.policy.add(self, item)

    def can_batch(self) -> bool:
        return self.policy.can_batch(self)

    def batch(self) -> list[BufferItem]:
        batch = self.policy.select(self)
        self.used_samples.update(item.sample for item in batch)
        return batch

    def leave(self, item: BufferItem) -> None:
        """Count an item that leaves the buffer (spent or replaced)."""
        self.histogram[int(item.uses)] += 1

    def use_counts(self) -> dict[int, int]:
        """Use count -> items, over the items that left and those still held."""
        counts = Counter(self.histogram)
        counts.update(int(item.uses) for item in self.items)
        return dict(sorted(counts.items()))

    def state_dict(self) -> dict:
        return {"items": [(it.sample, it.window, it.data, it.uses) for it in self.items],
                "histogram": dict(self.histogram), "used_samples": np.fromiter(self.used_samples, np.int64),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        # the windows of one sample share their arrays again
        shared: dict[int, tuple] = {}
        self.items = [BufferItem(s, w, shared.setdefault(s, d), u) for s, w, d, u in state["items"]]
        self.histogram = Counter({int(k): int(v) for k, v in state["histogram"].items()})
        self.used_samples = {int(s) for s in state["used_samples"]}
        self.rng.bit_generator.state = state["rng"]
