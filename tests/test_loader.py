"""Tests of the torch loader and the neuraloperator importer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kryflow.data import (
    ChunkReader,
    DatasetError,
    dataset_digest,
    grid_shape,
    import_neuraloperator_darcy,
    make_loader,
    normalization_stats,
    open_dataset,
    split_indices,
    verify_dataset,
    write_synthetic_dataset,
)

# ../shared/peer-data next to the repository, or KRYFLOW_PEER_DATA; never inside the repository
PEER = Path(
    os.environ.get("KRYFLOW_PEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "peer-data")
) / "neuraloperator-darcy"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("loader") / "synthetic.zarr"
    return write_synthetic_dataset(path, num_samples=60, grid=(8, 8), chunk_samples=8)


def _collect(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def _reference(store, split):
    ds = open_dataset(store)
    idx = split_indices(store, split)
    x = np.stack([ds["a"].values[idx], ds["f"].values[idx]], axis=1)
    y = ds["u"].values[idx][:, None]
    return x, y


def _rows(t) -> list[bytes]:
    return sorted(r.numpy().tobytes() for r in t)


@pytest.mark.parametrize("in_memory", [True, False])
def test_batches_are_physical_values_in_channel_order(store, in_memory):
    loader = make_loader(store, "train", batch_size=5, shuffle=False, in_memory=in_memory)
    x_ref, y_ref = _reference(store, "train")
    assert loader.num_samples == loader.split_size == 42
    assert len(loader) == 9
    batches = list(loader)
    assert len(batches) == 9 and batches[0][0].shape == (5, 2, 8, 8) and batches[-1][0].shape == (2, 2, 8, 8)
    assert batches[0][1].shape == (5, 1, 8, 8) and batches[0][0].dtype == torch.float32
    x, y = _collect(batches)
    np.testing.assert_array_equal(x.numpy(), x_ref)  # unshuffled: store order
    np.testing.assert_array_equal(y.numpy(), y_ref)


@pytest.mark.parametrize("in_memory", [True, False])
def test_shuffle_is_a_permutation_deterministic_per_seed_and_epoch(store, in_memory):
    def epoch(seed, e=None):
        loader = make_loader(store, "train", batch_size=4, shuffle=True, seed=seed, in_memory=in_memory)
        if e is not None:
            loader.set_epoch(e)
        return loader, _collect(loader)

    loader, (x0, y0) = epoch(0)
    x_ref, _ = _reference(store, "train")
    assert _rows(x0) == _rows(torch.from_numpy(x_ref))  # every sample exactly once
    assert not np.array_equal(x0.numpy(), x_ref)
    _, (x0b, _) = epoch(0)
    assert torch.equal(x0, x0b)  # same seed, same order
    _, (x1, _) = epoch(1)
    assert not torch.equal(x0, x1)
    x_next, _ = _collect(loader)  # a second pass over the same loader is epoch 1
    assert torch.equal(x_next, epoch(0, e=1)[1][0])
    # x and y stay paired under shuffling
    ds = open_dataset(store)
    u_of = {ds["a"].values[i].tobytes(): ds["u"].values[i] for i in range(60)}
    for xi, yi in zip(x0, y0):
        np.testing.assert_array_equal(u_of[xi[0].numpy().tobytes()], yi[0].numpy())


def test_drop_last_and_val_test_splits(store):
    loader = make_loader(store, "train", batch_size=5, shuffle=True, drop_last=True, in_memory=False)
    assert len(loader) == 8 and all(x.shape[0] == 5 for x, _ in loader)
    assert len(list(loader)) == 8
    for split, n in (("val", 9), ("test", 9)):
        loader = make_loader(store, split, batch_size=4, shuffle=False)
        assert loader.num_samples == n
        x, _ = _collect(loader)
        np.testing.assert_array_equal(x.numpy(), _reference(store, split)[0])
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        make_loader(store, "dev", batch_size=4, shuffle=False)


@pytest.mark.parametrize("concurrent", [True, False])
def test_streaming_reads_whole_chunks(store, concurrent):
    reads = []

    class AsyncRecorder:
        def __init__(self, arr):
            self.arr = arr

        async def getitem(self, key):
            reads.append(key)
            return await self.arr.getitem(key)

    class Recorder:
        def __init__(self, arr):
            self.arr = arr
            self.shape = arr.shape
            self._async_array = AsyncRecorder(arr._async_array) if concurrent else None

        def __getitem__(self, key):
            reads.append(key)
            return self.arr[key]

    reader = ChunkReader(store, "train")
    xs, ys = reader._open()
    reader._arrays = ([Recorder(a) for a in xs], [Recorder(a) for a in ys])
    for k in range(len(reader)):
        reader[k]
    assert len(reads) == 3 * len(reader)  # one read per chunk and variable
    assert all(r.start % 8 == 0 and r.stop == min(r.start + 8, 60) for r in reads)


def test_workers_give_the_same_batches(store):
    kw = dict(batch_size=6, shuffle=True, seed=3, in_memory=False)
    serial = make_loader(store, "train", num_workers=0, **kw)
    parallel = make_loader(store, "train", num_workers=2, **kw)
    for _ in range(2):  # workers persist across epochs and follow each epoch's order
        x0, y0 = _collect(serial)
        x2, y2 = _collect(parallel)
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert (parallel.in_channels, parallel.out_channels, parallel.grid_shape) == (2, 1, (8, 8))


def test_in_memory_auto_threshold(store, monkeypatch):
    import kryflow.data._loader as L

    assert make_loader(store, "train", batch_size=4, shuffle=False).in_memory
    monkeypatch.setattr(L, "IN_MEMORY_LIMIT_BYTES", 100)
    assert not make_loader(store, "train", batch_size=4, shuffle=False).in_memory


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("in_memory", [True, False])
def test_batches_on_cuda(store, in_memory):
    loader = make_loader(store, "train", batch_size=8, shuffle=True, in_memory=in_memory, device="cuda")
    x, y = next(iter(loader))
    assert x.is_cuda and y.is_cuda


def test_loader_bad_store(tmp_path):
    with pytest.raises(DatasetError, match="no dataset at"):
        make_loader(tmp_path / "missing.zarr", "train", batch_size=4, shuffle=False)


# ---------------------------------------------------------------------------- neuraloperator import
needs_peer = pytest.mark.skipif(
    not (PEER / "darcy_train_16.pt").exists(),
    reason=f"neuraloperator Darcy files not found at {PEER} (peer data lives outside the repository)",
)


@needs_peer
def test_import_neuraloperator_darcy(tmp_path):
    out = import_neuraloperator_darcy(
        PEER / "darcy_train_16.pt", PEER / "darcy_test_16.pt", tmp_path / "nop_darcy.zarr",
        test_hi_pt=PEER / "darcy_test_32.pt",
    )
    hi = tmp_path / "nop_darcy_32.zarr"
    assert verify_dataset(out) == [] and verify_dataset(hi) == []
    ds = open_dataset(out)
    assert ds.attrs["kryflow_split_sizes"] == {"train": 900, "val": 100, "test": 50}
    assert grid_shape(out) == (16, 16) and grid_shape(hi) == (32, 32)
    raw = torch.load(PEER / "darcy_train_16.pt", weights_only=True)
    np.testing.assert_array_equal(ds["a"].values[:1000], raw["x"].float().numpy())
    np.testing.assert_array_equal(ds["u"].values[:1000], raw["y"].numpy())
    assert ds["a"].attrs["role"] == "input" and ds["u"].attrs["role"] == "output"
    assert "darcy_train_16.pt" in ds.attrs["source_files"]
    stats = normalization_stats(out)
    np.testing.assert_allclose(stats["y_mean"][0], raw["y"].numpy()[ds["split"].values[:1000] == 0].mean(), rtol=1e-5)
    x, y = next(iter(make_loader(hi, "test", batch_size=50, shuffle=False)))
    assert x.shape == (50, 1, 32, 32) and y.shape == (50, 1, 32, 32)
    with pytest.raises(DatasetError, match="no train split"):
        normalization_stats(hi)
    # same files, same digest; nothing replaced unless asked
    again = import_neuraloperator_darcy(
        PEER / "darcy_train_16.pt", PEER / "darcy_test_16.pt", tmp_path / "again.zarr"
    )
    assert dataset_digest(again) == dataset_digest(out)
    with pytest.raises(DatasetError, match="already exists"):
        import_neuraloperator_darcy(PEER / "darcy_train_16.pt", PEER / "darcy_test_16.pt", out)
    # the second store already exists: nothing is written, not even the first store
    with pytest.raises(DatasetError, match=r"already exists at .*fresh_32\.zarr"):
        (tmp_path / "fresh_32.zarr").mkdir()
        import_neuraloperator_darcy(
            PEER / "darcy_train_16.pt", PEER / "darcy_test_16.pt", tmp_path / "fresh.zarr",
            test_hi_pt=PEER / "darcy_test_32.pt",
        )
    assert not (tmp_path / "fresh.zarr").exists()


@needs_peer
def test_import_rejects_mismatched_resolutions(tmp_path):
    with pytest.raises(DatasetError, match="resolution mismatch"):
        import_neuraloperator_darcy(PEER / "darcy_train_16.pt", PEER / "darcy_test_32.pt", tmp_path / "bad.zarr")
    with pytest.raises(DatasetError, match="not found"):
        import_neuraloperator_darcy(PEER / "nope.pt", PEER / "darcy_test_16.pt", tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()
