"""Learned SSOR relaxation along heat Crank–Nicolson sequences (issue 18, "Learning to Relax").

On i.i.d. heat CN sequences (rtol 1e-8, one thread) at each grid size, side by side in one process:

* SSOR-PCG at every ω of the learner's grid (the cost table: iterations and seconds of every
  system under every fixed ω), so the best fixed ω in hindsight is known;
* the learnt ω (Tsallis-INF, iteration feedback), its contextual variant (one learner per cell of
  the matrix's diagonal dominance) and the seconds-feedback variant, each run live;
* plain CG and kryflow's default strategy (``method: auto`` for the family).

Writes ``results/benchmarks/relaxation.json`` (per size: totals per strategy, the ratios the
issue asks for, the learner's regret against the best fixed ω after 50, 100, ... systems, and
replays of the learner on the measured cost table over several seeds) and
``relaxation.png`` (regret per system against sequence length, and total iterations).

    python benchmarks/relaxation.py --sizes 100,200 --systems 500     # about 10 minutes on one core
    python benchmarks/relaxation.py --sizes 100 --systems 100         # a quick look (a minute)
    python benchmarks/relaxation.py --sizes 400 --systems 500         # about 80 minutes on one core
    python benchmarks/relaxation.py --replay-from results/benchmarks/relaxation.json --replays 40 \
        --rates 8,16,32,64                                             # seed spread, no solves

``--replay-from`` reads the cost tables of earlier runs and replays the learner on them for
every seed and learning-rate constant (seconds; writes ``..._replay.json``): the spread of the
learnt ω's cost over seeds, which one live run cannot show.

Measured figures, with dates, are kept in ``benchmarks/README.md``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from kryflow.pdes import build_family  # noqa: E402
from kryflow.solvers import SequenceSolver, default_strategy, warm_up  # noqa: E402
from kryflow.solvers._bandit import TsallisINF, replay  # noqa: E402
from kryflow.solvers._benchmark import solve_first_systems  # noqa: E402
from kryflow.solvers._ssor import DEFAULT_OMEGA_GRID, SSORPreconditioner  # noqa: E402

RTOL = 1e-8
RATE = SSORPreconditioner.OPTIONS["omega_rate"].default  # the learner the workflow runs
CHECKPOINTS = (50, 100, 200, 300, 400, 500, 1000)


def run_sequence(fam, systems: int, **solver) -> dict:
    """Solve the first ``systems`` systems of ``fam``'s i.i.d. sequence (seed 0) with one
    :class:`SequenceSolver`; per-system iterations, seconds and the ω used."""
    s = SequenceSolver(rtol=RTOL, maxiter=20000, **solver)
    recs, wall = solve_first_systems(fam, systems, s)
    return {"iterations": [r.iterations for r in recs], "seconds": [r.seconds for r in recs],
            "omega": [r.parameter for r in recs], "converged": all(r.converged for r in recs),
            "max_rel_residual": max(r.rel_residual for r in recs), "wall_seconds": wall,
            "regret_estimate": recs[-1].regret_estimate,
            "context_cells": len(getattr(s.learner, "cells", {}))}


def _totals(run: dict) -> dict:
    return {"iterations": int(np.sum(run["iterations"])), "seconds": float(np.sum(run["seconds"])),
            "converged": run["converged"], "max_rel_residual": run["max_rel_residual"]}


def _regret_curve(paid: np.ndarray, table: np.ndarray, best: int) -> dict:
    regret = np.cumsum(paid) - np.cumsum(table[:, best])
    return {str(t): float(regret[t - 1] / t) for t in CHECKPOINTS if t <= len(paid)}


def benchmark_size(n: int, systems: int, grid: tuple[float, ...], replays: int) -> dict:
    fam = build_family("heat", n=n, scheme="crank_nicolson", relation="iid")
    out: dict = {"n": n, "unknowns": n * n, "systems": systems, "grid": list(grid), "rtol": RTOL}
    fixed = {w: run_sequence(fam, systems, method="cg", preconditioner="ssor", omega=w) for w in grid}
    table = np.array([fixed[w]["iterations"] for w in grid]).T  # (systems, arms)
    table_s = np.array([fixed[w]["seconds"] for w in grid]).T
    best = int(np.argmin(table.sum(axis=0)))
    best_s = int(np.argmin(table_s.sum(axis=0)))
    live = {
        "learned": run_sequence(fam, systems, method="cg", preconditioner="ssor", omega="learn"),
        "learned_contextual": run_sequence(fam, systems, method="cg", preconditioner="ssor", omega="learn",
                                           omega_context="dominance"),
        "learned_seconds": run_sequence(fam, systems, method="cg", preconditioner="ssor", omega="learn",
                                        omega_feedback="seconds"),
        "cg_plain": run_sequence(fam, systems, method="cg", preconditioner="none"),
    }
    strategy = default_strategy(fam)
    live["default"] = run_sequence(fam, systems, **strategy)
    out["default_strategy"] = strategy
    out["fixed"] = {f"{w:g}": _totals(fixed[w]) for w in grid}
    out["best_fixed_omega"] = {"iterations": grid[best], "seconds": grid[best_s]}
    out["live"] = {k: _totals(v) for k, v in live.items()}
    bi, bs = float(table[:, best].sum()), float(table_s[:, best_s].sum())
    ratios = {}
    for k in ("learned", "learned_contextual", "learned_seconds"):
        it, sec = out["live"][k]["iterations"], out["live"][k]["seconds"]
        ratios[k] = {"iterations_vs_best_fixed": it / bi, "seconds_vs_best_fixed": sec / bs,
                     "iterations_vs_omega_1": it / out["fixed"]["1"]["iterations"] if 1.0 in grid else None,
                     "iterations_vs_omega_1.5": it / out["fixed"]["1.5"]["iterations"] if 1.5 in grid else None,
                     "seconds_vs_default": sec / out["live"]["default"]["seconds"]}
        paid = np.asarray(live[k]["iterations"], dtype=float)
        ratios[k]["regret_per_system"] = _regret_curve(paid, table, best)
        ratios[k]["regret_estimate_at_end"] = live[k]["regret_estimate"]
        ratios[k]["context_cells"] = live[k]["context_cells"]  # contextual: cells of the feature met
    out["ratios"] = ratios
    lr = ratios["learned"]
    out["target"] = {
        "within_1.1x_best_fixed": lr["iterations_vs_best_fixed"] <= 1.1,
        "better_than_omega_1_and_1.5": bool(lr["iterations_vs_omega_1"] < 1 and lr["iterations_vs_omega_1.5"] < 1),
        "ssor_pcg_best_fixed_seconds_vs_default": bs / out["live"]["default"]["seconds"],
    }
    # the learner replayed on the measured table (seconds: the same as live, minus solver noise)
    reps = _replays(table, grid, replays, RATE)
    out["replay"] = {
        "seeds": replays,
        "cost_vs_best_fixed": [r["cost"] / r["best_fixed"] for r in reps],
        "regret_per_system": {str(t): float(np.mean([r["regret"][t - 1] / t for r in reps]))
                              for t in CHECKPOINTS if t <= systems},
    }
    out["omega_choices_learned"] = live["learned"]["omega"]
    out["cost_table_iterations"] = table.tolist()  # (systems, arms): each fixed ω on each system
    return out


def figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for res in results:
        curve = res["ratios"]["learned"]["regret_per_system"]
        a.plot([int(t) for t in curve], list(curve.values()), "o-", label=f"{res['n']}² live")
        rep = res["replay"]["regret_per_system"]
        a.plot([int(t) for t in rep], list(rep.values()), "--", color=a.lines[-1].get_color(),
               label=f"{res['n']}² replay (mean of {res['replay']['seeds']})")
    a.set(xlabel="systems solved", ylabel="regret per system (iterations)",
          title="Learnt ω against the best fixed ω")
    a.axhline(0, color="0.6", lw=0.8)
    a.legend(fontsize=8)
    width = 0.8 / max(len(results), 1)
    names = ["ω=1", "ω=1.5", "best fixed", "learnt", "contextual", "plain CG"]
    for j, res in enumerate(results):
        best = f"{res['best_fixed_omega']['iterations']:g}"
        vals = [res["fixed"]["1"]["iterations"], res["fixed"]["1.5"]["iterations"], res["fixed"][best]["iterations"],
                res["live"]["learned"]["iterations"], res["live"]["learned_contextual"]["iterations"],
                res["live"]["cg_plain"]["iterations"]]
        b.bar(np.arange(len(names)) + j * width, vals, width, label=f"{res['n']}²")
    b.set_xticks(np.arange(len(names)) + width * (len(results) - 1) / 2, names, rotation=20)
    b.set(yscale="log", ylabel="total CG iterations", title="SSOR-PCG over the sequence")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _replays(table: np.ndarray, grid, seeds: int, rate: float) -> list[dict]:
    """:func:`replay` of a fresh learner (constant ``rate``) on ``table`` for seeds 0 .. seeds-1."""
    return [replay(table, TsallisINF(grid, seed, rate)) for seed in range(seeds)]


def seed_spread(paths: list[str], seeds: int, rates: list[float]) -> list[dict]:
    """Per stored size and learning-rate constant: the learner's cost / the best fixed ω's on the
    measured cost table, over ``seeds`` seeds (median, worst, how many above 1.1)."""
    out = []
    for path in paths:
        for res in json.loads(Path(path).read_text()):
            table = np.asarray(res["cost_table_iterations"], dtype=float)
            totals = table.sum(axis=0)
            row = {"source": path, "n": res["n"], "systems": int(table.shape[0]), "seeds": seeds,
                   "column_totals_vs_best": (totals / totals.min()).tolist(), "rates": {}}
            for rate in rates:
                c = np.array([r["cost"] / r["best_fixed"] for r in _replays(table, res["grid"], seeds, rate)])
                st = row["rates"][f"{rate:g}"] = {"median": float(np.median(c)), "worst": float(c.max()),
                                                  "best": float(c.min()), "above_1.1": int(np.sum(c > 1.1))}
                print(f"{res['n']}², rate {rate:g}: median {st['median']:.3f}, worst {st['worst']:.3f}, "
                      f"{st['above_1.1']} of {seeds} seeds above 1.1x the best fixed ω", flush=True)
            out.append(row)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,200,400", help="comma-separated grid sizes n (n x n cells)")
    ap.add_argument("--systems", type=int, default=500)
    ap.add_argument("--replays", type=int, default=20, help="seeds of the learner replayed on each cost table")
    ap.add_argument("--out", default="results/benchmarks/relaxation.json")
    ap.add_argument("--replay-from", nargs="+", metavar="JSON", help="replay stored cost tables only (no solves)")
    ap.add_argument("--rates", default=f"{RATE:g}", help="--replay-from: comma-separated learning-rate constants")
    args = ap.parse_args(argv)
    if args.replay_from:
        spread = seed_spread(args.replay_from, args.replays, [float(v) for v in args.rates.split(",")])
        out = Path(args.out).with_name(Path(args.out).stem + "_replay.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(spread, indent=1))
        print(f"wrote {out}")
        return 0
    warm_up()
    results = []
    for n in (int(v) for v in args.sizes.split(",")):
        t0 = time.perf_counter()
        res = benchmark_size(n, args.systems, DEFAULT_OMEGA_GRID, args.replays)
        res["benchmark_seconds"] = time.perf_counter() - t0
        results.append(res)
        lr = res["ratios"]["learned"]
        print(f"heat CN {n}², {args.systems} systems: best fixed ω {res['best_fixed_omega']['iterations']:g}; learnt "
              f"{lr['iterations_vs_best_fixed']:.3f}x its iterations, {lr['iterations_vs_omega_1']:.3f}x ω=1, "
              f"{lr['iterations_vs_omega_1.5']:.3f}x ω=1.5; contextual "
              f"{res['ratios']['learned_contextual']['iterations_vs_best_fixed']:.3f}x; best SSOR-PCG "
              f"{res['target']['ssor_pcg_best_fixed_seconds_vs_default']:.2f}x the default's seconds "
              f"({res['default_strategy']['method']}); {res['benchmark_seconds']:.0f} s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    figure(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
