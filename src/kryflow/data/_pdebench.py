"""Import PDEBench's 2D Darcy-flow HDF5 files into the kryflow schema.

PDEBench (``2D_DarcyFlow_beta<β>_Train.hdf5``) solves ``-div(a grad u) = β`` on the unit square
with ``u = 0`` on the boundary; one file holds every sample:

- ``nu``: the coefficient a, ``(N, ny, nx)``;
- ``tensor``: the steady solution u, ``(N, 1, ny, nx)`` (one saved time);
- ``x-coordinate`` ``(nx,)``, ``y-coordinate`` ``(ny,)``: cell centres;
- root attribute ``beta``: the constant forcing β (absent in some copies: then read from the
  file name's ``beta<β>``).

A store keeps kryflow's grid order: dims ``(x, y)``, so ``a[i] = nu[i].T``. The file is read a
block of samples at a time (a full file is 10,000 samples of 128² in two 650 MB arrays), never
copied; its sha256 is kept in the provenance.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import __version__
from ._neuraloperator import _sha256_file
from ._schema import SPLITS, DatasetError, VariableSpec
from ._writer import ZarrDatasetWriter

__all__ = ["import_pdebench_darcy", "read_pdebench_darcy_header"]

SOURCE = "pdebench/PDEBench 2D_DarcyFlow (DaRUS doi:10.18419/darus-2986, CC BY 4.0)"
KEYS = ("nu", "tensor", "x-coordinate", "y-coordinate")


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # a dependency of kryflow; absent only in a broken environment
        raise DatasetError("reading PDEBench files needs h5py: `pip install h5py` (a kryflow dependency)") from exc
    return h5py


def read_pdebench_darcy_header(path) -> dict:
    """Check a PDEBench Darcy file's layout without reading its fields.

    **Returns:** ``{"num_samples": N, "ny": ny, "nx": nx, "beta": β, "x": (nx,), "y": (ny,)}``
    (coordinates as float64). Raises :class:`DatasetError` naming the file and the key: a missing
    key, a shape that does not fit ``nu (N, ny, nx)`` / ``tensor (N, 1, ny, nx)``, coordinates of
    the wrong length or not finite, no ``beta``.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"PDEBench Darcy file {path} not found; pass the path to the .hdf5 file")
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        missing = [k for k in KEYS if k not in f]
        if missing:
            raise DatasetError(f"{path}: key {missing[0]!r} missing (PDEBench Darcy layout: datasets "
                               f"{', '.join(KEYS)}); found {sorted(f.keys())}")
        nu, tensor = f["nu"], f["tensor"]
        if nu.ndim != 3:
            raise DatasetError(f"{path}: key 'nu' has shape {nu.shape}; expected (N, ny, nx)")
        n, ny, nx = nu.shape
        if tensor.shape != (n, 1, ny, nx):
            raise DatasetError(f"{path}: key 'tensor' has shape {tensor.shape}; expected (N, 1, ny, nx) = "
                               f"{(n, 1, ny, nx)} to match 'nu' {nu.shape}")
        coords = {}
        for key, size in (("x-coordinate", nx), ("y-coordinate", ny)):
            c = np.asarray(f[key][()], dtype=np.float64)
            if c.shape != (size,):
                raise DatasetError(f"{path}: key {key!r} has shape {c.shape}; expected ({size},) to match 'nu' {nu.shape}")
            if not np.all(np.isfinite(c)):
                raise DatasetError(f"{path}: key {key!r} holds NaN or inf")
            coords[key[0]] = c
        beta = f.attrs.get("beta")
    if beta is None:
        found = re.search(r"beta([0-9.eE+-]+?)(?:_|\.h(?:df)?5$)", path.name)
        if found is None:
            raise DatasetError(f"{path}: root attribute 'beta' missing and the file name has no 'beta<value>'; "
                               "set the attribute (the constant forcing of -div(a grad u) = beta)")
        beta = found.group(1)
    try:
        beta = float(np.asarray(beta).item())
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: attribute 'beta' = {beta!r} is not a number") from exc
    if n < 1:
        raise DatasetError(f"{path}: key 'nu' holds no samples")
    return {"num_samples": n, "ny": ny, "nx": nx, "beta": beta, **coords}


