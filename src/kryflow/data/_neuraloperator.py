"""Import neuraloperator's small Darcy-flow sets into the kryflow schema."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .. import __version__
from ._schema import DatasetError, VariableSpec
from ._writer import ZarrDatasetWriter

SOURCE = "neuraloperator/neuraloperator neuralop/data/datasets/data (MIT License)"


def _load_pt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"neuraloperator Darcy file {path} not found; pass the path to the .pt file")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable torch file ({exc})") from exc
    if not isinstance(d, dict) or "x" not in d or "y" not in d:
        raise DatasetError(f"{path}: expected a dict with tensors 'x' and 'y' (neuraloperator Darcy layout)")
    x, y = d["x"].numpy(), d["y"].numpy()
    if x.ndim != 3 or x.shape != y.shape:
        raise DatasetError(f"{path}: 'x' {x.shape} and 'y' {y.shape} must both be (N, n, n)")
    return x.astype(np.float32), y.astype(np.float32)


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write(out_path, a, u, splits, attrs, overwrite, chunk_samples) -> Path:
    n, nx, ny = a.shape
    # cell-centred coordinates on the unit square, as in neuraloperator's positional encoding
    xc = ((np.arange(nx) + 0.5) / nx).astype(np.float32)
    yc = ((np.arange(ny) + 0.5) / ny).astype(np.float32)
    variables = {
        "a": VariableSpec(("x", "y"), "binary permeability coefficient", "1", "input"),
        "u": VariableSpec(("x", "y"), "pressure (Darcy solution)", "1", "output"),
    }
    with ZarrDatasetWriter(
        out_path,
        coords={
            "x": (("x",), xc, {"units": "1", "long_name": "x"}),
            "y": (("y",), yc, {"units": "1", "long_name": "y"}),
        },
        variables=variables,
        num_samples=n,
        chunk_samples=min(chunk_samples, n),
        splits=splits,
        inputs=["a"],
        targets=["u"],
        attrs=attrs,
        overwrite=overwrite,
    ) as w:
        for i in range(n):
            w.append({"a": a[i], "u": u[i]})
    return Path(out_path)


def import_neuraloperator_darcy(
    train_pt,
    test_pt,
    out_path,
    *,
    test_hi_pt=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    chunk_samples: int = 64,
) -> Path:
    """Write neuraloperator's Darcy ``.pt`` files as kryflow stores.

    The 16x16 train file is split into train and val (``val_fraction`` of it, chosen with
    ``seed``); the 16x16 test file becomes the test split, all in one store at ``out_path``
    (variables ``a`` input, ``u`` target, samples ordered train file then test file).
    If ``test_hi_pt`` (32x32) is given it is written to a second store next to it, named
    ``<stem>_32.zarr`` (the suffix is its grid size), whose samples are all ``test``; a
    resolution-transfer evaluation opens that store. The files are read, never copied.

    **Returns:** ``out_path``.
    """
    out_path = Path(out_path)
    train_pt, test_pt = Path(train_pt), Path(test_pt)
    a_tr, u_tr = _load_pt(train_pt)
    a_te, u_te = _load_pt(test_pt)
    if a_tr.shape[1:] != a_te.shape[1:]:
        raise DatasetError(
            f"resolution mismatch: {train_pt} is {a_tr.shape[1:]} but {test_pt} is {a_te.shape[1:]}; "
            "pass a higher-resolution test file as test_hi_pt"
        )
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_tr = a_tr.shape[0]
    n_val = int(round(val_fraction * n_tr))
    split_tr = np.array(["train"] * n_tr, dtype="<U5")
    split_tr[np.random.default_rng(seed).permutation(n_tr)[:n_val]] = "val"
    splits = np.concatenate([split_tr, np.array(["test"] * a_te.shape[0])])
    base_attrs = {
        "family": "darcy",
        "source": SOURCE,
        "importer": "kryflow.data.import_neuraloperator_darcy",
        "version": __version__,
        "params": {"val_fraction": val_fraction, "seed": seed},
    }
    attrs = dict(
        base_attrs,
        source_files={p.name: _sha256_file(p) for p in (train_pt, test_pt)},
        resolution=list(a_tr.shape[1:]),
    )
    hi = None
    if test_hi_pt is not None:
        test_hi_pt = Path(test_hi_pt)
        a_hi, u_hi = _load_pt(test_hi_pt)
        hi = out_path.with_name(f"{out_path.name.removesuffix('.zarr')}_{a_hi.shape[1]}.zarr")
        if a_hi.shape[1:] == a_tr.shape[1:]:
            raise DatasetError(f"{test_hi_pt} has the training resolution {a_hi.shape[1:]}; expected a finer grid")
    for target in (out_path, hi):
        if target is not None and target.exists() and not overwrite:
            # checked for both stores before writing either, so an import is all or nothing
            raise DatasetError(f"a dataset already exists at {target}; pass overwrite=True (--overwrite) to replace it")
    a, u = np.concatenate([a_tr, a_te]), np.concatenate([u_tr, u_te])
    _write(out_path, a, u, splits, attrs, overwrite, chunk_samples)
    if hi is not None:
        # all samples are test: evaluation normalises with the statistics of the training store,
        # named in the attrs, so this store carries no normalisation statistics of its own.
        hi_attrs = dict(
            base_attrs,
            source_files={test_hi_pt.name: _sha256_file(test_hi_pt)},
            resolution=list(a_hi.shape[1:]),
            train_dataset=str(out_path),
        )
        _write_test_only(hi, a_hi, u_hi, hi_attrs, overwrite, chunk_samples)
    return out_path


def _write_test_only(path, a, u, attrs, overwrite, chunk_samples) -> Path:
    n = a.shape[0]
    return _write(path, a, u, np.array(["test"] * n), attrs, overwrite, chunk_samples)


