"""Streaming, crash-safe writer of one kryflow dataset store."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from . import _schema as S
from ._schema import DatasetError, VariableSpec


#: Whole chunks the writer buffers and writes together after the first (every chunk written costs
#: zarr a fixed price whatever its size, so fewer, larger writes pay less of it; measured in
#: benchmarks/README.md, "Generation jobs"), fewer where they would exceed :data:`WRITE_BYTES`.
WRITE_CHUNKS = 16
WRITE_BYTES = 32 * 2**20


def _compressors():
    # crc32c after zstd: a flipped byte in a chunk file fails on read instead of decoding to garbage.
    return (ZstdCodec(level=3), Crc32cCodec())


def _jsonable(value):
    """numpy scalars/arrays and paths in provenance become plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


class _Moments:
    """Streaming mean / variance (Chan et al. pairwise update) in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, v: np.ndarray) -> None:
        v = np.asarray(v, dtype=np.float64)
        nb = v.size
        if nb == 0:
            return
        mb = float(v.mean())
        m2b = float(((v - mb) ** 2).sum())
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else float("nan")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_writers(path: Path) -> None:
    """Delete temporary stores of writers of ``path`` on this host whose process has died."""
    host = socket.gethostname()
    for tmp in path.parent.glob(f"{path.name}{S.TMP_MARKER}*"):
        rest = tmp.name[len(path.name) + len(S.TMP_MARKER):]
        parts = rest.rsplit("-", 2)
        if len(parts) == 3:
            owner, pid, _ = parts
        elif len(parts) == 2:  # older name without the host
            owner, (pid, _) = host, parts
        else:
            continue
        if owner == host and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


class ZarrDatasetWriter:
    """Write a dataset sample by sample into one zarr v3 store, moved into place when complete.

    Samples are buffered in memory and written to a temporary store ``<path>.tmp-<id>``: the
    first chunk (``chunk_samples`` whole samples) through xarray, which lays the store out, as
    soon as it is full; later ones straight into its arrays, :data:`WRITE_CHUNKS` at a time. On a clean exit of the
    ``with`` block the writer adds checksums, normalisation statistics (train split only), the
    dataset digest and the completion marker, then renames the temporary store to ``path``.
    On an exception, or if fewer than ``num_samples`` samples were appended, the temporary
    store is removed and nothing appears at ``path``.

    **Arguments:**
    - path: the store, e.g. ``data/darcy.zarr``.
    - coords: ``{name: (dims, values, attrs)}`` physical coordinates, e.g. ``{"x": (("x",), xc, {"units": "1"})}``.
    - variables: ``{name: VariableSpec}``; every ``append`` supplies all of them.
    - num_samples, chunk_samples: N and the number of whole samples per chunk.
    - splits: ``str`` array (N,) of ``"train"``/``"val"``/``"test"`` (see ``assign_splits``).
    - inputs, targets: model input / target variables in channel order; all share the grid dims.
    - attrs: JSON-serialisable provenance (family, params, config, version, commit, ...).
    - nondeterministic: variables checksummed but left out of the digest: how the data was made
      (solver statistics, solve order), not what it is.
    - overwrite: replace an existing store at ``path``.
    - first_sample: the ``sample`` coordinate of the first sample (a part of a larger dataset
      starts at its offset; chunks then stay aligned with the whole dataset's).
    """

    def __init__(
        self,
        path,
        *,
        coords: dict[str, tuple[tuple[str, ...], np.ndarray, dict]],
        variables: dict[str, VariableSpec],
        num_samples: int,
        chunk_samples: int,
        splits: np.ndarray,
        inputs: list[str],
        targets: list[str],
        attrs: dict,
        nondeterministic: Iterable[str] = (),
        overwrite: bool = False,
        first_sample: int = 0,
    ) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.variables = dict(variables)
        self.num_samples = int(num_samples)
        self.chunk_samples = int(chunk_samples)
        self.inputs = list(inputs)
        self.targets = list(targets)
        self.nondeterministic = set(nondeterministic)
        self.first_sample = int(first_sample)
        self._check_arguments(coords, splits, attrs)
        self.coords = {k: (tuple(d), np.asarray(v), dict(a)) for k, (d, v, a) in coords.items()}
        self.splits = np.asarray(splits).astype(str)
        self.attrs = json.loads(json.dumps(attrs, default=_jsonable))
        self._check_target_path()

        self._sizes = {name: vals.shape[0] for name, (dims, vals, _) in self.coords.items() if len(dims) == 1}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._buffer: dict[str, np.ndarray] = {}
        self._count = 0  # samples appended
        self._fill = 0  # samples in the buffer
        self._cap: int | None = None  # samples the buffer holds (whole chunks)
        self._chunk_sha: dict[str, list[str]] = {name: [] for name in self.variables}
        self._chunk_sha[S.SPLIT_VAR] = []
        self._moments = {name: _Moments() for name in self.inputs + self.targets}
        _remove_dead_writers(self.path)
        # host and pid in the name: a later writer can tell a crashed writer's leftovers from a
        # live writer's store, also on a file system shared by cluster nodes
        self._tmp = self.path.with_name(
            f"{self.path.name}{S.TMP_MARKER}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ checks
    def _check_arguments(self, coords, splits, attrs) -> None:
        where = f"dataset {self.path}"
        if self.num_samples < 1 or self.chunk_samples < 1:
            raise DatasetError(f"{where}: num_samples and chunk_samples must be positive")
        for name, spec in self.variables.items():
            if not isinstance(spec, VariableSpec):
                raise DatasetError(f"{where}: variable {name!r} must be a VariableSpec")
            if name in (S.SPLIT_VAR, S.SAMPLE_DIM) or name in coords:
                raise DatasetError(f"{where}: variable name {name!r} is reserved or clashes with a coordinate")
        for kind, names, role in (("input", self.inputs, "input"), ("target", self.targets, "output")):
            if not names:
                raise DatasetError(f"{where}: at least one {kind} variable is needed")
            for name in names:
                if name not in self.variables:
                    raise DatasetError(
                        f"{where}: {kind} {name!r} is not a variable; known: {sorted(self.variables)}"
                    )
                if self.variables[name].role != role:
                    raise DatasetError(f"{where}: {kind} {name!r} must have role {role!r}")
        grid = self.variables[self.inputs[0]].dims
        if not grid:
            raise DatasetError(f"{where}: input {self.inputs[0]!r} has no grid dims")
        for name in self.inputs + self.targets:
            if self.variables[name].dims != grid:
                raise DatasetError(
                    f"{where}: inputs and targets must share the grid dims {grid}; "
                    f"{name!r} has {self.variables[name].dims}"
                )
        unknown = set(self.nondeterministic) - set(self.variables)
        if unknown:
            raise DatasetError(f"{where}: nondeterministic names unknown variables {sorted(unknown)}")
        splits = np.asarray(splits).astype(str)
        if splits.shape != (self.num_samples,):
            raise DatasetError(f"{where}: splits has shape {splits.shape}, expected ({self.num_samples},)")
        bad = set(np.unique(splits)) - set(S.SPLITS)
        if bad:
            raise DatasetError(f"{where}: unknown split labels {sorted(bad)}; use {S.SPLITS}")
        for key in attrs:
            if key.startswith("kryflow_"):
                raise DatasetError(f"{where}: attribute {key!r} is reserved for kryflow")
        for name, (dims, _, _) in coords.items():
            if S.SAMPLE_DIM in tuple(dims):
                raise DatasetError(
                    f"{where}: coordinate {name!r} runs along {S.SAMPLE_DIM!r}; store per-sample values as variables"
                )
        try:
            json.dumps(attrs, default=_jsonable)
        except TypeError as exc:
            raise DatasetError(f"{where}: attrs must be JSON-serialisable ({exc})") from exc

    def _check_target_path(self) -> None:
        p = self.path
        if not p.exists():
            if not p.parent.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
            return
        if not (p.is_dir() and (p / "zarr.json").is_file()):
            raise DatasetError(
                f"{p} exists and is not a zarr store; refusing to replace it (move it away or pick another path)"
            )
        if not self.overwrite:
            raise DatasetError(f"a dataset already exists at {p}; pass overwrite=True (--overwrite) to replace it")

    # ------------------------------------------------------------------ writing
    def __enter__(self) -> ZarrDatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.abort()

    def _sample_shape(self, name: str, value: np.ndarray) -> tuple[int, ...]:
        spec = self.variables[name]
        if name in self._shapes:
            return self._shapes[name]
        if value.ndim != len(spec.dims):
            raise DatasetError(
                f"dataset {self.path}: variable {name!r} has dims {spec.dims} per sample but got shape {value.shape}"
            )
        for dim, size in zip(spec.dims, value.shape):
            known = self._sizes.setdefault(dim, size)
            if known != size:
                raise DatasetError(
                    f"dataset {self.path}: variable {name!r} has size {size} along {dim!r}, expected {known} "
                    "(from its coordinate or an earlier variable)"
                )
        self._shapes[name] = tuple(value.shape)
        return self._shapes[name]

    def append(self, values: dict[str, np.ndarray]) -> None:
        """Add one sample: ``values[name]`` has the per-sample shape of every variable."""
        if self._closed:
            raise DatasetError(f"dataset {self.path}: writer is closed")
        if self._count >= self.num_samples:
            raise DatasetError(f"dataset {self.path}: all {self.num_samples} samples were already appended")
        missing = set(self.variables) - set(values)
        unknown = set(values) - set(self.variables)
        if missing or unknown:
            raise DatasetError(
                f"dataset {self.path}: sample {self._count} missing variables {sorted(missing)}, "
                f"unknown variables {sorted(unknown)}"
            )
        checked = {}
        for name, value in values.items():
            spec = self.variables[name]
            value = np.asarray(value)
            shape = self._sample_shape(name, value)
            if value.shape != shape:
                raise DatasetError(
                    f"dataset {self.path}: sample {self._count} variable {name!r} has shape {value.shape}, "
                    f"expected {shape}"
                )
            if spec.role != "solver_stat" and not np.all(np.isfinite(value)):
                raise DatasetError(f"dataset {self.path}: sample {self._count} variable {name!r} is not finite")
            checked[name] = value
        for name, value in checked.items():
            if name not in self._buffer:  # every shape is known now
                self._buffer[name] = np.empty((self._capacity(), *value.shape), dtype=self.variables[name].dtype)
            self._buffer[name][self._fill] = value
        split = self.splits[self._count]
        if split == "train":
            for name in self._moments:
                self._moments[name].add(self._buffer[name][self._fill])
        self._fill += 1
        self._count += 1
        if self._fill % self.chunk_samples == 0:
            self._checksum_chunk()
        # the first chunk lays the store out as soon as it is full; later ones are written in blocks
        if self._fill == (self._capacity() if self._started else self.chunk_samples):
            self._flush()

    def _capacity(self) -> int:
        """Samples the buffer holds: :data:`WRITE_CHUNKS` whole chunks, fewer where they would
        exceed :data:`WRITE_BYTES` (at least one); known from the first sample's shapes."""
        if self._cap is None:
            per_chunk = self.chunk_samples * sum(int(np.prod(self._shapes[n])) * np.dtype(spec.dtype).itemsize
                                                 for n, spec in self.variables.items())
            self._cap = self.chunk_samples * max(1, min(WRITE_CHUNKS, WRITE_BYTES // max(1, per_chunk)))
        return self._cap

    def _checksum_chunk(self) -> None:
        """Checksums of the buffer's last chunk (the last ``fill % chunk_samples`` samples when partial)."""
        m = self._fill % self.chunk_samples or self.chunk_samples
        j0 = self._fill - m
        for name in self.variables:
            self._chunk_sha[name].append(S.array_sha256(self._buffer[name][j0:self._fill]))
        i0 = self._count - m
        codes = np.array([S.SPLIT_CODES[s] for s in self.splits[i0 : i0 + m]], dtype=np.int8)
        self._chunk_sha[S.SPLIT_VAR].append(S.array_sha256(codes))

    def _flush(self) -> None:
        n, i0 = self._fill, self._count - self._fill
        if n == 0:
            return
        if n % self.chunk_samples:  # the last, partial chunk
            self._checksum_chunk()
        data_vars = {}
        for name, spec in self.variables.items():
            attrs = {"long_name": spec.long_name, "units": spec.units, "role": spec.role}
            data_vars[name] = ((S.SAMPLE_DIM, *spec.dims), self._buffer[name][:n], attrs)
        codes = np.array([S.SPLIT_CODES[s] for s in self.splits[i0 : i0 + n]], dtype=np.int8)
        data_vars[S.SPLIT_VAR] = (
            (S.SAMPLE_DIM,),
            codes,
            {
                "long_name": "dataset split",
                "units": "1",
                "role": "split",
                "flag_values": list(S.SPLIT_CODES.values()),
                "flag_meanings": " ".join(S.SPLITS),
            },
        )
        sample = np.arange(self.first_sample + i0, self.first_sample + i0 + n, dtype=np.int64)
        if not self._started:
            coords = {k: (d, v, a) for k, (d, v, a) in self.coords.items()}
            coords[S.SAMPLE_DIM] = ((S.SAMPLE_DIM,), sample, {"long_name": "sample index", "units": "1"})
            ds = xr.Dataset(data_vars, coords=coords)
            encoding = {
                name: {"chunks": (self.chunk_samples, *ds[name].shape[1:]), "compressors": _compressors()}
                for name in data_vars
            }
            encoding[S.SAMPLE_DIM] = {"chunks": (self.chunk_samples,)}
            ds.to_zarr(self._tmp, mode="w-", zarr_format=3, consolidated=False, encoding=encoding)
            # xarray lays out the store (metadata, coordinates, encodings) from the first chunk; later
            # chunks go straight into arrays grown to every sample now: an xarray append re-reads and
            # resizes the whole store per chunk (~0.15 s for a generation store, more than the solves)
            group = zarr.open_group(self._tmp, mode="r+", zarr_format=3)
            self._arrays = {name: group[name] for name in [*data_vars, S.SAMPLE_DIM]}
            for arr in self._arrays.values():
                arr.resize((self.num_samples, *arr.shape[1:]))
            self._started = True
        else:
            for name, arr in self._arrays.items():
                arr[i0:i0 + n] = sample if name == S.SAMPLE_DIM else data_vars[name][1]
        self._fill = 0

    def finalize(self) -> Path:
        """Complete the store and move it to ``path``; returns ``path``."""
        if self._closed:
            return self.path
        try:
            if self._count != self.num_samples:
                raise DatasetError(
                    f"dataset {self.path}: only {self._count} of {self.num_samples} samples were appended; "
                    "nothing was written"
                )
            self._flush()
            self._write_metadata()
            self._move_into_place()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def _write_metadata(self) -> None:
        group = zarr.open_group(self._tmp, mode="r+", zarr_format=3)
        checksums: dict[str, str] = {}  # deterministic variables only: these make the digest
        every: dict[str, str] = {}
        for name, digests in self._chunk_sha.items():
            arr = group[name]
            sha = S.variable_sha256(name, arr.dtype, arr.shape, digests)
            new = {S.VAR_SHA: sha, S.VAR_CHUNK_SHA: digests}
            if name in self._moments and self._moments[name].n:
                new[S.VAR_MEAN] = self._moments[name].mean
                new[S.VAR_STD] = self._moments[name].std
            arr.attrs.update(new)
            every[name] = sha
            if name not in self.nondeterministic:
                checksums[name] = sha
        for name in list(self.coords) + [S.SAMPLE_DIM]:
            arr = group[name]
            sha = S.variable_sha256(name, arr.dtype, arr.shape, [S.array_sha256(arr[...])])
            arr.attrs.update({S.VAR_SHA: sha})
            checksums[name] = every[name] = sha
        sizes = {s: int(np.sum(self.splits == s)) for s in S.SPLITS}
        # group attributes are set here, not at creation: xarray's appends replace them
        group.attrs.update(
            {
                **self.attrs,
                S.ATTR_SCHEMA: S.SCHEMA_VERSION,
                S.ATTR_INPUTS: self.inputs,
                S.ATTR_TARGETS: self.targets,
                S.ATTR_NONDET: sorted(self.nondeterministic),
                S.ATTR_CHUNK: self.chunk_samples,
                S.ATTR_NUM: self.num_samples,
                S.ATTR_SPLIT_SIZES: sizes,
                S.ATTR_CHECKSUMS: dict(sorted(every.items())),
                S.ATTR_DIGEST: S.dataset_digest_of(checksums, self.inputs, self.targets),
                S.ATTR_CREATED: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            }
        )
        # the completion marker goes last: a store without it is never treated as a dataset
        group.attrs.update({S.ATTR_COMPLETE: True})

    def _move_into_place(self) -> None:
        old = None
        if self.path.exists():
            self._check_target_path()  # may have appeared meanwhile; raises unless overwrite
            old = self.path.with_name(f"{self.path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.path, old)
        os.replace(self._tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Drop the temporary store; nothing is left at ``path``."""
        self._closed = True
        self._buffer.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)
