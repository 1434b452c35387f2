"""Joining the parts of a sharded generation into the one dataset store.

Every part holds a chunk-aligned block of samples (``generate_dataset(..., shards=K, shard=k)``)
with the dataset's own sample indices. The merge feeds their stored values, in sample order,
through the same :class:`ZarrDatasetWriter` a one-job run uses, so checksums, normalisation
statistics and the digest are computed exactly as they would be: inputs are equal value for
value to a one-job run's, outputs differ only by what the solver's tolerance allows (nothing,
with a direct solver).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from . import _schema as S
from ._schema import DatasetError, VariableSpec
from ._writer import ZarrDatasetWriter

__all__ = ["merge_dataset"]

# attributes that differ between parts (or are recomputed by the writer)
_PART_KEYS = ("dataset_part", "solver_warm_up_seconds", "solve_order_seconds", "solver_setup_seconds",
              "solver_one_time_seconds")
_ONE_TIME = ("solver_warm_up_seconds", "solve_order_seconds", "solver_setup_seconds", "solver_one_time_seconds")


def _parts(paths: Sequence[str | Path]) -> list[tuple[Path, dict]]:
    """The parts with their attributes, sorted by first sample; checked to tile one dataset."""
    parts = []
    for p in paths:
        attrs = S.read_group_attrs(Path(p))
        if "dataset_part" not in attrs:
            raise DatasetError(f"{p} is not a part of a sharded dataset (no 'dataset_part' attribute)")
        parts.append((Path(p), attrs))
    parts.sort(key=lambda pa: pa[1]["dataset_part"]["start"])
    first = parts[0][1]
    shards, total = first["dataset_part"]["shards"], first["dataset_part"]["num_samples"]
    if len(parts) != shards:
        raise DatasetError(f"{len(parts)} parts given, but the dataset was generated in {shards} shards")
    common = {k: v for k, v in first.items() if k not in _PART_KEYS and not k.startswith("kryflow_")}
    expected = 0
    for path, attrs in parts:
        part = attrs["dataset_part"]
        if part["start"] != expected or part["num_samples"] != total or part["shards"] != shards:
            raise DatasetError(f"{path}: samples [{part['start']}, {part['stop']}) of {part['num_samples']} do not "
                               f"continue the parts before it (expected a part starting at {expected} of {total})")
        other = {k: v for k, v in attrs.items() if k not in _PART_KEYS and not k.startswith("kryflow_")}
        if other != common or attrs[S.ATTR_CHUNK] != first[S.ATTR_CHUNK]:
            raise DatasetError(f"{path} was generated with another configuration than {parts[0][0]}; "
                               "regenerate the parts from one config")
        expected = part["stop"]
    if expected != total:
        raise DatasetError(f"the parts hold samples [0, {expected}) of {total}; a shard is missing")
    return parts


def _layout(group: zarr.Group) -> tuple[dict, dict]:
    """``(coords, variables)`` of a store as the writer takes them."""
    from ._store import _workflow_files_expected

    coords, variables = {}, {}
    with _workflow_files_expected():
        arrays = sorted(group.arrays())
    for name, arr in arrays:
        dims = tuple(arr.metadata.dimension_names or ())
        attrs = {k: v for k, v in arr.attrs.items() if k not in (S.VAR_SHA, S.VAR_CHUNK_SHA, S.VAR_MEAN,
                                                                 S.VAR_STD, "_FillValue")}
        if name == S.SPLIT_VAR or name == S.SAMPLE_DIM:
            continue
        if "role" in attrs:
            variables[name] = VariableSpec(dims=dims[1:], long_name=attrs.get("long_name", name),
                                           units=attrs.get("units", "1"), role=attrs["role"], dtype=str(arr.dtype))
        else:
            coords[name] = (dims, arr[...], attrs)
    return coords, variables


def merge_dataset(parts: Sequence[str | Path], out_path: str | Path, *, overwrite: bool = True) -> dict[str, Any]:
    """Write the one store ``out_path`` from the parts of a sharded generation.

    **Arguments:**
        parts: every part store (any order), as written by ``generate_dataset(shards=K, shard=k)``.
        out_path: the dataset store; written under a temporary name and moved into place when complete.

    **Returns:** totals over the parts (iterations, matvecs, seconds, flagged solves, one-time
    costs summed over the shards) and the digest.
    """
    parts = _parts(parts)
    first_path, first = parts[0]
    groups = [zarr.open_group(p, mode="r", zarr_format=3) for p, _ in parts]
    coords, variables = _layout(groups[0])
    splits = np.concatenate([np.asarray(g[S.SPLIT_VAR][...]) for g in groups])
    labels = np.array(S.SPLITS)[splits]
    attrs = {k: v for k, v in first.items() if k not in _PART_KEYS and not k.startswith("kryflow_")}
    attrs["dataset_parts"] = [a["dataset_part"] | {k: a[k] for k in _ONE_TIME if k in a} for _, a in parts]
    for key in _ONE_TIME:
        attrs[key] = float(sum(a.get(key, 0.0) for _, a in parts))
    chunk = int(first[S.ATTR_CHUNK])
    with ZarrDatasetWriter(out_path, coords=coords, variables=variables, num_samples=labels.size,
                           chunk_samples=chunk, splits=labels, inputs=list(first[S.ATTR_INPUTS]),
                           targets=list(first[S.ATTR_TARGETS]), attrs=attrs, overwrite=overwrite,
                           nondeterministic=first.get(S.ATTR_NONDET, [])) as writer:
        for group in groups:
            n = group[S.SPLIT_VAR].shape[0]
            for i0 in range(0, n, chunk):
                block = {name: np.asarray(group[name][i0:i0 + chunk]) for name in variables}
                for j in range(min(chunk, n - i0)):
                    writer.append({name: values[j] for name, values in block.items()})
    return _totals(out_path, attrs)


def _totals(path: Path, attrs: dict) -> dict[str, Any]:
    from ._store import dataset_digest

    group = zarr.open_group(path, mode="r", zarr_format=3)
    conv = np.asarray(group["solver_converged"][...]) if "solver_converged" in group else np.ones(1)
    out = {k: attrs[k] for k in _ONE_TIME}
    for key, var in (("iterations", "solver_iterations"), ("matvecs", "solver_matvecs"), ("seconds", "solver_seconds")):
        out[key] = float(np.sum(group[var][...])) if var in group else 0.0
    out["flagged"] = int(np.sum(conv == 0))
    out["num_samples"] = int(group[S.SPLIT_VAR].shape[0])
    out["digest"] = dataset_digest(path)
    out["parts"] = json.loads(json.dumps(attrs["dataset_parts"]))
    return out
