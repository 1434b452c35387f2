"""Default solver strategies per PDE family and a same-systems benchmark of strategies."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ._warm_up import warm_up
from ._methods import SOLVER_METHODS
from ._sequence import SequenceSolver

__all__ = ["default_strategy", "default_strategies", "benchmark_sequence", "add_targets", "sequence_label",
           "RECYCLED_MATVEC_RATIO", "DEFAULT_WALL_RATIO", "STRONG_BASELINES"]

RECYCLED_MATVEC_RATIO = 0.5  # a recycled strategy pays off: matvecs <= this x its cold start's
DEFAULT_WALL_RATIO = 1.05  # the default strategy is right: wall time <= this x the fastest's


#: the strongest solvers from elsewhere that kryflow's default is measured against
STRONG_BASELINES = ("cholmod", "pardiso", "pyamg", "direct")


def _available(method: str) -> bool:
    return SOLVER_METHODS[method].available()


def default_strategy(family: Any) -> dict[str, Any]:
    """The ``{"method", "preconditioner"}`` (and ``"warm_start": False`` where a cold start is
    faster) the workflow uses for ``family`` by default (``auto``).

    The rule, by matrix kind, dimension, unknowns N and solves per matrix (the fastest converged
    strategy of ``benchmarks/solvers.py`` at the measured sizes, one thread per solver, rtol
    1e-8; the thresholds sit between measured sizes, ``benchmarks/README.md`` has the figures):

    * Nonsymmetric (advection–diffusion): GMRES with the geometric multigrid ``gmg`` from
      N >= 32² (2D) / 12³ (3D), where its V-cycle beats LU's fill-in and PARDISO; sparse LU below.
    * SPD, several solves per matrix (heat: every time step reuses one matrix): in 2D one sparse
      Cholesky per sample (``cholmod`` where scikit-sparse is installed, else LU) up to 128²,
      whose triangular solves are cheaper than a V-cycle there (as fast at 128²); beyond, the
      factor's fill makes each solve cost more than GMG-PCG's 5-6 iterations from the
      ``start_window`` start (1.45x at 160², 1.6x at 192²); in 3D Jacobi-PCG up to 32³ (cheap
      iterations on a well-conditioned matrix) and GMG-PCG beyond.
    * SPD, several matrices in turn per step (Navier–Stokes: two momentum components and a pressure
      increment, each fixed per sample; ``family.sequence_keys``): in 2D one CHOLMOD factorization
      per matrix up to 80², GMG-PCG from the window start beyond (the momentum matrices take 1-2
      iterations, so GMG overtakes the factors earlier than on heat: tied at 80², 1.3x at 96², 1.5x at
      128², measured with three obstacles).
    * SPD, one solve per matrix (Darcy): small 2D grids are solved fastest by CHOLMOD (up to
      72², where its supernodal factorization is still cheaper than a V-cycle's set-up; without
      it Jacobi-PCG up to 56²); small 3D grids by Jacobi-PCG (up to 32³); everything larger by
      GMG-PCG, whose iteration count stays at 8-9 whatever N (an AMG-like convergence for a
      set-up of a few V-cycles, no aggregation).

    Recycling (deflated or spectral rcg, GCRO-DR) is in no default: with GMG a solve takes 8-10
    iterations, too few for a recycle space to pay for itself (measured, benchmarks/README.md).

    Warm start (each solve from the previous solution) only where the previous solution is
    close: along a heat trajectory, or a ``relation: drift`` path. Between i.i.d. samples the
    previous solution is an independent field, a worse start than zero (on SKR's 200² Darcy
    sequence it cost GMG-PCG 11 more iterations over 40 systems, 1.13x the cold wall time).

    **Arguments:**
        family: a PDE family (``name``, ``dim``, ``shape``, ``matrix_kind``, ``solves_per_sample``).

    **Returns:** ``{"method": ..., "preconditioner": ...}``.
    """
    strategy = _fastest_kind(family)
    warm = getattr(family, "solves_per_sample", 1) > 1 or getattr(family, "params", {}).get("relation") == "drift"
    if not warm and SOLVER_METHODS[strategy["method"]].uses_preconditioner:  # an iterative method
        strategy["warm_start"] = False
    return strategy


def _fastest_kind(family: Any) -> dict[str, Any]:
    """:func:`default_strategy`'s method and preconditioner."""
    n = int(np.prod(family.shape))
    dim = family.dim
    if family.matrix_kind != "spd":
        if dim == 2 and n < 32 * 32 or dim == 3 and n < 12**3:
            return {"method": "direct", "preconditioner": "none"}
        return {"method": "gmres", "preconditioner": "gmg"}
    if getattr(family, "sequence_keys", ()) and dim == 2:
        if n <= 80 * 80:
            return {"method": "cholmod" if _available("cholmod") else "direct", "preconditioner": "none"}
        return {"method": "cg", "preconditioner": "gmg"}
    if getattr(family, "solves_per_sample", 1) > 1:
        if dim == 2 and n <= 128 * 128:
            return {"method": "cholmod" if _available("cholmod") else "direct", "preconditioner": "none"}
        if dim == 3 and n <= 32**3:
            return {"method": "cg", "preconditioner": "jacobi"}
        return {"method": "cg", "preconditioner": "gmg"}
    if dim == 2 and _available("cholmod") and n <= 72 * 72:
        return {"method": "cholmod", "preconditioner": "none"}
    if dim == 2 and n <= 56 * 56 or dim == 3 and n <= 32**3:
        return {"method": "cg", "preconditioner": "jacobi"}
    return {"method": "cg", "preconditioner": "gmg"}


