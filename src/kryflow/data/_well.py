"""Export a kryflow store to The Well's HDF5 layout, so that others train on it with their tools.

The Well (PolymathicAI/the_well, docs ``data_format``) keeps one dataset per HDF5 file:

- root attributes ``dataset_name``, ``grid_type`` (``"cartesian"``), ``n_spatial_dims``,
  ``n_trajectories`` (here: samples), ``simulation_parameters`` (names of numeric parameters,
  each also a root attribute and a constant entry of ``scalars``);
- ``dimensions``: ``time`` ``(T,)`` and one coordinate per spatial dim, ``spatial_dims`` attribute;
- ``boundary_conditions``: per spatial dim a group ``<dim>_boundary`` (``bc_type``, ``mask``,
  ``values``, ...);
- ``scalars``: non-spatial values, e.g. per-sample solver statistics;
- ``t0_fields`` / ``t1_fields`` / ``t2_fields``: scalar, vector (trailing axis of length D) and
  tensor fields, each with ``dim_varying``, ``sample_varying`` and ``time_varying`` attributes and
  shape ``(B, [T,] *grid[, D...])`` where ``T`` is there only when ``time_varying``.

How kryflow's variables map: a model input or target on the grid is a ``t0`` field; one with a
``time`` dimension (heat's ``trajectory``) is ``time_varying`` over the store's ``time``
coordinate, one without (a coefficient, a steady solution, an initial state) is not. Velocity
components ``v<dim>`` for every spatial dim become the ``t1`` field ``v``. A steady store gets
``time = [0]``: The Well's window sampler needs time-varying fields, so a steady operator dataset
is read field by field (``kryflow_inputs`` / ``kryflow_targets`` name model inputs and targets).
Per-sample solver statistics are ``scalars``; per-solve ones (dim ``solve``) have no place in the
layout and are listed in ``kryflow_not_exported``. kryflow's families and importers all have
``u = 0`` on the boundary: a ``wall`` with value 0 on the first and last cell of each dim.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import _schema as S
from ._schema import DatasetError
from ._store import open_dataset, split_indices

__all__ = ["export_well", "ZERO_DIRICHLET_FAMILIES"]

# families whose stores have u = 0 on the whole boundary (kryflow's PDE families and importers)
ZERO_DIRICHLET_FAMILIES = ("darcy", "heat", "advection_diffusion")
FIELD_ROLES = ("input", "output")


def _str_list(names) -> np.ndarray:
    """A list of names as an HDF5 attribute (variable-length UTF-8 strings)."""
    import h5py

    return np.array(list(names), dtype=h5py.string_dtype())


def _flags(obj, *, sample: bool, time: bool, dims: int | None = None) -> None:
    obj.attrs["sample_varying"] = sample
    obj.attrs["time_varying"] = time
    if dims is not None:
        obj.attrs["dim_varying"] = np.ones(dims, dtype=bool)


def _plan_fields(ds, spatial: tuple[str, ...]) -> tuple[list, list, list, list]:
    """``(t0, t1, scalars, left out)``: t0 = [(variable, time_varying)], t1 = [(name, [component
    variables], time_varying)], scalars = per-sample solver statistics, left out = the rest."""
    fields, scalars, left = [], [], []
    for name, var in ds.data_vars.items():
        if name == S.SPLIT_VAR:
            continue
        per_sample = tuple(d for d in var.dims if d != S.SAMPLE_DIM)
        on_grid = per_sample in (spatial, ("time", *spatial))
        if var.attrs.get("role") in FIELD_ROLES and on_grid:
            fields.append((name, per_sample[0] == "time"))
        elif var.attrs.get("role") == "solver_stat" and per_sample == ():
            scalars.append(name)
        else:
            left.append(name)
    velocity = [f"v{d}" for d in spatial]
    by_name = dict(fields)
    t1 = []
    if all(v in by_name for v in velocity) and len({by_name[v] for v in velocity}) == 1:
        t1 = [("v", velocity, by_name[velocity[0]])]
    t0 = [(n, tv) for n, tv in fields if not t1 or n not in velocity]
    return t0, t1, scalars, left


def export_well(store, out_path, *, split: str | None = None, dataset_name: str | None = None,
                overwrite: bool = False, block_samples: int = 256) -> Path:
    """Write ``store`` (a complete kryflow dataset) as one HDF5 file in The Well's layout.

    **Arguments:**
        store: the kryflow store (``data/<dataset>.zarr``).
        out_path: the ``.h5`` file to write (written beside as ``<name>.tmp`` and renamed when complete).
        split: ``"train"``, ``"val"`` or ``"test"``: only that split's samples (The Well keeps
            splits in folders ``data/train``, ``data/valid``, ``data/test``); default every sample,
            with its split in the root attribute ``kryflow_split``.
        dataset_name: the ``dataset_name`` attribute (default: the store's name without ``.zarr``).
        overwrite: replace an existing file. block_samples: samples read and written at a time.

    **Returns:** ``out_path``. Fields keep the store's dtype (float32); the store's sample
    coordinate, digest, inputs, targets and provenance are root attributes ``kryflow_*``. Raises
    :class:`DatasetError` for an unreadable store, an existing file or a split with no samples.
    """
    import h5py

    store, out_path = Path(store), Path(out_path)
    if out_path.exists() and not overwrite:
        raise DatasetError(f"{out_path} exists; pass overwrite=True (--overwrite) to replace it")
    ds = open_dataset(store)
    attrs = dict(ds.attrs)
    spatial = tuple(d for d in ds[attrs[S.ATTR_INPUTS][0]].dims if d != S.SAMPLE_DIM)
    codes = np.asarray(ds[S.SPLIT_VAR].values)
    index = np.arange(codes.shape[0]) if split is None else split_indices(store, split)
    if index.size == 0:
        raise DatasetError(f"{store}: split {split!r} has no samples; nothing to export")
    t0, t1, scalars, left = _plan_fields(ds, spatial)
    time = (np.asarray(ds["time"].values, dtype=np.float32) if "time" in ds.coords
            else np.zeros(1, dtype=np.float32))
    params = {k: v for k, v in (attrs.get("params") or {}).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tmp = out_path.with_name(out_path.name + ".tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp, "w") as f:
        _root_attrs(f, ds, store, dataset_name, spatial, index, split, codes, params, left)
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = _str_list(spatial)
        _flags(dims.create_dataset("time", data=time), sample=False, time=False)
        for d in spatial:
            _flags(dims.create_dataset(d, data=np.asarray(ds[d].values, dtype=np.float32)), sample=False, time=False)

        _boundary_conditions(f.create_group("boundary_conditions"), attrs.get("family"), spatial,
                             {d: ds.sizes[d] for d in spatial}, attrs[S.ATTR_TARGETS])

        sc = f.create_group("scalars")
        sc.attrs["field_names"] = _str_list([*params, *scalars])
        for k, v in params.items():
            _flags(sc.create_dataset(k, data=np.array([v], dtype=np.float32)), sample=False, time=False)
        for name in scalars:
            _flags(sc.create_dataset(name, data=np.asarray(ds[name].values)[index]), sample=True, time=False)

        _write_fields(f, ds, index, t0, t1, time, spatial, block_samples)
    tmp.replace(out_path)
    return out_path


def _root_attrs(f, ds, store: Path, dataset_name, spatial, index, split, codes, params, left) -> None:
    """The Well's root attributes, and the store's sample indices, splits, roles, digest and
    provenance as ``kryflow_*`` attributes."""
    attrs = dict(ds.attrs)
    f.attrs["dataset_name"] = dataset_name or store.name.removesuffix(".zarr")
    f.attrs["grid_type"] = "cartesian"
    f.attrs["n_spatial_dims"] = len(spatial)
    f.attrs["n_trajectories"] = int(index.size)
    f.attrs["simulation_parameters"] = _str_list(params)
    for k, v in params.items():
        f.attrs[k] = v
    f.attrs["kryflow_samples"] = np.asarray(ds[S.SAMPLE_DIM].values)[index]
    f.attrs["kryflow_split"] = split or _str_list(np.asarray(S.SPLITS)[codes[index]])
    f.attrs["kryflow_inputs"] = _str_list(attrs[S.ATTR_INPUTS])
    f.attrs["kryflow_targets"] = _str_list(attrs[S.ATTR_TARGETS])
    f.attrs["kryflow_digest"] = attrs.get(S.ATTR_DIGEST, "")
    f.attrs["kryflow_store"] = str(store)
    f.attrs["kryflow_not_exported"] = _str_list(left)
    f.attrs["kryflow_provenance"] = json.dumps(
        {k: v for k, v in attrs.items() if not k.startswith("kryflow_")}, default=str)


def _write_fields(f, ds, index, t0, t1, time, spatial, block_samples: int) -> None:
    """Groups ``t0_fields``/``t1_fields``/``t2_fields`` (scalar, vector, tensor fields) filled
    ``block_samples`` samples at a time."""
    grid = tuple(ds.sizes[d] for d in spatial)
    writes = []  # (h5 dataset, [store variables], vector)
    for order, entries in ((0, [(n, [n], tv) for n, tv in t0]), (1, t1), (2, [])):
        group = f.create_group(f"t{order}_fields")
        group.attrs["field_names"] = _str_list([e[0] for e in entries])
        for name, parts, time_varying in entries:
            shape = (index.size, *((time.size,) if time_varying else ()), *grid, *((len(spatial),) * order))
            dset = group.create_dataset(name, shape=shape, dtype=ds[parts[0]].dtype,
                                        chunks=(1, *shape[1:]))
            _flags(dset, sample=True, time=time_varying, dims=len(spatial))
            writes.append((dset, parts, order == 1))
    for start in range(0, index.size, block_samples):
        rows = index[start:start + block_samples]
        for dset, parts, vector in writes:
            values = [np.asarray(ds[p].isel({S.SAMPLE_DIM: rows}).values) for p in parts]
            dset[start:start + rows.size] = np.stack(values, axis=-1) if vector else values[0]


def _boundary_conditions(group, family, spatial, sizes, targets) -> None:
    """Zero Dirichlet on every side for kryflow's families; nothing recorded otherwise."""
    if family not in ZERO_DIRICHLET_FAMILIES:
        group.attrs["kryflow_note"] = f"no boundary condition recorded for family {family!r}"
        return
    for d in spatial:
        bc = group.create_group(f"{d}_boundary")
        bc.attrs["associated_dims"] = _str_list([d])
        bc.attrs["associated_fields"] = _str_list(targets)
        bc.attrs["bc_type"] = "wall"
        bc.attrs["kryflow_condition"] = ("u = 0 (zero Dirichlet) on the boundary faces, half a cell outside the "
                                         "first and last cell centres")
        _flags(bc, sample=False, time=False)
        mask = np.zeros(sizes[d], dtype=bool)
        mask[[0, -1]] = True
        bc.create_dataset("mask", data=mask)
        bc.create_dataset("values", data=np.zeros(int(mask.sum()), dtype=np.float32))
