"""Where a generation job's time goes: solving, sampling, assembly, writing, tracking, compiling.

Runs what ``kryflow generate CONFIG DATASET`` runs (``kryflow.pipeline.run_generate`` on a
dataset-generation MLflow run in an embedded sqlite store) on one dataset, in a fresh working
directory, ``--jobs`` times in a row, each job its own process (a later job finds the compiled
kernels the first one left, as a later Snakemake job or shard does). Every job is timed by phase
with wrappers around the code that does the work (no profiler, so the phases are not inflated):

* ``solve``: wall seconds inside the sequence solver's calls (``solver_seconds``: the solves' own
  record, one-time set-up included, as the store keeps it);
* ``sample``: drawing the samples' random fields (the family's sample iterator);
* ``assemble``: the rest of a sample's ``solve`` (matrix and right-hand side assembly, outputs);
* ``write``: the zarr writer (appends, checksums and statistics at close, the digest);
* ``tracking``: every :class:`kryflow.tracking.Tracker` call (opening the run, parameters, the
  per-solve series, the dataset, closing), and ``mlflow_calls``: the MLflow client requests, by
  method;
* ``compile``: ``solver_warm_up_seconds`` (loading or compiling the kernels the strategy runs);
* ``imports``: importing kryflow's generation code, MLflow and the solvers before the job starts;
* ``other``: the job's wall time less all of the above.

After the job the series are read back from MLflow: ``series_steps`` counts the steps of each
per-solve series (one per solve when complete).

    taskset -c 1 python benchmarks/generation.py                       # lognormal Darcy 64², 512 samples
    python benchmarks/generation.py --num-samples 1024 --jobs 1        # how tracking grows with samples
    python benchmarks/generation.py --numba-cache fresh                # the first job compiles (empty cache)

Writes ``results/benchmarks/generation.json`` (``--out``).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERIES = ("solve_iterations", "solve_rel_residual", "solve_seconds", "solve_matvecs")


def _config(args) -> dict:
    params = {"n": args.n, "dim": 2, "coefficient": args.coefficient}
    return {
        "experiment": "kryflow-generation-benchmark",
        "datasets": {"bench": {"family": args.family, "params": params, "num_samples": args.num_samples,
                               "seed": 0, "chunk_samples": 16, "splits": [0.75, 0.125, 0.125],
                               "solver": {"method": args.method, "rtol": 1e-8}}},
        "models": {"fno": {"width": 8, "modes": 4, "layers": 2}},
        "optimizers": {"adamw": {"lr": 1e-3}},
        "seeds": [0],
        "training": {"batch_size": 4, "max_steps": 4},
        "solver_benchmark": {"enabled": False},
    }


class _Phases:
    """Seconds per phase; a wrapped call inside another wrapped call of the same phase counts once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.depth: dict[str, int] = defaultdict(int)
        self.calls: Counter = Counter()

    def wrap(self, phase: str, fn, count: str | None = None):
        @functools.wraps(fn)
        def timed(*a, **kw):
            if count is not None and self.depth[phase] == 0:
                self.calls[count] += 1
            self.depth[phase] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.depth[phase] -= 1
                if self.depth[phase] == 0:
                    self.seconds[phase] += time.perf_counter() - t0

        return timed

    def patch(self, owner, name: str, phase: str, count: str | None = None) -> None:
        setattr(owner, name, self.wrap(phase, getattr(owner, name), count))


