"""Solver benchmark: every strategy on the same sequences of systems, in one process.

Writes ``results/benchmarks/solvers.json`` (a list of records, one per sequence x strategy,
see :func:`kryflow.solvers.benchmark_sequence`), ``..._bandwidth.json`` (main-memory stream
bandwidth and, per SPD sequence plus an out-of-cache reference grid, the CG iteration cost
relative to the memory-bandwidth floor) and ``..._targets.json``: per sequence three
comparisons, each with ``meets``:

* t1: recycled strategies' matvecs against the cold start with the same preconditioner
  (``benchmark_sequence``'s ``matvec_ratio``, default 0.5), from the records' ``meets_t1``;
* t2: the default strategy's wall time against the fastest
  (its ``wall_ratio``, default 1.1), from the default record's ``meets_t2``;
* t3: the CG iteration against the bandwidth floor (:data:`BANDWIDTH_FLOOR_RATIO`);

``..._baselines.json``: per sequence the default against the fastest strategy and against the
strong baselines (CHOLMOD, PARDISO, pyamg, splu; "absent" where not installed), see
:func:`baseline_comparison`; ``..._skr.json``: GCRO-DR(40, 20) against GMRES(40) as in SKR's
Table 1 (:func:`skr_side_by_side`). Every sequence is i.i.d.

Optionally logs the table to MLflow (``--mlflow``; tracking URI from ``MLFLOW_TRACKING_URI``).

    python benchmarks/solvers.py --quick          # about a minute on 2 cores
    python benchmarks/solvers.py                  # the full set (see benchmarks/README.md for its time)

The measured figures, with their dates, are kept in ``benchmarks/README.md``.
"""

from __future__ import annotations

import os

# small dense LAPACK calls (Ritz problems) are many times slower with OpenBLAS threads spinning
# on a shared machine; one BLAS thread per process is also what Snakemake jobs get
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from kryflow.pdes import build_family  # noqa: E402
from kryflow.solvers import benchmark_sequence, sequence_label  # noqa: E402

BANDWIDTH_FLOOR_RATIO = 1.5  # a CG iteration meets its target within this x the memory-bandwidth floor

# (family, params, num_samples); heat: samples x (num_steps + 2) systems. Every sequence i.i.d.
# (relation given explicitly), rtol 1e-8, one thread per solver.
FULL = [
    # SKR's Darcy case: 200², a = exp(GRF) (lognormal, sigma 1), f = 1, 40 systems
    ("darcy", {"n": 200, "coefficient": "lognormal", "sigma": 1.0, "forcing": 1.0}, 40),
    ("darcy", {"n": 64, "dim": 3, "coefficient": "lognormal"}, 4),
    ("heat", {"n": 256, "scheme": "crank_nicolson"}, 3),
    ("advection_diffusion", {"n": 256}, 6),
    ("advection_diffusion", {"n": 64, "dim": 3}, 3),
    ("darcy", {"n": 32}, 64),  # the default workflow's dataset size
]
QUICK = [
    ("darcy", {"n": 64, "coefficient": "binary"}, 10),
    ("darcy", {"n": 64, "coefficient": "lognormal"}, 10),
    ("darcy", {"n": 12, "dim": 3}, 6),
    ("heat", {"n": 32, "scheme": "crank_nicolson", "num_steps": 10, "save_every": 5}, 2),
    ("advection_diffusion", {"n": 48}, 8),
    ("darcy", {"n": 32}, 16),
]
# SKR side by side (GCRO-DR(m=40, k=20) vs GMRES(40), same preconditioner, sorted / unsorted):
# (n, num_samples, preconditioners). SKR's Table 1 is Darcy 80² (6,400 unknowns); at 200²
# unpreconditioned GMRES(40) does not reach 1e-8 within 30,000 iterations, so there only
# Jacobi and ILU run (on fewer systems: each GMRES(40) solve takes seconds).
SKR_FULL = [(80, 40, ("none", "jacobi", "ilu")), (200, 12, ("jacobi", "ilu"))]
SKR_QUICK = [(32, 8, ("none", "jacobi", "ilu"))]
SKR_TABLE1 = {"none": 2.70, "ilu": 3.70}  # SKR Table 1, Darcy 6,400 unknowns, rtol 1e-8: time speed-up
BASELINE_NAMES = {"cholmod": "CHOLMOD", "pardiso": "PARDISO", "pyamg": "pyamg", "direct": "splu"}


