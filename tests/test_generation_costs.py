"""What a generation job spends besides its solves: the compiled kernels of its strategy only,
MLflow requests that do not grow with the samples, a writer that streams chunks, and no warning
from MLflow or zarr on the way."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections import Counter

import numpy as np
import pytest

from kryflow.data import inspect_dataset, merge_dataset, open_dataset, verify_dataset
from kryflow.generation import generate_dataset
from kryflow.solvers._warm_up import kernel_groups

SMALL = dict(family="darcy", params={"n": 8}, seed=0, chunk_samples=4, splits=(0.5, 0.25, 0.25))


def test_kernel_groups_follow_the_strategy():
    assert kernel_groups([{"method": "cholmod", "preconditioner": "none"}]) == ()
    assert kernel_groups([{"method": "direct"}]) == ()
    assert kernel_groups([{"method": "cg", "preconditioner": "jacobi"}]) == ("cg",)
    assert kernel_groups([{"method": "gmres", "preconditioner": "gmg"}]) == ("cg", "gmg")
    assert kernel_groups([{"method": "cg", "preconditioner": "ssor"}]) == ("cg", "ssor")
    choose = {"method": "choose", "strategies": [{"method": "direct"}, {"method": "cg", "preconditioner": "gmg"}]}
    assert kernel_groups([choose]) == ("cg", "gmg")


_LOADED = """
import json, sys
from kryflow.generation import generate_dataset
from kryflow.solvers import _gmg_kernels, _kernels, _ssor

def loaded(module):  # the numba functions of a module that this process compiled or loaded
    return sorted(n for n, f in vars(module).items() if getattr(f, "signatures", None))

out = {}
for k, solver in enumerate(json.loads(sys.argv[2])):
    totals = generate_dataset(f"{sys.argv[1]}/{k}.zarr", family="darcy", params={"n": 12}, num_samples=4, seed=0,
                              chunk_samples=4, solver=solver, progress=False)
    out[solver["method"] + "+" + solver.get("preconditioner", "none")] = {
        "cg": loaded(_kernels), "gmg": loaded(_gmg_kernels), "ssor": loaded(_ssor),
        "warm_up": totals["solver_warm_up_seconds"]}
print(json.dumps(out))
"""


def test_a_generation_loads_only_the_kernels_of_its_strategy(tmp_path):
    """In a fresh process: a direct solver loads no compiled kernel, Jacobi-PCG CG's alone (the
    multigrid's and SSOR's stay unloaded, though every strategy used to load them all)."""
    solvers = [{"method": "direct"}, {"method": "cg", "preconditioner": "jacobi"}]
    proc = subprocess.run([sys.executable, "-c", _LOADED, str(tmp_path), json.dumps(solvers)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    direct = got["direct+none"]
    assert direct["cg"] == direct["gmg"] == direct["ssor"] == [] and direct["warm_up"] < 1e-3
    assert got["cg+jacobi"]["cg"] and got["cg+jacobi"]["warm_up"] > 0.0
    assert got["cg+jacobi"]["gmg"] == [] and got["cg+jacobi"]["ssor"] == []


def test_mlflow_requests_of_a_generation_do_not_grow_with_its_samples(tmp_path, monkeypatch):
    """A generation of 2N samples makes as many MLflow requests as one of N (the per-solve series
    go in batches of 1,000 metrics), every series keeps one step per solve, and logging the store
    as a dataset gives no "interpreted in multiple ways" warning."""
    from mlflow.tracking import MlflowClient

    from kryflow.pipeline import init_tracking, run_generate

    calls: Counter = Counter()
    for name in ("log_batch", "log_inputs", "create_run", "search_runs", "get_run", "update_run", "set_terminated",
                 "get_experiment_by_name", "log_artifact"):
        real = getattr(MlflowClient, name)

        def counting(self, *a, _real=real, _name=name, **kw):
            calls[_name] += 1
            return _real(self, *a, **kw)

        monkeypatch.setattr(MlflowClient, name, counting)
    tracking = tmp_path / "tracking.json"
    info = init_tracking("costs", {}, tracking, workdir=tmp_path)
    requests = {}
    for n in (60, 120):
        spec = {**SMALL, "num_samples": n, "solver": {"method": "direct"}}
        calls.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            totals = run_generate(f"d{n}", spec, "costs", tmp_path / f"d{n}.zarr", tracking)
        assert not [w for w in caught if "multiple ways" in str(w.message)]
        requests[n] = sum(calls.values())
        client = MlflowClient(info["uri"])
        run = client.search_runs([info["experiment_id"]], filter_string=f"tags.`kryflow.key` = 'generate/d{n}'")[0]
        for metric in ("solve_iterations", "solve_rel_residual", "solve_seconds", "solve_matvecs"):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))
            assert steps == list(range(totals["num_solves"])), metric
    assert requests[60] == requests[120] < 20, requests


def test_a_merged_store_from_workflow_parts_reads_without_warnings(tmp_path):
    """Snakemake touches .snakemake_timestamp inside every part and inside the merged store:
    merging, verifying, inspecting and opening it print no zarr warning."""
    spec = {**SMALL, "num_samples": 12, "solver": {"method": "direct"}}
    parts = [tmp_path / f"{k}.zarr" for k in range(3)]
    for k, part in enumerate(parts):
        generate_dataset(part, progress=False, shards=3, shard=k, **spec)
        (part / ".snakemake_timestamp").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        merge_dataset(parts, tmp_path / "merged.zarr")
        (tmp_path / "merged.zarr" / ".snakemake_timestamp").touch()
        assert verify_dataset(tmp_path / "merged.zarr") == []
        assert "digest" in inspect_dataset(tmp_path / "merged.zarr")
        open_dataset(tmp_path / "merged.zarr").close()
    proc = subprocess.run([sys.executable, "-m", "kryflow.cli", "data", "verify", str(tmp_path / "merged.zarr")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("write_chunks", [1, 2, 5])
def test_blocks_of_chunks_write_the_same_store(write_chunks, tmp_path, monkeypatch):
    """The writer lays the store out from the first chunk and writes later chunks in blocks
    (``WRITE_CHUNKS``): whatever the block, the same values, chunk checksums and digest, the
    last chunk partial."""
    from kryflow.data import _writer

    ref = generate_dataset(tmp_path / "ref.zarr", progress=False, **{**SMALL, "num_samples": 23,
                                                                       "solver": {"method": "direct"}})
    monkeypatch.setattr(_writer, "WRITE_CHUNKS", write_chunks)
    got = generate_dataset(tmp_path / "got.zarr", progress=False, **{**SMALL, "num_samples": 23,
                                                                       "solver": {"method": "direct"}})
    assert got["digest"] == ref["digest"] and verify_dataset(tmp_path / "got.zarr") == []
    a, b = open_dataset(tmp_path / "ref.zarr"), open_dataset(tmp_path / "got.zarr")
    for name in ("a", "u", "split", "sample", "solve_position", "solver_iterations"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
        assert a[name].attrs.get("chunk_sha256") == b[name].attrs.get("chunk_sha256"), name