def _splits(n: int, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """The last ``test_fraction`` of the file is test (where PDEBench's own loaders take their
    test samples, so errors compare); ``val_fraction`` of the rest, drawn with ``seed``, is val."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise DatasetError(f"{name} must be in [0, 1), got {value}")
    n_test = int(round(test_fraction * n))
    n_rest = n - n_test
    n_val = int(round(val_fraction * n_rest))
    if n_rest - n_val < 1:
        raise DatasetError(f"{n} samples leave no training sample with val_fraction={val_fraction}, "
                           f"test_fraction={test_fraction}; import more samples (num_samples) or lower them")
    splits = np.full(n, SPLITS[0], dtype="<U5")
    splits[n_rest:] = SPLITS[2]
    splits[np.random.default_rng(seed).permutation(n_rest)[:n_val]] = SPLITS[1]
    return splits


def _checked_import(path: Path, out_path: Path, total: int, num_samples, stride, overwrite: bool) -> tuple[int, int]:
    """The samples to import and the stride, checked (naming the argument), and no store in the way."""
    n = total if num_samples is None else int(num_samples)
    if not 1 <= n <= total:
        raise DatasetError(f"num_samples must be in [1, {total}] (the samples in {path}), got {num_samples}")
    if int(stride) != stride or stride < 1:
        raise DatasetError(f"stride must be a positive integer, got {stride!r}")
    if out_path.exists() and not overwrite:
        raise DatasetError(f"a dataset already exists at {out_path}; pass overwrite=True (--overwrite) to replace it")
    return n, int(stride)


def import_pdebench_darcy(
    path,
    out_path,
    *,
    num_samples: int | None = None,
    stride: int = 1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    chunk_samples: int = 64,
) -> Path:
    """Write a PDEBench 2D Darcy file as a kryflow store.

    **Arguments:**
        path: the ``.hdf5`` file (layout in the module docstring).
        out_path: the store, e.g. ``data/pdebench_darcy.zarr``.
        num_samples: import the first N samples only (default: all).
        stride: keep every ``stride``-th grid point in x and y (PDEBench's ``reduced_resolution``;
            128² with stride 2 gives 64²).
        val_fraction, test_fraction, seed: splits, see :func:`_splits`.
        overwrite: replace an existing store. chunk_samples: samples per chunk.

    **Returns:** ``out_path``: variables ``a`` (input, the coefficient ``nu``) and ``u`` (target, the
    solution ``tensor[:, 0]``), dims ``(sample, x, y)``, float32; ``params.forcing`` = β. Raises
    :class:`DatasetError` naming the key for a bad layout and the key and sample for NaN or inf.
    """
    path, out_path = Path(path), Path(out_path)
    head = read_pdebench_darcy_header(path)
    n, stride = _checked_import(path, out_path, head["num_samples"], num_samples, stride, overwrite)
    grid = np.s_[::stride, ::stride]
    xc, yc = head["x"][::stride].astype(np.float32), head["y"][::stride].astype(np.float32)
    splits = _splits(n, val_fraction, test_fraction, seed)
    attrs = {
        "family": "darcy",
        "source": SOURCE,
        "importer": "kryflow.data.import_pdebench_darcy",
        "version": __version__,
        "params": {"forcing": head["beta"]},
        "boundary_condition": "u = 0 on the boundary (zero Dirichlet)",
        "import_params": {"num_samples": n, "stride": stride, "val_fraction": val_fraction,
                          "test_fraction": test_fraction, "seed": seed},
        "source_files": {path.name: _sha256_file(path)},
        "source_grid": [head["nx"], head["ny"]],
        "resolution": [len(xc), len(yc)],
        "axis_order": "a[sample, x, y] = nu[sample, y, x]: kryflow's (x, y) order",
    }
    variables = {
        "a": VariableSpec(("x", "y"), "permeability coefficient (PDEBench 'nu')", "1", "input"),
        "u": VariableSpec(("x", "y"), "pressure (PDEBench 'tensor', Darcy solution)", "1", "output"),
    }
    chunk = min(int(chunk_samples), n)
    with _h5py().File(path, "r") as f, ZarrDatasetWriter(
        out_path,
        coords={"x": (("x",), xc, {"units": "1", "long_name": "x (cell centre)"}),
                "y": (("y",), yc, {"units": "1", "long_name": "y (cell centre)"})},
        variables=variables,
        num_samples=n,
        chunk_samples=chunk,
        splits=splits,
        inputs=["a"],
        targets=["u"],
        attrs=attrs,
        overwrite=overwrite,
    ) as writer:
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            block = {"a": ("nu", f["nu"][start:stop]), "u": ("tensor", f["tensor"][start:stop, 0])}
            for key, values in block.values():
                bad = ~np.isfinite(values).reshape(stop - start, -1).all(axis=1)
                if bad.any():
                    raise DatasetError(f"{path}: key {key!r} holds NaN or inf in sample {start + int(np.argmax(bad))}; "
                                       "import fewer samples (num_samples) or repair the file")
            a, u = block["a"][1], block["u"][1]
            for i in range(stop - start):
                writer.append({"a": a[i][grid].T.astype(np.float32), "u": u[i][grid].T.astype(np.float32)})
    return out_path