@functools.cache
def _axpy_parallel():
    """``y += a x`` over all numba threads (the threads the CG kernels use), compiled once per
    process (the benchmark measures a bandwidth per sequence)."""
    from numba import njit, prange

    @njit(parallel=True, cache=False)
    def axpy(a, x, y):
        for i in prange(x.shape[0]):
            y[i] += a * x[i]

    return axpy


def stream_bandwidth(total_bytes: int = 256 * 2**20, repeats: int = 5, detail: bool = False):
    """Best-of bandwidth (bytes/s) of an in-place axpy ``y += a x`` (reads 2, writes 1 array)
    over two arrays of ``total_bytes`` together: the faster of one-thread BLAS and a loop over
    all numba threads (the yardstick must be what the machine can do, not what one core can,
    since the CG kernels use every thread). The default, 256 MiB, is 8x a 32 MiB L3, i.e.
    main-memory (STREAM-style) bandwidth; a smaller ``total_bytes`` measures the cache level
    a working set of that size lives in. ``detail=True`` returns both measurements."""
    import numba
    from scipy.linalg import get_blas_funcs

    blas = get_blas_funcs("axpy", dtype=np.float64)
    par = _axpy_parallel()
    n = max(1024, int(total_bytes) // 16)
    x, y = np.ones(n), np.ones(n)
    reps = repeats if n >= 2**20 else repeats * 20
    got = {}
    for name, f in (("blas_1_thread", lambda: blas(x, y, a=1e-9)), ("numba_threads", lambda: par(1e-9, x, y))):
        f()
        best = np.inf
        for _ in range(reps):
            t = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - t)
        got[name] = 3 * 8 * n / best
    got["threads"] = numba.get_num_threads()
    got["best"] = max(got["blas_1_thread"], got["numba_threads"])
    return got if detail else got["best"]


def last_level_cache_bytes() -> int | None:
    """Size of the largest CPU cache (Linux sysfs), None where unknown."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        txt = f.read_text().strip()
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(txt[-1:], 1)
        try:
            sizes.append(int(txt.rstrip("KMG")) * mult)
        except ValueError:
            pass
    return max(sizes) if sizes else None


def first_spd_matrix(fam):
    """The first matrix of ``fam``'s sequence (Darcy: the system; heat: I + theta dt L)."""
    got = []

    def grab(A, b, *, matrix_changed):
        got.append(A)
        return np.zeros(b.shape)

    next(iter(fam.samples(1, 0))).solve(grab)
    return got[0].tocsr()