def _baselines(family: Any) -> list[dict[str, Any]]:
    """The strong baselines that are installed and affordable for ``family``: CHOLMOD (SPD),
    PARDISO, pyamg and LU; direct factorizations only where 3D fill-in stays affordable."""
    n = int(np.prod(family.shape))
    direct_ok = family.dim == 2 or n <= 24**3
    factor_ok = family.dim == 2 or n <= 64**3  # CHOLMOD/PARDISO: seconds per 64³ system, still run
    out = []
    for method in STRONG_BASELINES:
        if not _available(method) or method == "cholmod" and family.matrix_kind != "spd":
            continue
        if method == "direct" and not direct_ok or method in ("cholmod", "pardiso") and not factor_ok:
            continue
        out.append({"method": method, "preconditioner": "none"})
    return out


def default_strategies(family: Any) -> list[dict[str, Any]]:
    """Strategies compared by :func:`benchmark_sequence` for ``family`` (matrix kind aware).

    Each kind gets its cold and warm-started baselines per preconditioner, the recycled methods
    at their default size and at the size that paid best in the measurements
    (``benchmarks/README.md``): rcg with k = 32 without a strong preconditioner (past that the
    k-matvec A·W rebuild per new matrix eats what deflation saves), the spectral mode with room
    for many vectors (it never rebuilds, so it keeps improving along the sequence), GCRO-DR with
    a larger (k, m) unpreconditioned and a moderate one with ILU; the geometric multigrid
    (cold, warm, recycled, and with the interpolation and the precision ``auto`` does not pick); scipy's
    GCROT(m, k); where one matrix serves several solves and the default is iterative, the default
    with ``start_window: 1`` (the previous solution as the start instead of the combination of
    earlier ones); and the
    strong baselines that are installed (:data:`STRONG_BASELINES`: CHOLMOD, PARDISO, pyamg, LU;
    LU not on large 3D grids). On grids of more than 50,000 unknowns the unpreconditioned and
    spectral strategies are left out (each takes minutes there and is far from the fastest).

    **Returns:** a list of :class:`SequenceSolver` argument dicts.
    """
    large = int(np.prod(family.shape)) > 50_000
    if family.matrix_kind == "spd":
        s = [
            {"method": "cg", "preconditioner": "none", "warm_start": False},
            {"method": "cg", "preconditioner": "none"},
            {"method": "rcg", "preconditioner": "none"},
            {"method": "rcg", "preconditioner": "none", "recycle_dim": 32},
            {"method": "cg", "preconditioner": "jacobi", "warm_start": False},
            {"method": "cg", "preconditioner": "jacobi"},
            {"method": "rcg", "preconditioner": "jacobi"},
            {"method": "rcg", "preconditioner": "jacobi", "recycle_dim": 32},
            {"method": "rcg", "preconditioner": "jacobi", "recycle_mode": "spectral",
             "recycle_dim": 256 if family.dim == 3 else 64},
            {"method": "cg", "preconditioner": "amg", "warm_start": False},
            {"method": "cg", "preconditioner": "amg"},
            {"method": "cg", "preconditioner": "amg", "amg_reuse": "aggregates"},
            {"method": "cg", "preconditioner": "amg", "amg_reuse": "lagged"},
            {"method": "rcg", "preconditioner": "amg"},
            {"method": "rcg", "preconditioner": "amg", "adaptive": False},
            {"method": "cg", "preconditioner": "gmg", "warm_start": False},
            {"method": "cg", "preconditioner": "gmg"},
            {"method": "cg", "preconditioner": "gmg", "gmg_interpolation": "operator" if family.dim == 3 else "linear"},
            {"method": "cg", "preconditioner": "gmg", "gmg_precision": "double"},
            {"method": "rcg", "preconditioner": "gmg"},
            {"method": "scipy_gcrotmk", "preconditioner": "none"},
        ]
    else:
        s = [
            {"method": "gmres", "preconditioner": "none", "warm_start": False},
            {"method": "gmres", "preconditioner": "none"},
            {"method": "gcrodr", "preconditioner": "none"},
            {"method": "gcrodr", "preconditioner": "none", "recycle_dim": 64, "restart": 128},
            {"method": "gmres", "preconditioner": "ilu", "warm_start": False},
            {"method": "gmres", "preconditioner": "ilu"},
            {"method": "gcrodr", "preconditioner": "ilu"},
            {"method": "gcrodr", "preconditioner": "ilu", "recycle_dim": 16, "restart": 60},
            {"method": "gmres", "preconditioner": "amg", "warm_start": False},
            {"method": "gmres", "preconditioner": "amg"},
            {"method": "gcrodr", "preconditioner": "amg"},
            {"method": "gmres", "preconditioner": "gmg", "warm_start": False},
            {"method": "gmres", "preconditioner": "gmg"},
            {"method": "gmres", "preconditioner": "gmg", "gmg_sweeps": 2},
            {"method": "gcrodr", "preconditioner": "gmg"},
            {"method": "scipy_gcrotmk", "preconditioner": "none"},
        ]
    if large:
        s = [x for x in s if x["preconditioner"] != "none" and x.get("recycle_mode") != "spectral"]
    default = default_strategy(family)
    s += [b for b in _baselines(family) if b not in s]
    if default not in s:
        s.append(default)
    if getattr(family, "solves_per_sample", 1) > 1 and default.get("warm_start", True) \
            and SOLVER_METHODS[default["method"]].uses_preconditioner:
        s.append({**default, "start_window": 1})  # the default with the plain previous-solution start
    return s


