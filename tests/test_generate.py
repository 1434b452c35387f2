"""Dataset generation through its public entry point: determinism, statistics, flagged solves."""

from __future__ import annotations

import numpy as np
import pytest

from kryflow.data import dataset_digest, open_dataset, verify_dataset
from kryflow.generation import generate_dataset

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


def _relative_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    axes = tuple(range(1, a.ndim))
    return np.sqrt(((a - b) ** 2).sum(axis=axes) / (b**2).sum(axis=axes))


FAMILIES = {
    "darcy": ({"n": 8, "coefficient": "lognormal"}, {"method": "rcg", "preconditioner": "jacobi", "recycle_dim": 6,
                                                      "recycle_mode": "spectral"}),
    "heat": ({"n": 8, "scheme": "crank_nicolson", "num_steps": 4, "save_every": 2, "dt": 5e-3},
             {"method": "rcg", "preconditioner": "none", "recycle_dim": 6}),
    "advection_diffusion": ({"n": 8}, {"method": "gcrodr", "preconditioner": "ilu", "recycle_dim": 4, "restart": 20}),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_outputs_do_not_depend_on_the_solver(family, tmp_path):
    """The default strategy, a recycled one solving in similarity order, and a direct solve store
    the same inputs and outputs that agree within what the tolerance implies."""
    from kryflow.pdes import build_family

    params, recycled = FAMILIES[family]
    rtol = 1e-8
    base = dict(family=family, params=params, num_samples=8, seed=5, chunk_samples=4, splits=(0.5, 0.25, 0.25),
                progress=False)
    stores = {}
    for label, solver in (("default", {"method": "auto"}), ("recycled", {**recycled, "order": "similarity"}),
                          ("direct", {"method": "direct"})):
        generate_dataset(tmp_path / f"{label}.zarr", solver={**solver, "rtol": rtol}, **base)
        stores[label] = open_dataset(tmp_path / f"{label}.zarr")
    fam = build_family(family, **params)
    # a residual of rtol ||b|| bounds the error by cond(A) rtol per solve (errors of time steps add)
    A, _ = _first_system(fam)
    cond = np.linalg.cond(A.toarray())
    bound = fam.solves_per_sample * cond * rtol + 4 * np.finfo(np.float32).eps  # outputs stored as float32
    ref = stores["direct"]
    for label in ("default", "recycled"):
        ds = stores[label]
        for name in fam.inputs:
            np.testing.assert_array_equal(ds[name].values, ref[name].values)
        for name in (v for v, spec in fam.variables().items() if spec["role"] == "output"):
            err = _relative_errors(ds[name].values.astype(np.float64), ref[name].values.astype(np.float64))
            assert err.max() <= bound, (label, name, err.max(), bound)
    # the store keeps sample order and records the order the samples were solved in
    assert sorted(stores["recycled"]["solve_position"].values) == list(range(8))
    assert list(stores["recycled"]["sample"].values) == list(range(8))
    assert stores["recycled"].attrs["solver"]["order"] == "similarity"


def _first_system(fam):
    got = []
    sample = next(iter(fam.samples(1, 5)))
    sample.solve(lambda A, b, matrix_changed: (got.append((A, b)), np.zeros_like(b))[1])
    return got[0]


@pytest.mark.parametrize("solver", [{"method": "direct"},
                                    {"method": "rcg", "preconditioner": "jacobi", "recycle_dim": 4, "order": "similarity"}])
def test_three_shards_merge_into_the_one_job_dataset(solver, tmp_path):
    from kryflow.data import merge_dataset

    spec = {**SPEC, "params": {"n": 12}, "num_samples": 20, "solver": {**solver, "rtol": 1e-8}}
    one = generate_dataset(tmp_path / "one.zarr", progress=False, **spec)
    parts = [tmp_path / f"part{k}.zarr" for k in range(3)]
    for k in (2, 0, 1):  # shards are independent jobs, in any order
        generate_dataset(parts[k], progress=False, shards=3, shard=k, **spec)
    merged = merge_dataset(parts[::-1], tmp_path / "merged.zarr")
    a, b = open_dataset(tmp_path / "one.zarr"), open_dataset(tmp_path / "merged.zarr")
    assert verify_dataset(tmp_path / "merged.zarr") == []
    np.testing.assert_array_equal(a["a"].values, b["a"].values)  # inputs value for value
    np.testing.assert_array_equal(a["split"].values, b["split"].values)
    assert a.attrs["kryflow_split_sizes"] == b.attrs["kryflow_split_sizes"]
    assert sorted(set(b["shard"].values.tolist())) == [0, 1, 2] and len(b.attrs["dataset_parts"]) == 3
    if solver["method"] == "direct":  # bit for bit: the same data, the same digest
        assert merged["digest"] == one["digest"]
        np.testing.assert_array_equal(a["u"].values, b["u"].values)
    else:  # each shard with its own recycle space: outputs agree within the tolerance
        assert float(b["solver_rel_residual"].max()) <= 1e-8
        assert _relative_errors(b["u"].values.astype(float), a["u"].values.astype(float)).max() < 1e-6
    with pytest.raises(Exception, match="shard is missing|parts given"):
        merge_dataset(parts[:2], tmp_path / "incomplete.zarr")
