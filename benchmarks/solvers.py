"""Solver benchmark: every strategy on the same sequences of systems, in one process.

Writes ``results/benchmarks/solvers.json`` (a list of records, one per sequence x strategy,
see :func:`kryflow.solvers.benchmark_sequence`) and ``..._bandwidth.json`` (measured stream
bandwidth and the CG iteration cost relative to the memory-bandwidth floor). Optionally logs
the table to MLflow (``--mlflow``; tracking URI from ``MLFLOW_TRACKING_URI``).

    python benchmarks/solvers.py --quick          # < 1 minute on 2 cores
    python benchmarks/solvers.py                  # the full set from issue 3
"""

from __future__ import annotations

import os

# small dense LAPACK calls (Ritz problems) are 10-100x slower with OpenBLAS threads spinning
# on a shared machine; one BLAS thread per process is also what Snakemake jobs get
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from kryflow.pdes import build_family  # noqa: E402
from kryflow.solvers import benchmark_sequence, cg  # noqa: E402

# (family, params, num_samples); heat: samples x num_steps systems
FULL = [
    ("darcy", {"n": 128, "coefficient": "binary"}, 32),
    ("darcy", {"n": 128, "coefficient": "lognormal"}, 32),
    ("darcy", {"n": 256, "coefficient": "binary"}, 16),
    ("darcy", {"n": 256, "coefficient": "lognormal"}, 16),
    ("darcy", {"n": 32, "dim": 3, "coefficient": "binary"}, 16),
    ("heat", {"n": 128, "scheme": "crank_nicolson"}, 4),
    ("advection_diffusion", {"n": 128}, 16),
    ("darcy", {"n": 32}, 64),  # the workflow's default dataset size
]
QUICK = [
    ("darcy", {"n": 64, "coefficient": "binary"}, 10),
    ("darcy", {"n": 64, "coefficient": "lognormal"}, 10),
    ("darcy", {"n": 12, "dim": 3}, 6),
    ("heat", {"n": 32, "scheme": "crank_nicolson", "num_steps": 10, "save_every": 5}, 2),
    ("advection_diffusion", {"n": 48}, 8),
    ("darcy", {"n": 32}, 16),
]


def stream_bandwidth(n: int = 4_000_000, repeats: int = 5) -> float:
    """Best-of bandwidth (bytes/s) of an in-place BLAS axpy y += a x (reads 2, writes 1 array)."""
    from scipy.linalg import get_blas_funcs

    axpy = get_blas_funcs("axpy", dtype=np.float64)
    x, y = np.ones(n), np.ones(n)
    axpy(x, y, a=1e-9)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        axpy(x, y, a=1e-9)
        best = min(best, time.perf_counter() - t)
    return 3 * 8 * n / best


def cg_iteration_ratio(n: int, bandwidth: float) -> dict:
    """Time per unpreconditioned CG iteration on 2D Darcy n x n vs the bandwidth floor."""
    fam = build_family("darcy", n=n)
    A, b = fam.system(next(iter(fam.samples(1, 0))).fields["a"])
    N, nnz = A.shape[0], A.nnz
    # CSR matvec: values+indices (12 B/nnz), row pointers, read x, write y; then the vector
    # updates of one iteration: p.q (2 reads), 2 axpys (2R+1W each), ||r|| (1R),
    # p *= beta (1R+1W), p += r (2R+1W) -> 14 vector passes
    bytes_per_it = 12 * nnz + 4 * (N + 1) + 16 * N + 14 * 8 * N
    best = np.inf
    for _ in range(3):
        _, info = cg(A, b, rtol=1e-8, maxiter=300, full_output=True)
        best = min(best, info.seconds / max(info.iterations, 1))
    floor = bytes_per_it / bandwidth
    return {"grid": f"{n}x{n}", "n_unknowns": N, "bytes_per_iteration": bytes_per_it,
            "seconds_per_iteration": best, "floor_seconds": floor, "ratio_to_floor": best / floor}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sequences, finishes within a minute")
    ap.add_argument("--out", default="results/benchmarks/solvers.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=None, help="timing repeats per strategy (min is kept)")
    ap.add_argument("--mlflow", action="store_true", help="log the table to MLflow")
    ap.add_argument("--experiment", default="kryflow-solver-benchmark")
    args = ap.parse_args(argv)

    cases = QUICK if args.quick else FULL
    records: list[dict] = []
    t_all = time.perf_counter()
    for name, params, num in cases:
        fam = build_family(name, **params)
        repeats = args.repeats if args.repeats is not None else 2
        recs = benchmark_sequence(fam, num, args.seed, repeats=repeats)
        records += recs
        fastest = min(recs, key=lambda r: r["seconds"])
        default = next(r for r in recs if r["default"])
        print(f"\n{recs[0]['sequence']}: {recs[0]['n_systems']} systems of {recs[0]['n_unknowns']} unknowns")
        print(f"  {'strategy':24s} {'matvecs':>8s} {'iters':>7s} {'seconds':>8s} {'max relres':>10s}")
        for r in recs:
            mark = " <- default" if r["default"] else ""
            print(f"  {r['strategy']:24s} {r['matvecs']:8d} {r['iterations']:7d} {r['seconds']:8.3f} "
                  f"{r['max_true_relres']:10.1e}{mark}")
        print(f"  fastest: {fastest['strategy']}; default/fastest wall time = "
              f"{default['seconds'] / fastest['seconds']:.2f}")
        by = {r["strategy"]: r for r in recs}
        for rec_m, cold_m in (("rcg+none", "cg+none-cold"), ("rcg+none[recycle_dim=16]", "cg+none-cold"),
                              ("rcg+jacobi[recycle_dim=16]", "cg+jacobi-cold"), ("rcg+amg", "cg+amg-cold"),
                              ("rcg+amg[adaptive=False]", "cg+amg-cold"), ("gcrodr+none", "gmres+none-cold"),
                              ("gcrodr+none[recycle_dim=16]", "gmres+none-cold"), ("gcrodr+ilu", "gmres+ilu-cold"),
                              ("gcrodr+amg", "gmres+amg-cold")):
            if rec_m in by and cold_m in by:
                print(f"  {rec_m} / {cold_m} matvecs = {by[rec_m]['matvecs'] / by[cold_m]['matvecs']:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))
    bw = stream_bandwidth()
    # 512² (16 MB of matrix) is out of cache: the honest floor; smaller grids show the overhead
    ratios = [cg_iteration_ratio(n, bw) for n in ((256,) if args.quick else (128, 256, 512))]
    side = {"stream_bandwidth_bytes_per_s": bw, "cg_iteration": ratios}
    out.with_name(out.stem + "_bandwidth.json").write_text(json.dumps(side, indent=1))
    print(f"\nstream bandwidth {bw / 1e9:.1f} GB/s; CG iteration / bandwidth floor: "
          + ", ".join(f"{r['grid']}: {r['ratio_to_floor']:.2f}" for r in ratios))
    print(f"wrote {out} ({len(records)} records) in {time.perf_counter() - t_all:.1f} s")
    if args.mlflow:
        import mlflow

        mlflow.set_experiment(args.experiment)
        with mlflow.start_run(run_name="solver_benchmark"):
            table = {k: [r[k] for r in records] for k in records[0] if k != "per_solve"}
            mlflow.log_table(table, artifact_file="solver_benchmark.json")
            mlflow.log_artifact(str(out))
            mlflow.log_dict(side, "bandwidth.json")
    return records


if __name__ == "__main__":
    main()