_BASIC = ("method", "preconditioner", "warm_start")


def _label(strategy: dict[str, Any]) -> str:
    """e.g. "cg+amg", "cg+none-cold", "rcg+none[recycle_dim=16]"."""
    extra = "" if strategy.get("warm_start", True) else "-cold"
    opts = ",".join(f"{k}={v}" for k, v in sorted(strategy.items()) if k not in _BASIC)
    return f"{strategy['method']}+{strategy.get('preconditioner', 'none')}{extra}" + (f"[{opts}]" if opts else "")


def _is_default(strategy: dict[str, Any], default: dict[str, Any]) -> bool:
    """Same method, preconditioner and warm start as the default, and no extra options."""
    if set(strategy) - set(_BASIC):
        return False
    norm = {"warm_start": True, "preconditioner": "none"}
    return all(strategy.get(k, norm.get(k)) == default.get(k, norm.get(k)) for k in _BASIC)


def _run(strategy: dict[str, Any], systems: list[tuple], rtol: float, maxiter: int) -> tuple[float, Any]:
    solver = SequenceSolver(**{"rtol": rtol, "maxiter": maxiter, **strategy, "on_nonconvergence": "flag"})
    t0 = time.perf_counter()
    for A, b, changed in systems:
        solver(A, b, matrix_changed=changed)
    return time.perf_counter() - t0, solver


def sequence_label(family: Any) -> str:
    """e.g. "darcy-2d-128-binary", "heat-2d-128-crank_nicolson", "advection_diffusion-2d-128"."""
    params = getattr(family, "params", {})
    return f"{family.name}-{family.dim}d-{family.shape[0]}" + (
        f"-{params['coefficient']}" if "coefficient" in params and family.name == "darcy" else ""
    ) + (f"-{params['scheme']}" if family.name == "heat" else "")