def cg_iteration_ratio(A, label: str, bw: dict, llc: int | None, iterations: int | None = None) -> dict:
    """Seconds per unpreconditioned CG iteration on ``A`` against the memory-bandwidth floor.

    Floor = bytes a minimal (fully fused) CG iteration must move / stream bandwidth: the CSR
    matrix once (8 B value + 4 B column index per nonzero, 4 B per row pointer) plus 11 vector
    passes of 8N bytes (matvec reads p, writes q; x += a p: 2R 1W; r -= a q with ||r||: 2R 1W;
    p = r + b p: 2R 1W; p.q fused into the matvec). kryflow's compiled CG loop
    (``kryflow.solvers._kernels``) moves exactly these: the matvec with p.q, x and r with r.r,
    and p, in three passes.

    Timed twice through :func:`kryflow.solvers.cg`: with one thread against the one-thread
    stream bandwidth (``ratio_1_thread``: what the workflow runs, one solver job per core
    with ``blas_threads=1``), and with all numba threads against the best stream bandwidth of
    the machine (``ratio_to_floor``). The target holds (``meets_target``) when the iteration
    is within 1.5x the floor of the threads doing the work in either setting; below
    ``PARALLEL_MIN_ROWS`` rows the kernels run on one thread whatever the setting, so there
    only the one-thread ratio is a like-for-like comparison. ``bw`` is
    :func:`stream_bandwidth`'s ``detail`` dict. ``ratio_same_size_bandwidth`` divides by the
    bandwidth of a working set of the same size instead (cache bandwidth when
    ``fits_in_last_level_cache``), the stricter yardstick there.
    """
    import numba

    from kryflow.solvers import cg

    N, nnz = A.shape[0], A.nnz
    matrix_bytes = 12 * nnz + 4 * (N + 1)
    bytes_min = matrix_bytes + 11 * 8 * N
    working_set = matrix_bytes + 5 * 8 * N  # A, x, r, p, q, b
    b = np.random.default_rng(0).standard_normal(N)
    iterations = iterations or (200 if N >= 16384 else 1000)  # fixed costs < 2% of the timing
    all_threads = numba.get_num_threads()
    per_thread = {}
    for threads in sorted({1, all_threads}):
        numba.set_num_threads(threads)
        best = np.inf
        for _ in range(3):  # rtol unreachable: a fixed iteration count
            _, info = cg(A, b, rtol=1e-300, maxiter=iterations, full_output=True)
            best = min(best, info.seconds / max(info.iterations, 1))
        per_thread[threads] = best
    numba.set_num_threads(all_threads)
    best = per_thread[all_threads]
    floor = bytes_min / bw["best"]
    bw_same = stream_bandwidth(working_set)
    return {"sequence": label, "n_unknowns": N, "nnz": nnz, "bytes_per_iteration_min": bytes_min,
            "working_set_bytes": working_set,
            "fits_in_last_level_cache": None if llc is None else bool(working_set <= llc),
            "threads": all_threads, "seconds_per_iteration": best, "floor_seconds": floor, "ratio_to_floor": best / floor,
            "seconds_per_iteration_1_thread": per_thread[1],
            "ratio_1_thread": per_thread[1] / (bytes_min / bw["blas_1_thread"]),
            "same_size_bandwidth_bytes_per_s": bw_same,
            "ratio_same_size_bandwidth": best / (bytes_min / bw_same),
            "meets_target": bool(min(best / floor, per_thread[1] / (bytes_min / bw["blas_1_thread"])) <= BANDWIDTH_FLOOR_RATIO)}


def target_summary(records: list[dict], bandwidth: dict) -> dict:
    """Per sequence: T1 (recycled / cold matvecs, same preconditioner), T2 (default vs the
    fastest wall time), and T3 (CG iteration / bandwidth floor), each with ``meets``."""
    seqs: dict[str, dict] = {}
    for r in records:
        s = seqs.setdefault(r["sequence"], {"n_unknowns": r["n_unknowns"], "n_systems": r["n_systems"], "t1": []})
        if r["default"]:
            s["t2"] = {"default": r["strategy"], "default_seconds": r["seconds"],
                       "fastest": r["fastest_strategy"], "fastest_seconds": r["fastest_seconds"],
                       "default_vs_fastest": r["vs_fastest"], "meets": r["meets_t2"]}
        if "matvecs_vs_cold" in r:
            s["t1"].append({"recycled": r["strategy"], "cold": r["cold_strategy"], "matvecs": r["matvecs"],
                            "matvecs_vs_cold": r["matvecs_vs_cold"], "meets": r["meets_t1"],
                            "seconds_vs_cold": r["seconds"] / next(
                                q["seconds"] for q in records
                                if q["sequence"] == r["sequence"] and q["strategy"] == r["cold_strategy"])})
    for b in bandwidth["cg_iteration"]:
        if b["sequence"] in seqs:
            seqs[b["sequence"]]["t3"] = {"ratio_to_floor": b["ratio_to_floor"], "meets": b["meets_target"],
                                         "ratio_1_thread": b["ratio_1_thread"],
                                         "ratio_same_size_bandwidth": b["ratio_same_size_bandwidth"]}
    return seqs


