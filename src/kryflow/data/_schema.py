"""The kryflow dataset schema: names, attributes and checks shared by writer and readers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
ROLES = ("input", "output", "solver_stat")
SPLITS = ("train", "val", "test")
# int8 codes of the ``split`` variable (CF flag convention: flag_values / flag_meanings).
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}
SAMPLE_DIM = "sample"
SPLIT_VAR = "split"
TMP_MARKER = ".tmp-"

# Group attributes owned by kryflow; everything else in the group attrs is provenance.
ATTR_SCHEMA = "kryflow_schema_version"
ATTR_COMPLETE = "kryflow_complete"
ATTR_INPUTS = "kryflow_inputs"
ATTR_TARGETS = "kryflow_targets"
ATTR_NONDET = "kryflow_nondeterministic"
ATTR_DIGEST = "kryflow_digest"
ATTR_CREATED = "kryflow_created"
ATTR_CHUNK = "kryflow_chunk_samples"
ATTR_NUM = "kryflow_num_samples"
ATTR_SPLIT_SIZES = "kryflow_split_sizes"
ATTR_CHECKSUMS = "kryflow_checksums"
# Variable attributes owned by kryflow.
VAR_SHA = "sha256"
VAR_CHUNK_SHA = "chunk_sha256"
VAR_MEAN = "train_mean"
VAR_STD = "train_std"


class DatasetError(ValueError):
    """A dataset store is missing, incomplete, foreign or used wrongly; the message names it."""


@dataclass(frozen=True)
class VariableSpec:
    """One variable of a dataset, described per sample.

    **Arguments:**
    - dims: per-sample dimension names without ``sample``: ``("x", "y")`` for a field,
      ``("time", "x", "y")`` for a trajectory, ``()`` for a scalar, ``("solve",)`` for
      per-solve statistics.
    - long_name, units: CF-style description (units ``"1"`` for dimensionless).
    - role: ``"input"``, ``"output"`` or ``"solver_stat"``.
    - dtype: numpy dtype name of the stored values.
    """

    dims: tuple[str, ...]
    long_name: str
    units: str
    role: str
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(self.dims))
        if self.role not in ROLES:
            raise DatasetError(f"role {self.role!r} is not one of {ROLES}")
        if SAMPLE_DIM in self.dims:
            raise DatasetError(f"dims {self.dims} must not contain {SAMPLE_DIM!r}: it is added by the writer")
        if np.dtype(self.dtype).kind not in "biuf":
            raise DatasetError(
                f"dtype {self.dtype!r} is not numeric or bool; put constant strings such as the "
                "solver method in the dataset attrs instead"
            )


def assign_splits(num_samples: int, fractions=(0.7, 0.15, 0.15), seed: int = 0, block: int = 1) -> np.ndarray:
    """Random train/val/test membership, by sample or by contiguous block of samples.

    **Arguments:**
    - num_samples: N.
    - fractions: (train, val, test), summing to 1; sizes are rounded so that they add up to the
      number of units (samples, or blocks) and every split with a positive fraction gets at
      least one unit when there are enough.
    - seed: the permutation seed (same seed, same assignment).
    - block: assign whole runs of ``block`` consecutive samples (the last run may be shorter)
      to one split. In a drifting sequence neighbours are strongly correlated (correlation
      cos(drift_angle) at lag 1), so per-sample splits put near copies of every test sample
      into train; blocks keep them apart. With ``block`` equal to the store's chunk size,
      the val and test loaders also read only their own chunks.

    **Returns:** ``str`` array of shape (N,) with values ``"train"``, ``"val"``, ``"test"``.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise DatasetError(f"split fractions {tuple(fractions)} must be three non-negative numbers summing to 1")
    if num_samples < 1:
        raise DatasetError(f"num_samples must be positive, got {num_samples}")
    if int(block) != block or block < 1:
        raise DatasetError(f"split block must be a positive integer, got {block!r}")
    block = int(block)
    units = -(-num_samples // block)
    sizes = np.floor(fr * units).astype(int)
    # hand out the remainder to the largest fractional parts, then make sure non-empty splits
    rest = units - sizes.sum()
    for i in np.argsort(-(fr * units - sizes), kind="stable")[:rest]:
        sizes[i] += 1
    for i in range(3):
        if fr[i] > 0 and sizes[i] == 0 and units >= int((fr > 0).sum()):
            sizes[i] = 1
            sizes[int(np.argmax(sizes))] -= 1
    labels = np.repeat(np.array(SPLITS), sizes)
    rng = np.random.default_rng(seed)
    per_unit = labels[rng.permutation(units)]
    return np.repeat(per_unit, block)[:num_samples]


def array_sha256(values: np.ndarray) -> str:
    """sha256 of the values of an array (C order, little endian), independent of compression."""
    a = np.ascontiguousarray(values)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def variable_sha256(name: str, dtype, shape, chunk_digests: list[str]) -> str:
    """A variable's checksum: sha256 over its name, dtype, shape and its chunks' sha256 in order."""
    h = hashlib.sha256(f"{name}|{np.dtype(dtype).str}|{tuple(int(s) for s in shape)}|".encode())
    for d in chunk_digests:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def dataset_digest_of(checksums: dict[str, str], inputs, targets) -> str:
    """The dataset digest: sha256 over the (sorted) checksums of the deterministic variables."""
    payload = json.dumps(
        {"schema": SCHEMA_VERSION, "inputs": list(inputs), "targets": list(targets), "checksums": checksums},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def read_group_attrs(path: Path) -> dict:
    """Group attributes of a kryflow store, read from its ``zarr.json``; raises DatasetError."""
    path = Path(path)
    fix_missing = "generate it (snakemake / `kryflow data import`) or check the path"
    if TMP_MARKER in path.name:
        raise DatasetError(
            f"{path} is the temporary store of an unfinished or crashed write, not a dataset; delete it and "
            "regenerate"
        )
    if not path.exists():
        raise DatasetError(f"no dataset at {path}: {fix_missing}")
    meta_file = path / "zarr.json"
    if not path.is_dir() or not meta_file.is_file():
        raise DatasetError(f"{path} is not a zarr v3 store (no zarr.json): {fix_missing}")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable zarr.json ({exc})") from exc
    if meta.get("node_type") != "group":
        raise DatasetError(f"{path} is a zarr array, not a dataset group")
    attrs = meta.get("attributes", {})
    if ATTR_SCHEMA not in attrs:
        raise DatasetError(
            f"{path} is a zarr store but not a kryflow dataset (no {ATTR_SCHEMA!r} attribute); import "
            "external data with `kryflow data import`"
        )
    if attrs[ATTR_SCHEMA] > SCHEMA_VERSION:
        raise DatasetError(
            f"{path} has schema version {attrs[ATTR_SCHEMA]}, newer than this kryflow ({SCHEMA_VERSION}); "
            "upgrade kryflow"
        )
    if attrs.get(ATTR_COMPLETE) is not True:
        raise DatasetError(f"{path} is incomplete (no completion marker): delete it and regenerate")
    return attrs
