"""Opening, verifying and describing kryflow dataset stores."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from . import _schema as S
from ._schema import DatasetError


@contextlib.contextmanager
def _workflow_files_expected():
    """Snakemake touches ``.snakemake_timestamp`` inside every directory output, and zarr warns
    about any file that is not part of its hierarchy when it lists a group: silence exactly that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")
        yield


def open_dataset(path) -> xr.Dataset:
    """Open a complete kryflow store lazily (no dask needed).

    Raises ``DatasetError`` naming the store when it is missing, temporary, incomplete, foreign
    or lacks the variables its attributes promise.
    """
    path = Path(path)
    attrs = S.read_group_attrs(path)
    try:
        with _workflow_files_expected():
            ds = xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None, zarr_format=3)
    except (ValueError, KeyError, OSError) as exc:  # json.JSONDecodeError is a ValueError
        broken = [p.parent.name for p in sorted(path.glob("*/zarr.json")) if not _is_json(p)]
        what = f"metadata of variable(s) {broken} is unreadable" if broken else f"it cannot be read ({exc})"
        raise DatasetError(
            f"{path}: damaged store, {what}; regenerate it (delete the folder and rerun the workflow)"
        ) from None
    needed = list(attrs[S.ATTR_INPUTS]) + list(attrs[S.ATTR_TARGETS]) + [S.SPLIT_VAR]
    missing = [n for n in needed if n not in ds.variables]
    if missing:
        raise DatasetError(f"{path}: wrong schema, variables {missing} named in its attributes are missing")
    return ds


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (ValueError, OSError):
        return False


def dataset_digest(path) -> str:
    """The content digest stored in the dataset (sha256 hex; the MLflow dataset digest)."""
    return S.read_group_attrs(Path(path))[S.ATTR_DIGEST]


def split_indices(path, split: str) -> np.ndarray:
    """Sample positions (int64, sorted) of one split."""
    if split not in S.SPLITS:
        raise DatasetError(f"{path}: unknown split {split!r}; use one of {S.SPLITS}")
    S.read_group_attrs(Path(path))
    codes = zarr.open_array(Path(path) / S.SPLIT_VAR, mode="r")[...]
    return np.flatnonzero(codes == S.SPLIT_CODES[split]).astype(np.int64)


def grid_shape(path) -> tuple[int, ...]:
    """Per-sample grid shape of the model inputs, e.g. (64, 64)."""
    attrs = S.read_group_attrs(Path(path))
    arr = zarr.open_array(Path(path) / attrs[S.ATTR_INPUTS][0], mode="r")
    return tuple(int(s) for s in arr.shape[1:])


def normalization_stats(path) -> dict[str, np.ndarray]:
    """Train-split mean/std per channel.

    **Returns:** ``{"x_mean", "x_std"}`` of shape (C_in,) and ``{"y_mean", "y_std"}`` of shape
    (C_out,), float32, in input / target channel order. A zero std (constant field) is returned
    as 1 so that normalising by it is safe.
    """
    path = Path(path)
    attrs = S.read_group_attrs(path)
    out = {}
    for key, names in (("x", attrs[S.ATTR_INPUTS]), ("y", attrs[S.ATTR_TARGETS])):
        means, stds = [], []
        for name in names:
            a = zarr.open_array(path / name, mode="r").attrs
            if S.VAR_MEAN not in a:
                raise DatasetError(
                    f"{path} has no train split, so no normalisation statistics; use those of the store "
                    f"the model was trained on ({attrs.get('train_dataset', 'see its provenance')})"
                )
            means.append(a[S.VAR_MEAN])
            stds.append(a[S.VAR_STD] if a[S.VAR_STD] > 0 else 1.0)
        out[f"{key}_mean"] = np.asarray(means, dtype=np.float32)
        out[f"{key}_std"] = np.asarray(stds, dtype=np.float32)
    return out


def _verify_array(name: str, arr: zarr.Array, chunk_samples: int | None) -> str | None:
    a = arr.attrs
    if S.VAR_SHA not in a:
        return f"{name}: no stored checksum"
    try:
        if S.VAR_CHUNK_SHA in a:
            stored_chunks = list(a[S.VAR_CHUNK_SHA])
            n = arr.shape[0]
            digests = []
            for k, i0 in enumerate(range(0, n, chunk_samples)):
                i1 = min(i0 + chunk_samples, n)
                try:
                    d = S.array_sha256(arr[i0:i1])
                except Exception as exc:  # a damaged chunk may fail to decode or fail its crc32c
                    return f"{name}: chunk {k} (samples {i0}..{i1 - 1}) cannot be read: {type(exc).__name__}: {exc}"
                if k < len(stored_chunks) and d != stored_chunks[k]:
                    return f"{name}: chunk {k} (samples {i0}..{i1 - 1}) checksum mismatch"
                digests.append(d)
        else:
            digests = [S.array_sha256(arr[...])]
    except Exception as exc:
        return f"{name}: cannot be read: {type(exc).__name__}: {exc}"
    if S.variable_sha256(name, arr.dtype, arr.shape, digests) != a[S.VAR_SHA]:
        return f"{name}: checksum mismatch (stored {a[S.VAR_SHA][:12]}...)"
    return None