def baseline_comparison(records: list[dict]) -> dict:
    """Per sequence: seconds per system of the default, the fastest and each strong baseline
    (``"absent"`` where its package is not installed, ``"not run"`` where it is left out, e.g.
    LU on a large 3D grid), the default's time over the fastest's (target <= 1.05), and its
    throughput per core over the best baseline's (target >= 1.5). Every strategy runs on one
    thread (``blas_threads=1``: numba, BLAS and MKL limited to 1), so seconds compare per core."""
    from kryflow.solvers import SOLVER_METHODS, STRONG_BASELINES

    out: dict[str, dict] = {}
    for r in records:
        seq = out.setdefault(r["sequence"], {"n_unknowns": r["n_unknowns"], "n_systems": r["n_systems"],
                                             "threads_per_solver": 1, "baselines": {}})
        per = r["seconds"] / max(r["n_systems"], 1)
        if r["default"]:
            seq.update(default=r["strategy"], default_seconds_per_system=per,
                       fastest=r["fastest_strategy"], fastest_seconds_per_system=r["fastest_seconds"] / r["n_systems"],
                       default_vs_fastest=r["vs_fastest"], meets_1_05=bool(r["converged"] and r["vs_fastest"] <= 1.05))
        if r["method"] in STRONG_BASELINES and r["strategy"] == f"{r['method']}+none":
            seq["baselines"][BASELINE_NAMES[r["method"]]] = per if r["converged"] else "not converged"
        seq["worst_true_relres"] = max(seq.get("worst_true_relres", 0.0), r["max_true_relres"])
        seq.setdefault("all_converged", True)
        seq["all_converged"] &= bool(r["converged"])
    for seq in out.values():
        for m, label in BASELINE_NAMES.items():
            if label not in seq["baselines"]:
                seq["baselines"][label] = ("absent" if not SOLVER_METHODS[m].available() else
                                           "n/a (SPD only)" if m == "cholmod" else "not run")
        timed = {k: v for k, v in seq["baselines"].items() if isinstance(v, float)}
        if timed and "default_seconds_per_system" in seq:
            best = min(timed, key=timed.get)
            seq.update(best_baseline=best, throughput_vs_best_baseline=timed[best] / seq["default_seconds_per_system"])
            seq["meets_1_5"] = bool(seq["throughput_vs_best_baseline"] >= 1.5)
    return out


def _darcy_systems(n: int, num: int, seed: int) -> tuple[list, list]:
    """SKR's Darcy case on n²: the systems and the input sketches, in sample order."""
    from kryflow.generation import input_sketch

    fam = build_family("darcy", n=n, coefficient="lognormal", sigma=1.0, forcing=1.0, relation="iid")
    systems, sketches = [], []
    for sample in fam.samples(num, seed):
        systems.append(fam.system(sample.fields["a"]))
        sketches.append(input_sketch(sample.fields))
    return systems, sketches