def _one_job(args) -> dict:
    """One generation job in this process (the working directory is the job's)."""
    t_start = time.perf_counter()
    import yaml
    from mlflow.tracking import MlflowClient

    import kryflow.data
    import kryflow.generation._sampler as sampler
    from kryflow.config import dataset_spec, load_config
    from kryflow.data import ZarrDatasetWriter
    from kryflow.pipeline import init_tracking, run_generate
    from kryflow.solvers import SequenceSolver
    from kryflow.tracking import Tracker

    phases = _Phases()
    phases.seconds["imports"] = time.perf_counter() - t_start
    # the MLflow client's requests (one sqlite transaction or HTTP request each), counted by method
    for name in ("log_batch", "log_inputs", "create_run", "search_runs", "get_run", "update_run", "set_terminated",
                 "get_experiment_by_name", "log_artifact", "log_metric", "log_param", "set_tag"):
        phases.patch(MlflowClient, name, "mlflow_client", count=name)
    for name in ("__init__", "log_params", "log_metrics", "log_metric_series", "flush", "set_tags", "log_dataset",
                 "log_artifact", "finish"):
        phases.patch(Tracker, name, "tracking")
    phases.patch(SequenceSolver, "__call__", "solve")
    for name in ("__enter__", "append", "__exit__"):
        phases.patch(ZarrDatasetWriter, name, "write")
    phases.patch(kryflow.data, "dataset_digest", "write")  # generate_dataset imports it from there per call

    in_order = sampler.in_solve_order

    def timed_samples(kind, samples):
        ordered, seconds = in_order(kind, samples)

        def stream():
            it = iter(ordered)
            while True:
                t0 = time.perf_counter()
                try:
                    sample = next(it)
                except StopIteration:
                    return
                finally:
                    phases.seconds["sample"] += time.perf_counter() - t0
                sample.solve = phases.wrap("sample_solve", sample.solve)
                yield sample

        return stream(), seconds

    sampler.in_solve_order = timed_samples

    cfg_path = Path("config.yaml")
    cfg_path.write_text(yaml.safe_dump(_config(args), sort_keys=False))
    cfg = load_config(cfg_path)
    t0 = time.perf_counter()
    tracking = Path("results/tracking.json")
    init_tracking(cfg["experiment"], cfg.get("tracking"), tracking)
    phases.seconds["tracking_init"] = time.perf_counter() - t0
    calls_before = sum(phases.calls.values())
    t0 = time.perf_counter()
    totals = run_generate("bench", dataset_spec(cfg, "bench"), cfg["experiment"], Path("data/bench.zarr"), tracking)
    wall = time.perf_counter() - t0
    calls = Counter(phases.calls)

    client = MlflowClient(json.loads(tracking.read_text())["uri"])
    run = client.search_runs([client.get_experiment_by_name(cfg["experiment"]).experiment_id],
                             filter_string="tags.`kryflow.key` = 'generate/bench'")[0]
    steps = {m: sorted(x.step for x in client.get_metric_history(run.info.run_id, m)) for m in SERIES}
    solves = int(totals["num_solves"])
    s = phases.seconds
    assemble = s["sample_solve"] - s["solve"]
    phase = {"solve": s["solve"], "sample": s["sample"], "assemble": assemble, "write": s["write"],
             "tracking": s["tracking"], "compile": totals["solver_warm_up_seconds"]}
    outside = phase["sample"] + phase["assemble"] + phase["write"] + phase["tracking"] + phase["compile"]
    return {
        "wall_seconds": wall, "imports_seconds": s["imports"], "tracking_init_seconds": s["tracking_init"],
        "phases_seconds": phase, "other_seconds": wall - sum(phase.values()),
        "outside_solving_seconds": outside, "outside_over_solving": outside / max(phase["solve"], 1e-12),
        "solver_seconds": totals["seconds"], "solver_warm_up_seconds": totals["solver_warm_up_seconds"],
        "solver_setup_seconds": totals["solver_setup_seconds"], "mlflow_client_seconds": s["mlflow_client"],
        "mlflow_calls": sum(calls.values()) - calls_before, "mlflow_calls_by_method": dict(calls),
        "num_samples": int(totals["num_samples"]), "num_solves": solves,
        "method": json.loads(Path("data/bench.zarr/zarr.json").read_text())["attributes"]["solver"]["method"],
        "series_steps": {m: len(v) for m, v in steps.items()},
        "series_complete": all(v == list(range(solves)) for v in steps.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="darcy")
    ap.add_argument("--coefficient", default="lognormal")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--num-samples", type=int, default=512)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--jobs", type=int, default=2, help="jobs in a row, each its own process")
    ap.add_argument("--numba-cache", choices=("package", "fresh"), default="package",
                    help="package: numba's cache where kryflow keeps it (the package's __pycache__); fresh: an "
                         "empty NUMBA_CACHE_DIR shared by the jobs, so the first job compiles")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "generation.json"))
    ap.add_argument("--one-job", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_job:
        print(json.dumps(_one_job(args)))
        return
    jobs = []
    with tempfile.TemporaryDirectory(prefix="kryflow-genbench-") as tmp:
        env = dict(os.environ)
        if args.numba_cache == "fresh":
            env["NUMBA_CACHE_DIR"] = str(Path(tmp) / "numba-cache")
        for k in range(args.jobs):
            work = Path(tmp) / f"job{k}"
            work.mkdir()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one-job", "--family", args.family,
                   "--coefficient", args.coefficient, "--n", str(args.n), "--num-samples", str(args.num_samples),
                   "--method", args.method]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"job {k} failed:\n{proc.stderr[-4000:]}")
            job = json.loads(proc.stdout.strip().splitlines()[-1])
            job["process_wall_seconds"] = time.perf_counter() - t0
            job["warnings"] = [ln for ln in proc.stderr.splitlines() if "Warning" in ln]
            jobs.append(job)
            print(f"job {k}: wall {job['wall_seconds']:.2f} s (process {job['process_wall_seconds']:.2f} s), "
                  f"solve {job['phases_seconds']['solve']:.2f} s, outside solving {job['outside_solving_seconds']:.2f}"
                  f" s ({job['outside_over_solving']:.2f}x), compile {job['phases_seconds']['compile']:.2f} s, "
                  f"tracking {job['phases_seconds']['tracking']:.2f} s in {job['mlflow_calls']} MLflow calls, "
                  f"series complete: {job['series_complete']}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": platform.node(), "python": platform.python_version(), "settings": vars(args), "jobs": jobs}
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
