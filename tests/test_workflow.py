"""The real workflow, end to end, on a tiny config in a temporary directory (no mocked engine)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest
import xarray as xr

from conftest import run_snakemake


def _cells(cfg):
    return [(d, m, o, s) for d in cfg["datasets"] for m in cfg["models"] for o in cfg["optimizers"]
            for s in cfg["seeds"]]


@pytest.mark.slow
def test_datasets_open_with_xarray(tiny_run):
    workdir, cfg, _ = tiny_run
    for name, spec in cfg["datasets"].items():
        ds = xr.open_zarr(workdir / "data" / f"{name}.zarr", consolidated=False)
        assert ds.sizes["sample"] == spec["num_samples"]
        for var in ("solver_iterations", "solver_rel_residual"):
            assert var in ds
        assert float(ds["solver_rel_residual"].max()) <= spec["solver"]["rtol"] * 1.0001
    # the resolution-transfer set exists at the finer grid
    tr = xr.open_zarr(workdir / "data" / "darcy__n32.zarr", consolidated=False)
    assert tr.sizes["x"] == 32


@pytest.mark.slow
def test_summary_has_one_row_per_cell(tiny_run):
    workdir, cfg, _ = tiny_run
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    cells = _cells(cfg)
    assert len(summary) == len(cells)
    got = {(r.dataset, r.model, r.optimizer, int(r.seed)) for r in summary.itertuples()}
    assert got == set(cells)
    assert set(summary["status"]) <= {"finished", "diverged"}
    finished = summary[summary.status == "finished"]
    assert (finished["test_rel_l2_mean"] > 0).all()
    # the darcy cells were evaluated at the finer grid too
    assert summary[summary.dataset == "darcy"]["transfer_rel_l2"].notna().all()
    agg = pd.read_csv(workdir / "results" / "summary_aggregate.csv")
    assert len(agg) == len({(d, m, o) for d, m, o, _ in cells})


@pytest.mark.slow
def test_figures_and_tables_open(tiny_run):
    workdir, _, _ = tiny_run
    pngs = sorted((workdir / "results" / "figures").glob("*.png"))
    pdfs = sorted((workdir / "results" / "figures").glob("*.pdf"))
    assert pngs and pdfs
    for p in pngs:
        img = mpimg.imread(p)
        assert img.shape[0] > 50 and img.shape[1] > 50
    for p in pdfs:
        assert p.read_bytes()[:5] == b"%PDF-"
    assert list((workdir / "results" / "tables").glob("*.tex"))
    assert list((workdir / "results" / "tables").glob("*.md"))


@pytest.mark.slow
def test_mlflow_holds_one_finished_run_per_cell_and_dataset(tiny_run):
    import mlflow
    from mlflow.tracking import MlflowClient

    workdir, cfg, _ = tiny_run
    info = json.loads((workdir / "results" / "tracking.json").read_text())
    assert info["uri"].startswith("sqlite:///") and str(workdir) in info["uri"]
    client = MlflowClient(tracking_uri=info["uri"])
    exp = client.get_experiment_by_name(cfg["experiment"])
    runs = mlflow.search_runs([exp.experiment_id], tracking_uri=info["uri"], output_format="list",
                              max_results=1000) if False else client.search_runs([exp.experiment_id], max_results=1000)
    by_key = {}
    for r in runs:
        by_key.setdefault(r.data.tags.get("kryflow.key"), []).append(r)
    for d, m, o, s in _cells(cfg):
        key = f"train/{d}/{m}/{o}/{s}"
        assert len(by_key.get(key, [])) == 1, key
        run = by_key[key][0]
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert (tags["dataset"], tags["model"], tags["optimizer"], tags["seed"]) == (d, m, o, str(s))
        assert tags["status"] in ("finished", "diverged")
        assert "git_commit" in tags and "kryflow.version" in tags
        assert "training.max_steps" in run.data.params
        assert "val_rel_l2" in run.data.metrics and "test_rel_l2_mean" in run.data.metrics
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert len(history) >= 2  # stepped
        contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
        assert {"training", "evaluation"} <= contexts
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"figures", "logs", "checkpoint", "evaluation", "history.csv",
                "effective_config.json"} <= artifacts, artifacts
        figs = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
        assert f"figures/val_error_{d}_{m}.png" in figs
    for name in list(cfg["datasets"]) + ["darcy__n32"]:
        assert len(by_key.get(f"generate/{name}", [])) == 1, name
        gen = by_key[f"generate/{name}"][0]
        assert len(client.get_metric_history(gen.info.run_id, "solve_iterations")) >= 4
    for name in cfg["datasets"]:
        (bench,) = by_key[f"solver_benchmark/{name}"]
        records = json.loads((workdir / "results" / "solvers" / f"{name}.json").read_text())
        # one metric per strategy: cold and warm starts of one method must not overwrite each other
        names = {re.sub(r"[^\w\-./: ]", "_", r["strategy"]) for r in records}
        assert len(names) == len(records)
        assert {f"{n}.seconds" for n in names} <= set(bench.data.metrics)


@pytest.mark.slow
def test_logged_model_reproduces_evaluation(tiny_run):
    import mlflow.pytorch
    import torch

    from kryflow.data import make_loader
    from kryflow.evaluation.metrics import relative_l2

    workdir, cfg, _ = tiny_run
    run_dir = workdir / "results" / "runs" / "darcy" / "fno" / "adam" / "0"
    run_info = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    mlflow.set_tracking_uri(run_info["tracking_uri"])
    model = mlflow.pytorch.load_model(f"runs:/{run_info['run_id']}/model", map_location="cpu")
    preds, trues = [], []
    with torch.no_grad():
        for x, y in make_loader(workdir / "data" / "darcy.zarr", "test", batch_size=32, shuffle=False):
            preds.append(model(x))
            trues.append(y)
    rel = relative_l2(torch.cat(preds), torch.cat(trues))
    assert float(torch.as_tensor(rel).mean()) == pytest.approx(metrics["test_rel_l2_mean"], rel=1e-5)


@pytest.mark.slow
def test_rerun_is_a_no_op(tiny_run):
    workdir, _, _ = tiny_run
    proc = run_snakemake(workdir, workdir / "tiny.yaml", "-n")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_three_shard_generation_equals_the_one_job_dataset(tmp_path):
    """A real Snakemake run: one dataset generated by 3 shard jobs and a merge, beside the same
    dataset made by one job; a removed shard is the only job a rerun schedules (with the merge)."""
    import shutil
    import subprocess

    import numpy as np

    from conftest import BIN, TINY_CONFIG, write_config
    from kryflow.data import open_dataset

    spec = {"family": "darcy", "params": {"n": 16}, "num_samples": 24, "seed": 7, "chunk_samples": 4,
            "splits": [0.5, 0.25, 0.25], "solver": {"method": "direct"}}
    cfg = {**TINY_CONFIG, "datasets": {"one": spec, "three": {**spec, "shards": 3}},
           "solver_benchmark": {"enabled": False}}
    cfgfile = write_config(tmp_path / "shards.yaml", cfg)
    targets = ("data/one.zarr", "data/three.zarr")
    proc = run_snakemake(tmp_path, cfgfile, *targets, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert len(re.findall(r"rule generate_shard:", out)) == 3 and len(re.findall(r"rule merge_dataset:", out)) == 1
    one, three = open_dataset(tmp_path / "data" / "one.zarr"), open_dataset(tmp_path / "data" / "three.zarr")
    assert one.attrs["kryflow_digest"] == three.attrs["kryflow_digest"]  # a direct solver: bit for bit
    np.testing.assert_array_equal(one["u"].values, three["u"].values)
    assert sorted(set(three["shard"].values.tolist())) == [0, 1, 2]
    verify = subprocess.run([str(BIN / "kryflow"), "data", "verify", str(tmp_path / "data" / "three.zarr")],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and "all checksums match" in verify.stdout, verify.stdout + verify.stderr
    # a shard killed mid-run leaves no part (nor a merged store): it reruns alone, then the merge
    shutil.rmtree(tmp_path / "data" / "three.parts" / "1.zarr")
    shutil.rmtree(tmp_path / "data" / "three.zarr")
    plan = run_snakemake(tmp_path, cfgfile, *targets, "-n", "--quiet", "rules", timeout=300)
    jobs = {ln.split()[0]: int(ln.split()[1]) for ln in (plan.stdout + plan.stderr).splitlines()
            if len(ln.split()) == 2 and ln.split()[1].isdigit()}
    assert jobs == {"generate_shard": 1, "merge_dataset": 1, "total": 2}, plan.stdout + plan.stderr