def skr_side_by_side(n: int, num: int, preconditioners, seed: int = 0, maxiter: int = 60000) -> list[dict]:
    """GCRO-DR(m=40, k=20) against GMRES(40) with the same preconditioner, on SKR's Darcy case,
    solved in sample order and in similarity order (a nearest-neighbour chain of input sketches,
    as SKR sorts). Per pair: total seconds, iterations and their ratios (GMRES / GCRO-DR: SKR's
    speed-up), next to SKR's Table 1."""
    from kryflow.generation import similarity_order
    from kryflow.solvers import SequenceSolver

    systems, sketches = _darcy_systems(n, num, seed)
    orders = {"unsorted": np.arange(len(systems)), "sorted": similarity_order(np.stack(sketches))}
    out = []
    for pre in preconditioners:
        for order_name, order in orders.items():
            row = {"n": n, "n_unknowns": n * n, "n_systems": num, "preconditioner": pre, "order": order_name}
            for label, method, kw in (("gmres", "gmres", {"restart": 40}),
                                      ("gcrodr", "gcrodr", {"restart": 40, "recycle_dim": 20})):
                solver = SequenceSolver(method, pre, maxiter=maxiter, on_nonconvergence="flag", **kw)
                t0 = time.perf_counter()
                for i in order:
                    solver(*systems[i], matrix_changed=True)
                row[f"{label}_seconds"] = time.perf_counter() - t0
                row[f"{label}_iterations"] = sum(r.iterations for r in solver.records)
                row[f"{label}_converged"] = all(r.converged for r in solver.records)
                row[f"{label}_max_true_relres"] = max(r.rel_residual for r in solver.records)
            row["time_ratio"] = row["gmres_seconds"] / row["gcrodr_seconds"]
            row["iteration_ratio"] = row["gmres_iterations"] / max(row["gcrodr_iterations"], 1)
            row["skr_table1_time_ratio"] = SKR_TABLE1.get(pre)
            out.append(row)
            print(f"  SKR {n}² {pre:6s} {order_name:8s}: GMRES(40) {row['gmres_iterations']:7d} it "
                  f"{row['gmres_seconds']:7.2f} s, GCRO-DR(40,20) {row['gcrodr_iterations']:7d} it "
                  f"{row['gcrodr_seconds']:7.2f} s: time x{row['time_ratio']:.2f}, iterations x{row['iteration_ratio']:.2f}"
                  f" (SKR Table 1: {row['skr_table1_time_ratio'] or '-'})", flush=True)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sequences, finishes within a minute")
    ap.add_argument("--out", default="results/benchmarks/solvers.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=None,
                    help="timing runs of the contenders (within 2x of the fastest, and the default); min kept")
    ap.add_argument("--min-window", type=float, default=3.0,
                    help="seconds: contenders of a short sequence are timed at least this / the fastest's time "
                         "times (up to 20), so that one load spike cannot decide the ranking")
    ap.add_argument("--only", default=None, help="comma-separated indices into the case list (re-runs)")
    ap.add_argument("--skip-skr", action="store_true", help="leave out the SKR side-by-side (GCRO-DR vs GMRES)")
    ap.add_argument("--mlflow", action="store_true", help="log the table to MLflow")
    ap.add_argument("--experiment", default="kryflow-solver-benchmark")
    args = ap.parse_args(argv)

    cases = QUICK if args.quick else FULL
    if args.only:
        cases = [cases[int(i)] for i in args.only.split(",")]
    records: list[dict] = []
    t_all = time.perf_counter()
    for name, params, num in cases:
        fam = build_family(name, relation="iid", **params)
        repeats = args.repeats if args.repeats is not None else 3
        t_seq = time.perf_counter()
        recs = benchmark_sequence(fam, num, args.seed, repeats=repeats, min_window=args.min_window)
        records += recs
        print(f"\n{recs[0]['sequence']}: {recs[0]['n_systems']} systems of {recs[0]['n_unknowns']} unknowns")
        print(f"  {'strategy':40s} {'matvecs':>8s} {'iters':>7s} {'seconds':>8s} {'/fastest':>8s} {'max relres':>10s}")
        for r in recs:
            mark = " <- default" if r["default"] else ""
            t1 = f"  T1 {r['matvecs_vs_cold']:.2f} x {r['cold_strategy']}" if "matvecs_vs_cold" in r else ""
            print(f"  {r['strategy']:40s} {r['matvecs']:8d} {r['iterations']:7d} {r['seconds']:8.3f} "
                  f"{r['vs_fastest']:8.2f} {r['max_true_relres']:10.1e}{mark}{t1}")
        default = next(r for r in recs if r["default"])
        cmp = baseline_comparison(recs)[recs[0]["sequence"]]
        print(f"  fastest: {default['fastest_strategy']}; default/fastest = {default['vs_fastest']:.2f}; "
              f"throughput vs best baseline ({cmp.get('best_baseline')}) = {cmp.get('throughput_vs_best_baseline', 0):.2f}; "
              f"{time.perf_counter() - t_seq:.0f} s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))
    comparison = baseline_comparison(records)
    out.with_name(out.stem + "_baselines.json").write_text(json.dumps(comparison, indent=1))
    if not args.skip_skr:
        skr = [row for n, num, pres in (SKR_QUICK if args.quick else SKR_FULL)
               for row in skr_side_by_side(n, num, pres, args.seed)]
        out.with_name(out.stem + "_skr.json").write_text(json.dumps(skr, indent=1))

    bw_detail = stream_bandwidth(detail=True)
    bw = bw_detail["best"]
    llc = last_level_cache_bytes()
    ratios = []
    seen = set()
    for name, params, _ in cases:
        fam = build_family(name, relation="iid", **params)
        label = sequence_label(fam)
        if fam.matrix_kind != "spd" or label in seen:
            continue  # CG applies to the SPD sequences only (advection-diffusion runs GMRES)
        seen.add(label)
        ratios.append(cg_iteration_ratio(first_spd_matrix(fam), label, bw_detail, llc))
    # reference grid whose matrix (63 MB) exceeds the last-level cache: the floor's own regime
    ref_n = 512 if args.quick else 1024
    ref = build_family("darcy", n=ref_n)
    ratios.append(cg_iteration_ratio(first_spd_matrix(ref), f"reference darcy-2d-{ref_n}", bw_detail, llc, iterations=50))
    side = {"stream_bandwidth_bytes_per_s": bw, "stream_bandwidth_detail": bw_detail, "stream_array_bytes": 256 * 2**20, "last_level_cache_bytes": llc,
            "target_ratio": BANDWIDTH_FLOOR_RATIO, "cg_iteration": ratios}
    out.with_name(out.stem + "_bandwidth.json").write_text(json.dumps(side, indent=1))
    summary = target_summary(records, side)
    out.with_name(out.stem + "_targets.json").write_text(json.dumps(summary, indent=1))
    print(f"\nmain-memory stream bandwidth {bw / 1e9:.1f} GB/s with {bw_detail['threads']} threads, "
          f"{bw_detail['blas_1_thread'] / 1e9:.1f} GB/s with 1; CG iteration / bandwidth floor (T3 <= {BANDWIDTH_FLOOR_RATIO}):")
    for r in ratios:
        print(f"  {r['sequence']:32s} N={r['n_unknowns']:8d} {r['seconds_per_iteration'] * 1e6:9.1f} us/it  "
              f"ratio {r['ratio_to_floor']:.2f}  (1 thread {r['ratio_1_thread']:.2f}; "
              f"vs same-size bandwidth {r['ratio_same_size_bandwidth']:.2f}, "
              f"in cache: {r['fits_in_last_level_cache']})")
    print("\nper sequence, seconds per system (1 thread each): default, fastest, baselines; ratios")
    for seq, c in comparison.items():
        base = ", ".join(f"{k} {v * 1e3:.2f} ms" if isinstance(v, float) else f"{k} {v}" for k, v in c["baselines"].items())
        print(f"  {seq:36s} default {c.get('default')} {c.get('default_seconds_per_system', 0) * 1e3:.2f} ms; "
              f"fastest {c.get('fastest')} {c.get('fastest_seconds_per_system', 0) * 1e3:.2f} ms; {base}; "
              f"default/fastest {c.get('default_vs_fastest', 0):.2f}; throughput x{c.get('throughput_vs_best_baseline', 0):.2f}"
              f" vs {c.get('best_baseline')}; worst relres {c['worst_true_relres']:.1e}")
    print(f"wrote {out} ({len(records)} records) in {time.perf_counter() - t_all:.1f} s")
    if args.mlflow:
        import mlflow

        mlflow.set_experiment(args.experiment)
        with mlflow.start_run(run_name="solver_benchmark"):
            keys = [k for k in dict.fromkeys(k for r in records for k in r) if k not in ("per_solve", "seconds_runs")]
            mlflow.log_table({k: [r.get(k) for r in records] for k in keys}, artifact_file="solver_benchmark.json")
            mlflow.log_artifact(str(out))
            mlflow.log_dict(side, "bandwidth.json")
            mlflow.log_dict(summary, "targets.json")
    return records


if __name__ == "__main__":
    main()
