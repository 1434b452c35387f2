"""The workflow trains and evaluates on neuraloperator's Darcy sets like on its own data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from conftest import PEER_DATA, ROOT, run_snakemake, write_config

pytestmark = pytest.mark.skipif(
    not PEER_DATA.exists(), reason=f"peer data not found at {PEER_DATA} (../shared/peer-data)"
)


@pytest.mark.slow
def test_workflow_on_peer_darcy(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "peer_darcy.yaml").read_text())
    src = cfg["datasets"]["nop_darcy16"]["source"]
    for key in ("train", "test", "test_hi"):
        src[key] = str((ROOT / src[key]).resolve())
    cfg["models"] = {"fno": cfg["models"]["fno"]}
    cfg["optimizers"] = {"adamw": cfg["optimizers"]["adamw"]}
    cfg["training"].update({"max_steps": 30, "eval_every": 10, "checkpoint_every": 10})
    path = write_config(tmp_path / "peer.yaml", cfg)
    proc = run_snakemake(tmp_path, path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert len(summary) == 1 and summary.loc[0, "status"] == "finished"
    # trained at 16x16, evaluated on the 32x32 test file too
    assert 0 < summary.loc[0, "transfer_rel_l2"] < 1.5
    import xarray as xr

    hi = xr.open_zarr(tmp_path / "data" / "nop_darcy16__hi.zarr")
    assert hi.sizes["x"] == 32 and hi.sizes["sample"] == 50
    metrics = json.loads(next((tmp_path / "results" / "runs").rglob("metrics.json")).read_text())
    assert metrics["test_rel_l2_mean"] < 1.0