def verify_dataset(path) -> list[str]:
    """Recompute every checksum from the stored chunks.

    **Returns:** one message per damaged variable (naming the variable and, for data variables,
    the chunk and its samples), plus one if the dataset digest no longer matches; ``[]`` if intact.
    """
    path = Path(path)
    attrs = S.read_group_attrs(path)
    problems = []
    try:
        with _workflow_files_expected():
            group = zarr.open_group(path, mode="r", zarr_format=3)
            arrays = dict(group.arrays())
    except Exception as exc:
        return [f"{path}: metadata unreadable: {type(exc).__name__}: {exc}"]
    listed = attrs.get(S.ATTR_CHECKSUMS, {})
    for name in sorted(set(listed) - set(arrays)):
        problems.append(f"{path}: {name}: variable missing from the store")
    checksums = {}
    nondet = set(attrs.get(S.ATTR_NONDET, []))
    for name, arr in sorted(arrays.items()):
        chunked = S.VAR_CHUNK_SHA in arr.attrs
        msg = _verify_array(name, arr, attrs[S.ATTR_CHUNK] if chunked else None)
        if msg is None and name in listed and arr.attrs[S.VAR_SHA] != listed[name]:
            msg = f"{name}: checksum attribute differs from the dataset's record"
        if msg:
            problems.append(f"{path}: {msg}")
        elif name not in nondet:
            checksums[name] = arr.attrs[S.VAR_SHA]
    if not problems:
        digest = S.dataset_digest_of(checksums, attrs[S.ATTR_INPUTS], attrs[S.ATTR_TARGETS])
        if digest != attrs[S.ATTR_DIGEST]:
            problems.append(f"{path}: dataset digest mismatch (variables added, removed or attributes edited)")
    return problems


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def inspect_dataset(path) -> str:
    """A human-readable summary: dims, variables (role, units), splits, solver stats, provenance."""
    path = Path(path)
    attrs = S.read_group_attrs(path)
    group = zarr.open_group(path, mode="r", zarr_format=3)
    ds = open_dataset(path)
    lines = [f"dataset {path}", f"  digest   {attrs[S.ATTR_DIGEST]}", f"  created  {attrs.get(S.ATTR_CREATED)}"]
    lines.append("  dims     " + ", ".join(f"{d}={n}" for d, n in ds.sizes.items()))
    lines.append(f"  chunks   {attrs[S.ATTR_CHUNK]} samples")
    lines.append("  splits   " + ", ".join(f"{k}={v}" for k, v in attrs[S.ATTR_SPLIT_SIZES].items()))
    lines.append(f"  inputs   {attrs[S.ATTR_INPUTS]}   targets {attrs[S.ATTR_TARGETS]}")
    lines.append("  variables")
    order = {"input": 0, "output": 1, "solver_stat": 2, "split": 3}
    for name in sorted(ds.data_vars, key=lambda n: (order.get(ds[n].attrs.get("role"), 4), n)):
        v = ds[name]
        extra = ""
        if S.VAR_MEAN in v.attrs:
            extra = f"  train mean={v.attrs[S.VAR_MEAN]:.4g} std={v.attrs[S.VAR_STD]:.4g}"
        lines.append(
            f"    {name:<16} {v.attrs.get('role', '?'):<12} {str(v.dtype):<8} ({', '.join(v.dims)})"
            f"  [{v.attrs.get('units', '?')}]  {v.attrs.get('long_name', '')}{extra}"
        )
    stats = [n for n in sorted(ds.data_vars) if ds[n].attrs.get("role") == "solver_stat"]
    if stats:
        lines.append("  solver statistics (over all samples and solves)")
        for name in stats:
            vals = np.asarray(group[name][...], dtype=np.float64)
            lines.append(
                f"    {name:<16} mean={vals.mean():.4g} min={vals.min():.4g} max={vals.max():.4g}"
                f" [{ds[name].attrs.get('units', '?')}]"
            )
    prov = {k: v for k, v in attrs.items() if not k.startswith("kryflow_")}
    if prov:
        lines.append("  provenance")
        for k, v in prov.items():
            text = json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else _fmt(v)
            if len(text) > 200:
                text = text[:197] + "..."
            lines.append(f"    {k}: {text}")
    ds.close()
    return "\n".join(lines)
