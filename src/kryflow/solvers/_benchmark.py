"""Default solver strategies per PDE family and a same-systems benchmark of strategies."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._sequence import SequenceSolver

__all__ = ["default_strategy", "default_strategies", "benchmark_sequence"]


def default_strategy(family: Any) -> dict[str, Any]:
    """The ``{"method", "preconditioner"}`` the workflow uses for ``family`` by default.

    Chosen from benchmark_sequence measurements on a shared 2-core machine (1 BLAS thread,
    rtol 1e-8, drift sequences, wall time per solve):

    * Darcy 2D (16-sample drift sequences, best of 4, two runs): 32² Jacobi-PCG 1.2-2.5 ms,
      sparse LU 1.7-1.9 ms, AMG-PCG 7-8 ms (pyamg's Python overhead dominates small grids);
      64² Jacobi 7-12 ms, LU 11-18 ms; 96² Jacobi 18.6 ms, LU 21.4 ms, AMG 28 ms.
      128²: Jacobi-PCG, LU and AMG-PCG tie (~90 ms). 256²: AMG-PCG 0.30 s, Jacobi-PCG
      0.51 s, LU 0.93 s. Timings on the shared machine vary up to 2x run to run.
    * Darcy 3D: 12³ Jacobi-PCG 1.7 ms vs LU 15 ms; 32³ Jacobi-PCG 0.095 s, AMG-PCG 0.30 s,
      LU 9.6 s.
    * Heat (CN, 32² and 128²): one LU per sample serves every step: 0.25 / 8 ms per step,
      >4x faster than any Krylov strategy.
    * Advection–diffusion 2D 48²: LU 3.6 ms vs ILU-GMRES 7 ms; 128²: LU 95 ms,
      AMG-GMRES 104 ms, ILU-GMRES 1.1 s.

    Recycled solvers cut matvecs (benchmarks/solvers.py) but with 5-/7-point stencils a
    matvec is cheaper than the 2k extra vector passes per iteration that deflation needs,
    so they are not the wall-time default on any built-in sequence.
    """
    n = int(np.prod(family.shape))
    dim = family.dim
    if family.name == "heat":
        if dim == 2 and n <= 512 * 512 or dim == 3 and n <= 16**3:
            return {"method": "direct", "preconditioner": "none"}
        return {"method": "cg", "preconditioner": "jacobi" if n <= 48**3 else "amg"}
    if family.matrix_kind == "spd":
        if dim == 2 and n <= 128 * 128 or dim == 3 and n <= 48**3:
            return {"method": "cg", "preconditioner": "jacobi"}
        return {"method": "cg", "preconditioner": "amg"}
    if dim == 2 and n <= 128 * 128 or dim == 3 and n <= 16**3:
        return {"method": "direct", "preconditioner": "none"}
    return {"method": "gmres", "preconditioner": "amg"}


def default_strategies(family: Any) -> list[dict[str, Any]]:
    """Strategies compared by :func:`benchmark_sequence` for ``family`` (matrix kind aware)."""
    if family.matrix_kind == "spd":
        s = [
            {"method": "cg", "preconditioner": "none", "warm_start": False},
            {"method": "cg", "preconditioner": "none"},
            {"method": "rcg", "preconditioner": "none"},
            {"method": "rcg", "preconditioner": "none", "recycle_dim": 16},
            {"method": "cg", "preconditioner": "jacobi", "warm_start": False},
            {"method": "cg", "preconditioner": "jacobi"},
            {"method": "rcg", "preconditioner": "jacobi"},
            {"method": "rcg", "preconditioner": "jacobi", "recycle_dim": 16},
            {"method": "cg", "preconditioner": "amg", "warm_start": False},
            {"method": "cg", "preconditioner": "amg"},
            {"method": "cg", "preconditioner": "amg", "amg_reuse": "aggregates"},
            {"method": "cg", "preconditioner": "amg", "amg_reuse": "lagged"},
            {"method": "rcg", "preconditioner": "amg"},
            {"method": "rcg", "preconditioner": "amg", "adaptive": False},
            {"method": "scipy_gcrotmk", "preconditioner": "none"},
        ]
    else:
        s = [
            {"method": "gmres", "preconditioner": "none", "warm_start": False},
            {"method": "gmres", "preconditioner": "none"},
            {"method": "gcrodr", "preconditioner": "none"},
            {"method": "gcrodr", "preconditioner": "none", "recycle_dim": 16},
            {"method": "gmres", "preconditioner": "ilu", "warm_start": False},
            {"method": "gmres", "preconditioner": "ilu"},
            {"method": "gcrodr", "preconditioner": "ilu"},
            {"method": "gmres", "preconditioner": "amg", "warm_start": False},
            {"method": "gmres", "preconditioner": "amg"},
            {"method": "gcrodr", "preconditioner": "amg"},
            {"method": "scipy_gcrotmk", "preconditioner": "none"},
        ]
    if family.dim == 2 or int(np.prod(family.shape)) <= 24**3:
        # 3D LU fill-in: 9.6 s per 32³ solve measured, so it is left out of larger 3D runs
        s.append({"method": "direct", "preconditioner": "none"})
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


def benchmark_sequence(family: Any, num_samples: int, seed: int, strategies: list[dict] | None = None,
                       rtol: float = 1e-8, maxiter: int = 5000, repeats: int = 1) -> list[dict[str, Any]]:
    """Run every strategy on the same systems of ``family.samples(num_samples, seed)``.

    The systems are generated once (right-hand sides of time-dependent families follow the
    sparse-LU trajectory) and replayed to a fresh :class:`SequenceSolver` per strategy, with
    ``on_nonconvergence="flag"``. Each strategy dict holds SequenceSolver arguments.
    With ``repeats > 1`` every strategy runs that many times from scratch and ``seconds`` is
    the minimum (wall times on a shared machine are noisy; counts are identical per repeat).

    **Returns:**
        One record per strategy: ``sequence, strategy, method, preconditioner, warm_start,
        n_unknowns, n_systems, matvecs, iterations, seconds, max_true_relres, converged,
        default, per_solve`` (list of ``{iterations, matvecs, rel_residual, seconds, recycle_dim}``).
    """
    strategies = default_strategies(family) if strategies is None else list(strategies)
    capture = SequenceSolver("direct", rtol=1.0 - 1e-12, on_nonconvergence="flag")
    systems: list[tuple] = []

    def record(A, b, *, matrix_changed):
        systems.append((A, b, matrix_changed))
        return capture(A, b, matrix_changed=matrix_changed)

    for sample in family.samples(num_samples, seed):
        sample.solve(record)
    default = default_strategy(family)
    params = getattr(family, "params", {})
    seq = f"{family.name}-{family.dim}d-{family.shape[0]}" + (
        f"-{params['coefficient']}" if "coefficient" in params and family.name == "darcy" else ""
    ) + (f"-{params['scheme']}" if family.name == "heat" else "")
    out = []
    for strat in strategies:
        kw = {"rtol": rtol, "maxiter": maxiter, **strat, "on_nonconvergence": "flag"}
        seconds = np.inf
        for _ in range(max(1, int(repeats))):
            solver = SequenceSolver(**kw)
            t0 = time.perf_counter()
            for A, b, changed in systems:
                solver(A, b, matrix_changed=changed)
            seconds = min(seconds, time.perf_counter() - t0)
        recs = solver.records
        out.append({
            "sequence": seq,
            "strategy": _label(strat),
            "method": solver.method,
            "preconditioner": solver.preconditioner,
            "warm_start": solver.warm_start,
            "n_unknowns": int(systems[0][1].shape[0]) if systems else 0,
            "n_systems": len(systems),
            "matvecs": int(sum(r.matvecs for r in recs)),
            "iterations": int(sum(r.iterations for r in recs)),
            "seconds": float(seconds),
            "max_true_relres": float(max((r.rel_residual for r in recs), default=0.0)),
            "converged": bool(all(r.converged for r in recs)),
            "default": _is_default(strat, default),
            "per_solve": [
                {"iterations": r.iterations, "matvecs": r.matvecs, "rel_residual": r.rel_residual,
                 "seconds": r.seconds, "recycle_dim": r.recycle_dim}
                for r in recs
            ],
        })
    return out
