"""The field's data formats: PDEBench's 2D Darcy HDF5 files in, The Well's HDF5 layout out.

Small files in each layout are built here (no download); an export is read back with plain h5py,
field by field, and compared with the store.
"""

from __future__ import annotations

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="h5py is a kryflow dependency; reinstall the environment")

from kryflow.data import (  # noqa: E402
    DatasetError,
    export_well,
    import_pdebench_darcy,
    open_dataset,
    verify_dataset,
    write_synthetic_dataset,
)


def _pdebench_file(path, n=12, ny=10, nx=8, beta=0.1, seed=0, attr=True, skip=(), shapes=None):
    """A PDEBench-layout Darcy file: nu (N, ny, nx), tensor (N, 1, ny, nx), coordinates, beta."""
    rng = np.random.default_rng(seed)
    data = {
        "nu": rng.uniform(0.1, 1.0, (n, ny, nx)).astype(np.float32),
        "tensor": rng.standard_normal((n, 1, ny, nx)).astype(np.float32),
        "x-coordinate": ((np.arange(nx) + 0.5) / nx).astype(np.float32),
        "y-coordinate": ((np.arange(ny) + 0.5) / ny).astype(np.float32),
        "t-coordinate": np.array([0.0, 1.0], dtype=np.float32),
    }
    for key, shape in (shapes or {}).items():
        data[key] = np.zeros(shape, dtype=np.float32)
    with h5py.File(path, "w") as f:
        for key, values in data.items():
            if key not in skip:
                f.create_dataset(key, data=values)
        if attr:
            f.attrs["beta"] = beta
    return path, data


def test_pdebench_import_gives_the_fields_splits_and_values(tmp_path):
    src, data = _pdebench_file(tmp_path / "2D_DarcyFlow_beta0.1_Train.hdf5", n=20)
    out = import_pdebench_darcy(src, tmp_path / "pdebench.zarr", val_fraction=0.2, test_fraction=0.1, seed=3,
                                chunk_samples=8)
    assert verify_dataset(out) == []
    ds = open_dataset(out)
    assert ds.attrs["kryflow_inputs"] == ["a"] and ds.attrs["kryflow_targets"] == ["u"]
    assert ds["a"].dims == ("sample", "x", "y") and ds["a"].shape == (20, 8, 10)
    # kryflow's (x, y) order: a[i] = nu[i].T, u[i] = tensor[i, 0].T, cell-centre coordinates kept
    np.testing.assert_array_equal(ds["a"].values, data["nu"].transpose(0, 2, 1))
    np.testing.assert_array_equal(ds["u"].values, data["tensor"][:, 0].transpose(0, 2, 1))
    np.testing.assert_array_equal(ds["x"].values, data["x-coordinate"])
    np.testing.assert_array_equal(ds["y"].values, data["y-coordinate"])
    # the last test_fraction is test (PDEBench's own test samples); val_fraction of the rest is val
    codes = ds["split"].values
    assert list(codes[-2:]) == [2, 2] and (codes[:-2] == 2).sum() == 0
    assert (codes == 1).sum() == round(0.2 * 18) and (codes == 0).sum() == 18 - round(0.2 * 18)
    assert ds.attrs["params"] == {"forcing": pytest.approx(0.1)} and ds.attrs["family"] == "darcy"
    assert set(ds.attrs["source_files"]) == {src.name}
    # a subset and a coarser grid: the first N samples, every stride-th point
    sub = import_pdebench_darcy(src, tmp_path / "sub.zarr", num_samples=10, stride=2, test_fraction=0.2)
    ds = open_dataset(sub)
    assert ds["a"].shape == (10, 4, 5)
    np.testing.assert_array_equal(ds["a"].values, data["nu"][:10, ::2, ::2].transpose(0, 2, 1))
    np.testing.assert_array_equal(ds["y"].values, data["y-coordinate"][::2])