def benchmark_sequence(family: Any, num_samples: int, seed: int, strategies: list[dict] | None = None,
                       rtol: float = 1e-8, maxiter: int = 20000, repeats: int = 1,
                       contender_factor: float = 2.0, matvec_ratio: float = RECYCLED_MATVEC_RATIO,
                       wall_ratio: float = DEFAULT_WALL_RATIO, min_window: float = 0.0,
                       max_repeats: int = 20) -> list[dict[str, Any]]:
    """Run every strategy on the same systems of ``family.samples(num_samples, seed)``.

    The systems are generated once (right-hand sides of time-dependent families follow the
    sparse-LU trajectory) and replayed to a fresh :class:`SequenceSolver` per strategy, with
    ``on_nonconvergence="flag"``. Each strategy dict holds SequenceSolver arguments. ``maxiter``
    (per solve; GMRES-type: inner iterations) is high because unpreconditioned CG on a large
    lognormal Darcy sequence needs thousands of iterations per system: with too low a limit CG
    and its recycled variant both stop short and their matvec ratio means nothing.

    Timing: every strategy runs once; with ``repeats > 1`` the *contenders* (strategies within
    ``contender_factor`` x the fastest first-round time, and the default) run ``repeats - 1``
    more times, interleaved round-robin so that a load spike on the shared machine hits them
    alike, and ``seconds`` is the minimum (``seconds_runs`` lists every run). Slow strategies
    are not repeated: noise cannot bring them within ``wall_ratio`` of the fastest. A short
    sequence is timed over a short window, where a load spike weighs more: with ``min_window``
    (seconds) the contenders run at least ``min_window / fastest`` times (up to ``max_repeats``).

    **Returns:**
        One record per strategy: ``sequence, strategy, method, preconditioner, warm_start,
        recycle_dim, n_unknowns, n_systems, matvecs, iterations, seconds, seconds_runs,
        max_true_relres, converged, default, setup_seconds`` (of the first run), ``per_solve``
        (list of ``{iterations, matvecs, rel_residual, seconds, setup_seconds, recycle_dim}``),
        plus the comparisons of :func:`add_targets` (with ``matvec_ratio`` and ``wall_ratio``).
    """
    strategies = default_strategies(family) if strategies is None else list(strategies)
    warm_up(strategies)  # load the compiled kernels first: the first strategy must not pay for it
    for strat in strategies:  # nor for loading a baseline's library (MKL, CHOLMOD): one-time costs
        SOLVER_METHODS[strat["method"]].warm_up()
    systems = _sequence_systems(family, num_samples, seed)
    default = default_strategy(family)
    runs: list[list[float]] = []
    solvers = []
    for strat in strategies:
        sec, solver = _run(strat, systems, rtol, maxiter)
        runs.append([sec])
        solvers.append(solver)
    fastest = min((r[0] for r in runs), default=0.0)
    if fastest > 0 and min_window > 0:
        repeats = max(int(repeats), min(int(max_repeats), math.ceil(min_window / fastest)))
    if repeats > 1 and strategies:
        again = [i for i, s in enumerate(strategies)
                 if runs[i][0] <= contender_factor * fastest or _is_default(s, default)]
        for _ in range(int(repeats) - 1):
            for i in again:
                runs[i].append(_run(strategies[i], systems, rtol, maxiter)[0])
    seq = sequence_label(family)
    out = [_record(seq, strat, solver, secs, systems, _is_default(strat, default))
           for strat, solver, secs in zip(strategies, solvers, runs)]
    add_targets(out, matvec_ratio=matvec_ratio, wall_ratio=wall_ratio)
    return out


