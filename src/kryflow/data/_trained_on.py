"""What a surrogate was trained on (PDE family, grid, input and target channels), read from the
store it was trained on: recorded in every ``model.pt`` so that a model can be checked against the
dataset it is used with (a surrogate start, :mod:`kryflow.generation`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainedOn", "trained_on_of_store"]


@dataclass(frozen=True)
class TrainedOn:
    """What a surrogate was trained on: PDE family, grid shape, input and target channels (in order)."""

    family: str | None
    grid: tuple[int, ...]
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    params: dict = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "grid": list(self.grid), "inputs": list(self.inputs),
                "targets": list(self.targets), "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainedOn:
        return cls(d.get("family"), tuple(int(n) for n in d["grid"]), tuple(d["inputs"]), tuple(d["targets"]),
                   dict(d.get("params") or {}))


def trained_on_of_store(path) -> TrainedOn:
    """:class:`TrainedOn` of the dataset store at ``path`` (what a model trained on it was trained on)."""
    from ._schema import ATTR_INPUTS, ATTR_TARGETS, read_group_attrs
    from ._store import grid_shape

    attrs = read_group_attrs(Path(path))
    return TrainedOn(attrs.get("pde_family"), grid_shape(path), tuple(attrs[ATTR_INPUTS]),
                     tuple(attrs[ATTR_TARGETS]), dict(attrs.get("pde_params") or {}))