def test_pdebench_beta_from_the_file_name_when_the_attribute_is_missing(tmp_path):
    src, _ = _pdebench_file(tmp_path / "2D_DarcyFlow_beta2.5_Train.hdf5", attr=False)
    ds = open_dataset(import_pdebench_darcy(src, tmp_path / "d.zarr"))
    assert ds.attrs["params"]["forcing"] == 2.5
    nameless, _ = _pdebench_file(tmp_path / "darcy.hdf5", attr=False)
    with pytest.raises(DatasetError, match="'beta'"):
        import_pdebench_darcy(nameless, tmp_path / "e.zarr")


@pytest.mark.parametrize("broken,key", [
    ({"skip": ("nu",)}, "'nu' missing"),
    ({"skip": ("y-coordinate",)}, "'y-coordinate' missing"),
    ({"shapes": {"tensor": (12, 10, 8)}}, "'tensor' has shape"),
    ({"shapes": {"nu": (12, 10)}}, "'nu' has shape"),
    ({"shapes": {"x-coordinate": (9,)}}, "'x-coordinate' has shape"),
])
def test_pdebench_bad_files_fail_naming_the_key(tmp_path, broken, key):
    src, _ = _pdebench_file(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", **broken)
    with pytest.raises(DatasetError, match=key):
        import_pdebench_darcy(src, tmp_path / "d.zarr")
    assert not (tmp_path / "d.zarr").exists()


def test_pdebench_nan_fails_naming_the_key_and_sample(tmp_path):
    src, _ = _pdebench_file(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", n=12)
    with h5py.File(src, "r+") as f:
        f["tensor"][7, 0, 3, 2] = np.nan
    with pytest.raises(DatasetError, match=r"'tensor' holds NaN or inf in sample 7"):
        import_pdebench_darcy(src, tmp_path / "d.zarr", chunk_samples=4)
    assert not (tmp_path / "d.zarr").exists() and not list(tmp_path.glob("d.zarr.tmp-*"))
    with pytest.raises(DatasetError, match="not found"):
        import_pdebench_darcy(tmp_path / "absent.hdf5", tmp_path / "d.zarr")


# --- The Well -----------------------------------------------------------------------------------

def _read_well(path) -> dict:
    """An independent reader: plain h5py, everything into dicts (no kryflow code)."""
    out = {"attrs": {}, "groups": {}}
    with h5py.File(path, "r") as f:
        out["attrs"] = dict(f.attrs)
        for gname, group in f.items():
            entry = {"attrs": dict(group.attrs), "items": {}}
            for name, item in group.items():
                if isinstance(item, h5py.Group):
                    entry["items"][name] = {"attrs": dict(item.attrs), "data": {k: v[()] for k, v in item.items()}}
                else:
                    entry["items"][name] = {"attrs": dict(item.attrs), "data": item[()]}
            out["groups"][gname] = entry
    return out


def _names(attr) -> list[str]:
    return [a.decode() if isinstance(a, bytes) else str(a) for a in attr]


def test_well_export_of_a_trajectory_store_equals_the_store(tmp_path):
    store = write_synthetic_dataset(tmp_path / "traj.zarr", num_samples=10, grid=(6, 5), chunk_samples=4,
                                    time_steps=3)
    out = export_well(store, tmp_path / "traj.h5", block_samples=3)
    well = _read_well(out)
    ds = open_dataset(store)
    root = well["attrs"]
    assert root["dataset_name"] == "traj" and root["grid_type"] == "cartesian"
    assert root["n_spatial_dims"] == 2 and root["n_trajectories"] == 10
    assert set(well["groups"]) == {"dimensions", "boundary_conditions", "scalars", "t0_fields", "t1_fields",
                                   "t2_fields"}
    dims = well["groups"]["dimensions"]
    assert _names(dims["attrs"]["spatial_dims"]) == ["x", "y"]
    np.testing.assert_array_equal(dims["items"]["time"]["data"], ds["time"].values.astype(np.float32))
    for d in ("x", "y"):
        np.testing.assert_array_equal(dims["items"][d]["data"], ds[d].values.astype(np.float32))
        assert not dims["items"][d]["attrs"]["sample_varying"] and not dims["items"][d]["attrs"]["time_varying"]
    t0 = well["groups"]["t0_fields"]
    assert sorted(_names(t0["attrs"]["field_names"])) == ["a", "f", "u", "u_traj"]
    for name in ("a", "f", "u", "u_traj"):  # field by field, exact
        field = t0["items"][name]
        np.testing.assert_array_equal(field["data"], ds[name].values)
        assert field["data"].dtype == np.float32
        assert bool(field["attrs"]["time_varying"]) == (name == "u_traj")
        assert bool(field["attrs"]["sample_varying"]) and list(field["attrs"]["dim_varying"]) == [True, True]
    assert t0["items"]["u_traj"]["data"].shape == (10, 3, 6, 5) and t0["items"]["a"]["data"].shape == (10, 6, 5)
    assert _names(well["groups"]["t1_fields"]["attrs"]["field_names"]) == []
    # per-sample solver statistics are scalars; per-solve ones are named as left out
    sc = well["groups"]["scalars"]
    np.testing.assert_array_equal(sc["items"]["iterations"]["data"], ds["iterations"].values)
    assert bool(sc["items"]["iterations"]["attrs"]["sample_varying"])
    assert _names(root["kryflow_not_exported"]) == ["residual"]
    np.testing.assert_array_equal(root["kryflow_samples"], ds["sample"].values)
    assert _names(root["kryflow_split"]) == [["train", "val", "test"][c] for c in ds["split"].values]
    assert root["kryflow_digest"] == ds.attrs["kryflow_digest"]


def test_well_export_of_a_pdebench_import_with_splits_and_boundaries(tmp_path):
    src, data = _pdebench_file(tmp_path / "2D_DarcyFlow_beta0.1_Train.hdf5", n=20)
    store = import_pdebench_darcy(src, tmp_path / "pdebench.zarr", test_fraction=0.25)
    export_well(store, tmp_path / "all.h5")
    with pytest.raises(DatasetError, match="exists"):
        export_well(store, tmp_path / "all.h5")
    test = export_well(store, tmp_path / "test.h5", split="test")
    well = _read_well(test)
    assert well["attrs"]["n_trajectories"] == 5 and well["attrs"]["kryflow_split"] == "test"
    np.testing.assert_array_equal(well["attrs"]["kryflow_samples"], np.arange(15, 20))
    t0 = well["groups"]["t0_fields"]["items"]
    # a steady store: time = [0], every field static; values back to PDEBench's own arrays
    np.testing.assert_array_equal(well["groups"]["dimensions"]["items"]["time"]["data"], [0.0])
    assert not t0["a"]["attrs"]["time_varying"] and not t0["u"]["attrs"]["time_varying"]
    np.testing.assert_array_equal(t0["a"]["data"].transpose(0, 2, 1), data["nu"][15:])
    np.testing.assert_array_equal(t0["u"]["data"].transpose(0, 2, 1), data["tensor"][15:, 0])
    # beta is a simulation parameter (root attribute and constant scalar); u = 0 on every side
    assert _names(well["attrs"]["simulation_parameters"]) == ["forcing"]
    assert well["attrs"]["forcing"] == pytest.approx(0.1)
    assert well["groups"]["scalars"]["items"]["forcing"]["data"] == pytest.approx([0.1])
    bcs = well["groups"]["boundary_conditions"]["items"]
    assert sorted(bcs) == ["x_boundary", "y_boundary"]
    for d, n in (("x", 8), ("y", 10)):
        bc = bcs[f"{d}_boundary"]
        assert bc["attrs"]["bc_type"] == "wall" and _names(bc["attrs"]["associated_dims"]) == [d]
        mask = bc["data"]["mask"]
        assert mask.shape == (n,) and mask[0] and mask[-1] and mask.sum() == 2
        np.testing.assert_array_equal(bc["data"]["values"], [0.0, 0.0])
    with pytest.raises(DatasetError, match="split"):
        export_well(store, tmp_path / "x.h5", split="validation")


def test_well_export_groups_velocity_components_into_a_vector_field(tmp_path):
    """advection-diffusion's inputs vx, vy become the t1 field v (B, H, W, 2)."""
    from kryflow.data import VariableSpec, ZarrDatasetWriter, assign_splits

    rng = np.random.default_rng(0)
    spec = {n: VariableSpec(("x", "y"), n, "1", role) for n, role in
            (("f", "input"), ("vx", "input"), ("vy", "input"), ("u", "output"))}
    values = {n: rng.standard_normal((6, 4, 3)).astype(np.float32) for n in spec}
    coords = {d: ((d,), np.linspace(0, 1, k), {"units": "1"}) for d, k in (("x", 4), ("y", 3))}
    with ZarrDatasetWriter(tmp_path / "ad.zarr", coords=coords, variables=spec, num_samples=6, chunk_samples=3,
                           splits=assign_splits(6), inputs=["f", "vx", "vy"], targets=["u"],
                           attrs={"family": "advection_diffusion"}) as w:
        for i in range(6):
            w.append({n: v[i] for n, v in values.items()})
    well = _read_well(export_well(tmp_path / "ad.zarr", tmp_path / "ad.h5"))
    t1 = well["groups"]["t1_fields"]
    assert _names(t1["attrs"]["field_names"]) == ["v"]
    np.testing.assert_array_equal(t1["items"]["v"]["data"], np.stack([values["vx"], values["vy"]], axis=-1))
    assert sorted(_names(well["groups"]["t0_fields"]["attrs"]["field_names"])) == ["f", "u"]


def test_well_export_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(DatasetError, match="no dataset"):
        export_well(tmp_path / "absent.zarr", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_command_line_imports_and_exports(tmp_path, capsys):
    from kryflow.cli import main

    src, data = _pdebench_file(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", n=10)
    store = tmp_path / "p.zarr"
    assert main(["data", "import-pdebench", str(src), str(store), "--num-samples", "8", "--stride", "2"]) == 0
    assert main(["data", "export-well", str(store), str(tmp_path / "p.h5"), "--split", "train"]) == 0
    with h5py.File(tmp_path / "p.h5", "r") as f:
        train = np.flatnonzero(open_dataset(store)["split"].values == 0)
        np.testing.assert_array_equal(f["t0_fields/a"][()], data["nu"][train][:, ::2, ::2].transpose(0, 2, 1))
    assert main(["data", "export-well", str(store), str(tmp_path / "p.h5")]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.slow
def test_workflow_trains_on_a_pdebench_file(tmp_path):
    """A config's ``source: {kind: pdebench_darcy, file: ...}`` imports the file through Snakemake
    (rule import_pdebench), and the cell trains and evaluates on it like on generated data."""
    import copy

    import pandas as pd
    from conftest import TINY_CONFIG, run_snakemake, write_config

    src, data = _pdebench_file(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5", n=24, ny=16, nx=16)
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["experiment"] = "kryflow-pdebench"
    cfg["datasets"] = {"pdebench": {"source": {"kind": "pdebench_darcy", "file": str(src), "stride": 2,
                                               "test_fraction": 0.25, "val_fraction": 0.2}}}
    cfg["models"] = {"fno": cfg["models"]["fno"]}
    cfg["optimizers"] = {"adam": cfg["optimizers"]["adam"]}
    cfg["solver_benchmark"] = {"enabled": False}
    proc = run_snakemake(tmp_path, write_config(tmp_path / "pdebench.yaml", cfg))
    assert proc.returncode == 0, proc.stderr[-5000:]
    ds = open_dataset(tmp_path / "data" / "pdebench.zarr")
    assert ds["a"].shape == (24, 8, 8) and (ds["split"].values == 2).sum() == 6
    np.testing.assert_array_equal(ds["u"].values, data["tensor"][:, 0, ::2, ::2].transpose(0, 2, 1))
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert len(summary) == 1 and summary.loc[0, "status"] == "finished" and summary.loc[0, "dataset"] == "pdebench"