def solve_first_systems(family: Any, systems: int, solver: Any, seed: int = 0) -> tuple[list, float]:
    """Solve the first ``systems`` systems of ``family``'s sequence (whole samples, seed ``seed``)
    with ``solver`` (a :class:`SequenceSolver` or anything called like one that keeps
    ``records``); returns the first ``systems`` records and the wall seconds of the samples."""
    per_sample = int(family.solves_per_sample)
    t0 = time.perf_counter()
    for sample in family.samples(-(-systems // per_sample), seed=seed):
        sample.solve(solver)
    return solver.records[:systems], time.perf_counter() - t0


def _sequence_systems(family: Any, num_samples: int, seed: int) -> list[tuple]:
    """The ``(A, b, matrix_changed)`` of every solve of the sequence, in order.

    With one solve per sample no solution feeds a later system, so none is computed (LU on a
    64³ grid takes minutes); otherwise (heat) each right-hand side follows the trajectory of a
    sparse LU (2D) or of GMG-PCG to rtol 1e-12 (3D, where LU's fill-in is prohibitive).
    """
    if getattr(family, "solves_per_sample", 1) == 1:
        capture = None
    elif family.dim == 2:
        capture = SequenceSolver("direct", rtol=1.0 - 1e-12, on_nonconvergence="flag")
    else:
        capture = SequenceSolver("cg", "gmg", rtol=1e-12, on_nonconvergence="flag")
    systems: list[tuple] = []

    def record(A, b, *, matrix_changed):
        systems.append((A, b, matrix_changed))
        return np.zeros(b.shape[0]) if capture is None else capture(A, b, matrix_changed=matrix_changed)

    for sample in family.samples(num_samples, seed):
        sample.solve(record)
    return systems


def _record(seq: str, strat: dict[str, Any], solver: SequenceSolver, secs: list[float], systems: list[tuple],
            default: bool) -> dict[str, Any]:
    """The benchmark record of one strategy (see :func:`benchmark_sequence`)."""
    recs = solver.records
    return {
        "sequence": seq,
        "strategy": _label(strat),
        "method": solver.method,
        "preconditioner": solver.preconditioner,
        "warm_start": solver.warm_start,
        "recycle_dim": solver.recycle_dim if solver.solver_method.recycles else 0,
        "n_unknowns": int(systems[0][1].shape[0]) if systems else 0,
        "n_systems": len(systems),
        "matvecs": int(sum(r.matvecs for r in recs)),
        "iterations": int(sum(r.iterations for r in recs)),
        "seconds": float(min(secs)),
        "seconds_runs": [float(t) for t in secs],
        "max_true_relres": float(max((r.rel_residual for r in recs), default=0.0)),
        "converged": bool(all(r.converged for r in recs)),
        "default": default,
        "setup_seconds": float(sum(r.setup_seconds for r in recs)),
        "per_solve": [
            {"iterations": r.iterations, "matvecs": r.matvecs, "rel_residual": r.rel_residual,
             "seconds": r.seconds, "setup_seconds": r.setup_seconds, "recycle_dim": r.recycle_dim}
            for r in recs
        ],
    }


def add_targets(records: list[dict[str, Any]], *, matvec_ratio: float = RECYCLED_MATVEC_RATIO,
                wall_ratio: float = DEFAULT_WALL_RATIO) -> None:
    """Annotate one sequence's records (in place) with how strategies compare.

    **Arguments:**
        records: :func:`benchmark_sequence` records of one sequence.
        matvec_ratio: a recycled record meets ``meets_t1`` when both it and its cold start
            converged and its matvecs are at most this times the cold start's.
        wall_ratio: the default record meets ``meets_t2`` when it converged within this times the
            fastest wall time.

    Every record gets ``fastest_strategy, fastest_seconds, vs_fastest`` (seconds / fastest;
    only converged records compete: a fast record that missed the tolerance does not count);
    the default record ``meets_t2``; a record of a method with a ``cold_start`` (``rcg``: ``cg``,
    ``gcrodr``: ``gmres``), paired with the cold start of the same preconditioner
    (``<cold>+<preconditioner>-cold``), gets ``cold_strategy, matvecs_vs_cold, meets_t1``.
    """
    ok = [r for r in records if r["converged"]] or records
    if not ok:
        return
    fastest = min(ok, key=lambda r: r["seconds"])
    by_label = {r["strategy"]: r for r in records}
    for r in records:
        r["fastest_strategy"] = fastest["strategy"]
        r["fastest_seconds"] = fastest["seconds"]
        r["vs_fastest"] = r["seconds"] / fastest["seconds"] if fastest["seconds"] > 0 else 1.0
        if r["default"]:
            r["meets_t2"] = bool(r["converged"] and r["vs_fastest"] <= wall_ratio)
        cold_method = SOLVER_METHODS[r["method"]].cold_start if r["method"] in SOLVER_METHODS else None
        cold = by_label.get(f"{cold_method}+{r['preconditioner']}-cold") if cold_method else None
        if cold is not None and cold["matvecs"] > 0:
            r["cold_strategy"] = cold["strategy"]
            r["matvecs_vs_cold"] = r["matvecs"] / cold["matvecs"]
            # both must converge: two solvers stopped by maxiter compare nothing
            r["meets_t1"] = bool(r["converged"] and cold["converged"] and r["matvecs_vs_cold"] <= matvec_ratio)
