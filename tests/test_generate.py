"""Dataset generation through its public entry point: determinism, statistics, flagged solves."""

from __future__ import annotations

import numpy as np
import pytest

from kryflow.data import dataset_digest, open_dataset, verify_dataset
from kryflow.data.generate import generate_dataset

SPEC = dict(family="darcy", params={"n": 12, "dim": 2, "relation": "drift"}, num_samples=10, seed=3,
            chunk_samples=4, splits=(0.6, 0.2, 0.2),
            solver={"method": "rcg", "preconditioner": "jacobi", "rtol": 1e-8, "recycle_dim": 4})


def test_same_config_and_seed_give_the_same_digest(tmp_path):
    a = generate_dataset(tmp_path / "a.zarr", progress=False, **SPEC)
    b = generate_dataset(tmp_path / "b.zarr", progress=False, **SPEC)
    assert a["digest"] == b["digest"] == dataset_digest(tmp_path / "a.zarr")
    c = generate_dataset(tmp_path / "c.zarr", progress=False, **{**SPEC, "seed": 4})
    assert c["digest"] != a["digest"]
    assert verify_dataset(tmp_path / "a.zarr") == []


def test_every_solve_is_recorded_and_meets_its_tolerance(tmp_path):
    totals = generate_dataset(tmp_path / "d.zarr", progress=False, **SPEC)
    ds = open_dataset(tmp_path / "d.zarr")
    assert ds["solver_iterations"].shape == (10, 1)
    assert float(ds["solver_rel_residual"].max()) <= 1e-8
    assert int(ds["solver_converged"].min()) == 1
    assert totals["iterations"] == int(ds["solver_iterations"].sum()) and totals["flagged"] == 0


def test_missed_tolerance_raises_or_is_flagged_never_silent(tmp_path):
    tight = {**SPEC, "solver": {"method": "cg", "preconditioner": "none", "rtol": 1e-12, "maxiter": 3}}
    with pytest.raises(Exception, match="maxiter|converge"):
        generate_dataset(tmp_path / "e.zarr", progress=False, **tight)
    assert not (tmp_path / "e.zarr").exists()
    flag = {**tight, "solver": {**tight["solver"], "on_nonconvergence": "flag"}}
    totals = generate_dataset(tmp_path / "f.zarr", progress=False, **flag)
    ds = open_dataset(tmp_path / "f.zarr")
    assert totals["flagged"] == 10 and int(np.asarray(ds["solver_converged"]).max()) == 0


def test_auto_takes_the_measured_default_strategy(tmp_path):
    from kryflow.pdes import build_family
    from kryflow.solvers import default_strategy

    spec = {**SPEC, "solver": {"method": "auto"}}
    generate_dataset(tmp_path / "g.zarr", progress=False, **spec)
    ds = open_dataset(tmp_path / "g.zarr")
    expected = default_strategy(build_family("darcy", **SPEC["params"]))
    stored = ds.attrs["solver"]
    assert stored["method"] == expected["method"] and stored["preconditioner"] == expected["preconditioner"]


def test_split_blocks_keep_chunks_whole_and_are_recorded(tmp_path):
    from kryflow.data import make_loader

    generate_dataset(tmp_path / "b.zarr", progress=False, **{**SPEC, "num_samples": 12, "split_block": 4})
    ds = open_dataset(tmp_path / "b.zarr")
    assert ds.attrs["split_block"] == 4
    codes = ds["split"].values.reshape(3, 4)
    assert (codes == codes[:, :1]).all() and len(set(codes[:, 0])) == 3
    # each split's samples fill its own chunk (chunk_samples=4): the loader reads one chunk per split
    for split in ("train", "val", "test"):
        assert len(make_loader(tmp_path / "b.zarr", split, batch_size=2, shuffle=False, in_memory=False).reader) == 1
