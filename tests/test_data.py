"""Tests of kryflow.data: schema, streaming crash-safe writer, integrity tools, bad input."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from kryflow.data import (
    DatasetError,
    VariableSpec,
    ZarrDatasetWriter,
    assign_splits,
    dataset_digest,
    grid_shape,
    inspect_dataset,
    normalization_stats,
    open_dataset,
    verify_dataset,
    write_synthetic_dataset,
)
from kryflow.data._synthetic import synthetic_sample, synthetic_spec


def _writer(path, n=20, chunk=8, grid=(8, 8), **kw):
    coords, variables = synthetic_spec(grid)
    args = dict(
        coords=coords,
        variables=variables,
        num_samples=n,
        chunk_samples=chunk,
        splits=assign_splits(n),
        inputs=["a", "f"],
        targets=["u"],
        attrs={"family": "synthetic"},
        nondeterministic=["seconds"],
    )
    args.update(kw)
    return ZarrDatasetWriter(path, **args)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "synthetic.zarr"
    return write_synthetic_dataset(path, num_samples=40, grid=(8, 8), chunk_samples=8, time_steps=3)


# ---------------------------------------------------------------------------- schema
def test_schema_dims_roles_units_and_chunks(store):
    ds = open_dataset(store)
    assert dict(ds.sizes) == {"sample": 40, "x": 8, "y": 8, "time": 3, "solve": 2}
    assert ds["u_traj"].dims == ("sample", "time", "x", "y")
    assert ds["residual"].dims == ("sample", "solve")
    assert ds["iterations"].dtype == np.int32
    for name in ("a", "f", "u", "u_traj", "iterations", "residual", "seconds", "split"):
        assert {"long_name", "units", "role", "sha256"} <= set(ds[name].attrs), name
    assert ds["a"].attrs["role"] == "input" and ds["u"].attrs["role"] == "output"
    assert ds["iterations"].attrs["role"] == "solver_stat"
    assert ds["x"].attrs["units"] == "m" and ds["time"].attrs["units"] == "s"
    # chunks are blocks of whole samples
    group = zarr.open_group(store, mode="r")
    assert group["u_traj"].chunks == (8, 3, 8, 8)
    assert group["a"].chunks == (8, 8, 8)
    # split stored in the dataset with CF flags; provenance and bookkeeping in attrs
    assert ds["split"].attrs["flag_meanings"] == "train val test"
    assert ds.attrs["family"] == "synthetic" and ds.attrs["config"] == {"num_samples": 40}
    assert ds.attrs["kryflow_complete"] is True and ds.attrs["kryflow_created"]
    assert ds.attrs["kryflow_split_sizes"] == {"train": 28, "val": 6, "test": 6}
    assert grid_shape(store) == (8, 8)


def test_values_roundtrip(store):
    ds = open_dataset(store)
    for i in (0, 13, 39):
        ref = synthetic_sample(i, (8, 8), 0, time_steps=3)
        for name, value in ref.items():
            np.testing.assert_array_equal(ds[name].values[i], np.asarray(value).astype(ds[name].dtype))


def test_normalization_stats_from_train_split_only(store):
    ds = open_dataset(store)
    train = ds["split"].values == 0
    stats = normalization_stats(store)
    assert stats["x_mean"].shape == (2,) and stats["y_std"].shape == (1,) and stats["x_mean"].dtype == np.float32
    for k, name in enumerate(["a", "f"]):
        vals = ds[name].values[train].astype(np.float64)
        np.testing.assert_allclose(stats["x_mean"][k], vals.mean(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["x_std"][k], vals.std(), rtol=1e-5)
    allvals = ds["u"].values.astype(np.float64)
    np.testing.assert_allclose(stats["y_mean"][0], allvals[train].mean(), rtol=1e-5)
    assert not np.isclose(stats["y_mean"][0], allvals[~train].mean(), rtol=1e-6)


def test_assign_splits():
    s = assign_splits(100, (0.7, 0.15, 0.15), seed=3)
    assert s.shape == (100,)
    assert [int((s == k).sum()) for k in ("train", "val", "test")] == [70, 15, 15]
    np.testing.assert_array_equal(s, assign_splits(100, seed=3))
    assert not np.array_equal(s, assign_splits(100, seed=4))
    small = assign_splits(5)
    assert {"train", "val", "test"} <= set(small)
    with pytest.raises(DatasetError):
        assign_splits(10, (0.5, 0.5, 0.5))


def test_assign_splits_in_blocks_keeps_runs_together():
    s = assign_splits(96, (0.75, 0.125, 0.125), seed=0, block=16)
    runs = s.reshape(6, 16)
    assert (runs == runs[:, :1]).all(), "a block was split across train/val/test"
    assert [int((runs[:, 0] == k).sum()) for k in ("train", "val", "test")] == [4, 1, 1]
    # a partial last block and the per-sample case
    t = assign_splits(10, (0.6, 0.2, 0.2), seed=1, block=3)
    assert t.shape == (10,)
    assert all(len(set(t[i : i + 3])) == 1 for i in range(0, 10, 3))
    np.testing.assert_array_equal(assign_splits(50, seed=2, block=1), assign_splits(50, seed=2))
    with pytest.raises(DatasetError, match="split block"):
        assign_splits(10, block=0)


def test_inspect_lists_dims_splits_stats_provenance(store):
    text = inspect_dataset(store)
    for needle in ("sample=40", "train=28", "val=6", "test=6", "iterations", "mean=", "max=", "family: synthetic",
                   "input", "solver_stat", "[1]", dataset_digest(store)):
        assert needle in text, needle


# ---------------------------------------------------------------------------- determinism
def test_same_input_gives_identical_checksums_and_digest(tmp_path):
    p1 = write_synthetic_dataset(tmp_path / "one.zarr", num_samples=20, chunk_samples=6, seed=1)
    p2 = write_synthetic_dataset(tmp_path / "two.zarr", num_samples=20, chunk_samples=6, seed=1)
    g1, g2 = zarr.open_group(p1, mode="r"), zarr.open_group(p2, mode="r")
    names = sorted(n for n, _ in g1.arrays())
    assert names == sorted(n for n, _ in g2.arrays())
    for name in names:
        assert g1[name].attrs["sha256"] == g2[name].attrs["sha256"], name
    assert dataset_digest(p1) == dataset_digest(p2)
    a1, a2 = open_dataset(p1).attrs, open_dataset(p2).attrs
    assert a1["kryflow_checksums"] == a2["kryflow_checksums"] and len(a1["kryflow_checksums"]) == len(names)
    p3 = write_synthetic_dataset(tmp_path / "three.zarr", num_samples=20, chunk_samples=6, seed=2)
    assert dataset_digest(p3) != dataset_digest(p1)


def test_numpy_provenance_is_stored_as_json(tmp_path):
    attrs = {"family": "darcy", "params": {"n": np.int64(3), "k": np.float32(0.5), "v": np.arange(2)}}
    with _writer(tmp_path / "p.zarr", n=2, chunk=2, splits=np.array(["train", "test"]), attrs=attrs) as w:
        for i in range(2):
            w.append(synthetic_sample(i, (8, 8), 0))
    assert open_dataset(tmp_path / "p.zarr").attrs["params"] == {"n": 3, "k": 0.5, "v": [0, 1]}


def test_nondeterministic_variable_excluded_from_digest(tmp_path):
    digests, secs = [], []
    for k in range(2):
        with _writer(tmp_path / f"{k}.zarr", n=10) as w:
            for i in range(10):
                sample = synthetic_sample(i, (8, 8), 0)
                sample["seconds"] = np.float64(k + i)  # wall time differs run to run
                w.append(sample)
        digests.append(dataset_digest(tmp_path / f"{k}.zarr"))
        secs.append(zarr.open_array(tmp_path / f"{k}.zarr" / "seconds", mode="r").attrs["sha256"])
    assert digests[0] == digests[1]
    assert secs[0] != secs[1]


# ---------------------------------------------------------------------------- crash safety
def test_exception_leaves_nothing(tmp_path):
    path = tmp_path / "crash.zarr"
    with pytest.raises(RuntimeError, match="solver blew up"):
        with _writer(path, n=20, chunk=4) as w:
            for i in range(10):  # several chunks already on disk
                w.append(synthetic_sample(i, (8, 8), 0))
            raise RuntimeError("solver blew up")
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_too_few_samples_is_an_error_and_leaves_nothing(tmp_path):
    path = tmp_path / "short.zarr"
    with pytest.raises(DatasetError, match="only 5 of 20"):
        with _writer(path, n=20) as w:
            for i in range(5):
                w.append(synthetic_sample(i, (8, 8), 0))
    assert not path.exists() and _leftovers(tmp_path) == []


def test_killed_writer_never_looks_complete(tmp_path):
    # a process killed mid-write leaves only its temporary store, which readers refuse
    path = tmp_path / "killed.zarr"
    w = _writer(path, n=20, chunk=4)
    for i in range(9):
        w.append(synthetic_sample(i, (8, 8), 0))
    assert not path.exists()
    (tmp,) = [tmp_path / n for n in _leftovers(tmp_path)]
    assert (tmp / "u" / "zarr.json").exists()  # chunks are streamed to disk as they fill
    with pytest.raises(DatasetError, match="temporary store"):
        open_dataset(tmp)
    with pytest.raises(DatasetError, match="no dataset at"):
        open_dataset(path)
    # even renamed by hand, the missing completion marker gives it away
    os.replace(tmp, path)
    with pytest.raises(DatasetError):
        open_dataset(path)
    w.abort()


def test_writer_memory_is_bounded_by_chunks(tmp_path):
    """The writer holds one block of WRITE_CHUNKS chunks, whatever the number of samples."""
    from kryflow.data._writer import WRITE_CHUNKS

    n, grid, chunk = 1000, (32, 32), 10
    per_sample = 3 * 4 * grid[0] * grid[1]  # three float32 fields
    block = WRITE_CHUNKS * chunk * per_sample
    assert n * per_sample >= 6 * block  # the store is far larger than what may be held
    samples = [synthetic_sample(i, grid, 0) for i in range(3)]
    tracemalloc.start()
    with _writer(tmp_path / "big.zarr", n=n, chunk=chunk, grid=grid) as w:
        for i in range(n):
            w.append(samples[i % 3])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * block, (peak, block, n * per_sample)


# ---------------------------------------------------------------------------- overwrite
def test_existing_store_not_overwritten_unless_asked(tmp_path, store):
    path = write_synthetic_dataset(tmp_path / "d.zarr", num_samples=10, seed=0)
    digest = dataset_digest(path)
    with pytest.raises(DatasetError, match=r"already exists at .*d\.zarr.*overwrite"):
        write_synthetic_dataset(path, num_samples=10, seed=5)
    assert dataset_digest(path) == digest
    write_synthetic_dataset(path, num_samples=10, seed=5, overwrite=True)
    assert dataset_digest(path) != digest and verify_dataset(path) == []
    assert _leftovers(tmp_path) == []
    foreign = tmp_path / "notes.zarr"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a zarr store"):
        write_synthetic_dataset(foreign, num_samples=10, overwrite=True)
    assert (foreign / "important.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------- verify
def _copy(store, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "copy.zarr"
    shutil.copytree(store, dst)
    return dst


def test_verify_clean_store(store):
    assert verify_dataset(store) == []


def test_verify_catches_flipped_byte_and_names_variable(store, tmp_path):
    path = _copy(store, tmp_path)
    chunk = path / "u" / "c" / "2" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    problems = verify_dataset(path)
    assert len(problems) == 1
    assert "u: chunk 2 (samples 16..23)" in problems[0] and str(path) in problems[0]


def test_verify_catches_validly_encoded_but_changed_values(store, tmp_path):
    # a chunk rewritten with well-formed data (passes crc32c) is caught by the content checksum
    path = _copy(store, tmp_path)
    arr = zarr.open_array(path / "iterations", mode="r+")
    arr[33] = arr[33] + 1
    problems = verify_dataset(path)
    assert problems == [f"{path}: iterations: chunk 4 (samples 32..39) checksum mismatch"]


def test_verify_catches_missing_chunk_and_removed_variable(store, tmp_path):
    path = _copy(store, tmp_path)
    (path / "a" / "c" / "0" / "0" / "0").unlink()
    problems = verify_dataset(path)
    assert len(problems) == 1 and ": a: chunk 0" in problems[0]
    import shutil

    shutil.rmtree(path / "iterations")
    problems = verify_dataset(path)
    assert any(p.endswith("iterations: variable missing from the store") for p in problems), problems


# ---------------------------------------------------------------------------- bad input
def test_open_missing_and_foreign_stores(tmp_path):
    with pytest.raises(DatasetError, match=r"no dataset at .*nothing\.zarr"):
        open_dataset(tmp_path / "nothing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not a zarr v3 store"):
        open_dataset(tmp_path / "plain")
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"v": (("x",), np.arange(3.0))}).to_zarr(foreign, zarr_format=3, consolidated=False)
    with pytest.raises(DatasetError, match=r"foreign\.zarr is a zarr store but not a kryflow dataset"):
        open_dataset(foreign)
    with pytest.raises(DatasetError, match="not a kryflow dataset"):
        verify_dataset(foreign)
    with pytest.raises(DatasetError):
        inspect_dataset(foreign)


def test_open_incomplete_marker_and_wrong_schema(store, tmp_path):
    path = _copy(store, tmp_path)
    meta_file = path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["kryflow_complete"] = False
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="incomplete"):
        open_dataset(path)
    meta["attributes"]["kryflow_complete"] = True
    meta["attributes"]["kryflow_inputs"] = ["a", "kappa"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"wrong schema.*kappa"):
        open_dataset(path)


def test_append_rejects_unknown_missing_and_misshapen(tmp_path):
    path = tmp_path / "bad.zarr"
    w = _writer(path, n=4)
    sample = synthetic_sample(0, (8, 8), 0)
    with pytest.raises(DatasetError, match=r"unknown variables \['kappa'\]"):
        w.append({**sample, "kappa": np.zeros((8, 8))})
    with pytest.raises(DatasetError, match=r"missing variables \['u'\]"):
        w.append({k: v for k, v in sample.items() if k != "u"})
    with pytest.raises(DatasetError, match=r"'u' has size 16 along 'x', expected 8"):
        w.append({**sample, "u": np.zeros((16, 8))})
    with pytest.raises(DatasetError, match="not finite"):
        w.append({**sample, "u": np.full((8, 8), np.nan)})
    w.abort()
    assert not path.exists() and _leftovers(tmp_path) == []


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match=r"target 'v' is not a variable"):
        _writer(tmp_path / "x.zarr", targets=["v"])
    with pytest.raises(DatasetError, match=r"target 'residual' must have role 'output'"):
        _writer(tmp_path / "x.zarr", targets=["residual"])
    coords, variables = synthetic_spec((8, 8), time_steps=2)
    with pytest.raises(DatasetError, match=r"must share the grid dims.*'u_traj' has \('time', 'x', 'y'\)"):
        _writer(tmp_path / "x.zarr", coords=coords, variables=variables, targets=["u_traj"])
    with pytest.raises(DatasetError, match="unknown split labels"):
        _writer(tmp_path / "x.zarr", n=3, splits=np.array(["train", "dev", "test"]))
    with pytest.raises(DatasetError, match="reserved"):
        _writer(tmp_path / "x.zarr", attrs={"kryflow_digest": "x"})
    with pytest.raises(DatasetError, match="JSON"):
        _writer(tmp_path / "x.zarr", attrs={"solver": object()})
    with pytest.raises(DatasetError, match="role"):
        VariableSpec(("x",), "v", "1", "target")
    assert not (tmp_path / "x.zarr").exists()


def test_a_workflow_made_store_opens_without_warnings(tmp_path):
    """Snakemake touches .snakemake_timestamp inside every directory output; opening, inspecting,
    verifying and loading such a store prints no warning."""
    import warnings

    from kryflow.data import inspect_dataset, make_loader, write_synthetic_dataset

    store = write_synthetic_dataset(tmp_path / "wf.zarr", num_samples=8, grid=(4, 4), chunk_samples=4)
    (store / ".snakemake_timestamp").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_dataset(store).close()
        assert verify_dataset(store) == []
        assert "digest" in inspect_dataset(store)
        assert len(list(make_loader(store, "train", batch_size=2, shuffle=False))) > 0
