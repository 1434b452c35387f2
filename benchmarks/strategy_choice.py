"""A learnt choice of solver strategy along a sequence (``solver.method: choose``, issue 18).

On i.i.d. sequences (rtol 1e-8, one thread), side by side in one process: every candidate
strategy on its own, and :class:`kryflow.solvers.StrategyChoice` over all of them (Tsallis-INF on
each solve's steady-state seconds). Reports the total seconds of each, the choice against the
best fixed strategy in hindsight and against the default (``method: auto``), and which strategy
the learner settled on. Writes ``results/benchmarks/strategy_choice.json``.

    python benchmarks/strategy_choice.py                     # about a minute on one core
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from kryflow.pdes import build_family  # noqa: E402
from kryflow.solvers import SOLVER_METHODS, SequenceSolver, StrategyChoice, default_strategy, warm_up  # noqa: E402
from kryflow.solvers._benchmark import solve_first_systems  # noqa: E402

RTOL = 1e-8
# (family, params, systems); strategies: the candidates (baselines only where installed)
CASES = [
    ("heat", {"n": 100, "scheme": "crank_nicolson"}, 440),
    ("darcy", {"n": 64, "coefficient": "lognormal"}, 300),
]
CANDIDATES = [
    {"method": "cg", "preconditioner": "jacobi"},
    {"method": "cg", "preconditioner": "gmg"},
    {"method": "cg", "preconditioner": "ssor", "omega": 1.8},
    {"method": "cholmod"},
]


def _label(s: dict) -> str:
    return "+".join(str(v) for v in s.values())


def _run(fam, systems: int, solver) -> dict:
    recs, wall = solve_first_systems(fam, systems, solver)
    return {"seconds": float(sum(r.seconds - r.setup_seconds for r in recs)), "wall_seconds": wall,
            "converged": all(r.converged for r in recs), "max_rel_residual": max(r.rel_residual for r in recs),
            "choices": [r.parameter for r in recs]}


def benchmark(name: str, params: dict, systems: int, seed: int) -> dict:
    fam = build_family(name, relation="iid", **params)
    warm_rule = {"warm_start": fam.solves_per_sample > 1}  # along a trajectory, as auto does
    cands = [{**c, **warm_rule} for c in CANDIDATES if SOLVER_METHODS[c["method"]].available()]
    fixed = {_label(c): _run(fam, systems, SequenceSolver(rtol=RTOL, maxiter=20000, **c)) for c in cands}
    choice = _run(fam, systems, StrategyChoice([{"rtol": RTOL, "maxiter": 20000, **c} for c in cands], seed=seed))
    default = _run(fam, systems, SequenceSolver(rtol=RTOL, **default_strategy(fam)))
    best = min(fixed, key=lambda k: fixed[k]["seconds"])
    late = collections.Counter(_label(cands[int(i)]) for i in choice["choices"][-systems // 5:])
    return {
        "sequence": f"{name} {params}", "systems": systems, "default_strategy": default_strategy(fam),
        "fixed_seconds": {k: v["seconds"] for k, v in fixed.items()}, "choice_seconds": choice["seconds"],
        "default_seconds": default["seconds"], "best_fixed": best,
        "choice_vs_best_fixed": choice["seconds"] / fixed[best]["seconds"],
        "choice_vs_default": choice["seconds"] / default["seconds"],
        "choices_last_fifth": dict(late), "all_converged": choice["converged"] and all(v["converged"] for v in
                                                                                      fixed.values()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/benchmarks/strategy_choice.json")
    args = ap.parse_args(argv)
    warm_up()
    for c in CANDIDATES:
        SOLVER_METHODS[c["method"]].warm_up()
    results = []
    for name, params, systems in CASES:
        res = benchmark(name, params, systems, args.seed)
        results.append(res)
        print(f"{res['sequence']}, {systems} systems: choice {res['choice_seconds']:.3f} s, best fixed "
              f"{res['best_fixed']} {res['fixed_seconds'][res['best_fixed']]:.3f} s "
              f"({res['choice_vs_best_fixed']:.2f}x), default {res['default_seconds']:.3f} s "
              f"({res['choice_vs_default']:.2f}x); last fifth: {res['choices_last_fifth']}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
