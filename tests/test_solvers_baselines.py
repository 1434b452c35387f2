"""Tests for the strong baselines as methods (CHOLMOD, PARDISO, pyamg), optional extras, the
one-time cost records and the ``auto`` rule."""

import sys

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from kryflow._registry import ParameterError
from kryflow.pdes import build_family
from kryflow.solvers import (
    SOLVER_METHODS,
    SequenceSolver,
    SolveInfo,
    check_solver_options,
    default_strategies,
    default_strategy,
    warm_up,
)

RTOL = 1e-8
CASES = [
    ("darcy", {"n": 20, "coefficient": "lognormal"}, "spd"),
    ("darcy", {"n": 7, "dim": 3}, "spd"),
    ("heat", {"n": 12, "num_steps": 4, "save_every": 2, "scheme": "crank_nicolson"}, "spd"),
    ("advection_diffusion", {"n": 16}, "nonsymmetric"),
    ("advection_diffusion", {"n": 6, "dim": 3}, "nonsymmetric"),
]


def _needs(method):
    cls = SOLVER_METHODS[method]
    if not cls.available():
        pytest.skip(cls.unavailable_reason())


@pytest.mark.parametrize("method", ["cholmod", "pardiso", "pyamg"])
@pytest.mark.parametrize("name,params,kind", CASES)
def test_baseline_meets_tolerance_and_matches_spsolve(method, name, params, kind):
    _needs(method)
    if method == "cholmod" and kind != "spd":
        pytest.skip("CHOLMOD is a Cholesky factorization: SPD only")
    fam = build_family(name, relation="iid", **params)
    solver = SequenceSolver(method, "none", rtol=RTOL)
    seen = []

    def solve(A, b, *, matrix_changed):
        x = solver(A, b, matrix_changed=matrix_changed)
        seen.append((A, b, x))
        return x

    for s in fam.samples(3, 0):
        s.solve(solve)
    assert len(solver.records) == len(seen) == 3 * fam.solves_per_sample
    for (A, b, x), rec in zip(seen, solver.records):
        ref = spla.spsolve(A.tocsc(), b)
        assert rec.converged and rec.rel_residual <= RTOL
        assert np.linalg.norm(b - A @ x) <= RTOL * np.linalg.norm(b) * 1.0001
        assert np.linalg.norm(x - ref) <= 1e-6 * np.linalg.norm(ref), (method, name)


@pytest.mark.parametrize("method", ["cholmod", "pardiso"])
def test_symbolic_analysis_is_one_time_and_factors_are_reused(method):
    _needs(method)
    fam = build_family("heat", n=10, num_steps=3, save_every=1, relation="iid")
    solver = SequenceSolver(method, "none")
    for s in fam.samples(2, 0):
        s.solve(solver)
    recs = solver.records
    assert recs[0].setup_seconds > 0  # the pattern's analysis (and the library's first load)
    assert all(r.setup_seconds == 0.0 for r in recs[1:])  # one pattern: never analysed again
    A, b = build_family("darcy", n=10).system(np.ones((10, 10)))
    solver(A, b, matrix_changed=True)
    with pytest.raises(ValueError, match="stale"):
        solver(A * 2.0, b, matrix_changed=False)


@pytest.mark.parametrize("method,module,package", [("cholmod", "sksparse", "scikit-sparse<0.5"),
                                                   ("pardiso", "pypardiso", "pypardiso")])
def test_absent_extra_stays_registered_and_is_refused_with_the_install_command(monkeypatch, method, module,
                                                                                 package):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    cls = SOLVER_METHODS[method]
    assert method in SOLVER_METHODS and not cls.available()
    reason = cls.unavailable_reason()
    assert package in reason and "pip install" in reason and ".[solvers]" in reason
    with pytest.raises(ParameterError, match="pip install") as exc:
        check_solver_options(method, "none", {})
    assert exc.value.param == "method"
    with pytest.raises(ParameterError, match=package.split("<")[0]):
        SequenceSolver(method, "none")
    for name, params, _ in CASES + [("darcy", {"n": 32}, "spd"), ("heat", {"n": 256}, "spd")]:
        fam = build_family(name, **params)
        auto = default_strategy(fam)
        assert SOLVER_METHODS[auto["method"]].available() and auto["method"] != method
        assert all(s["method"] != method for s in default_strategies(fam))


@pytest.mark.parametrize("name,params", [("darcy", {}), ("darcy", {"n": 200}), ("darcy", {"n": 64, "dim": 3}),
                                         ("heat", {"n": 256}), ("heat", {"n": 48, "dim": 3}),
                                         ("advection_diffusion", {"n": 256}), ("advection_diffusion", {"n": 8})])
def test_auto_picks_an_available_method_that_the_benchmark_compares(name, params):
    fam = build_family(name, **params)
    auto = default_strategy(fam)
    assert SOLVER_METHODS[auto["method"]].available()
    strategies = default_strategies(fam)
    assert auto in strategies
    baselines = {s["method"] for s in strategies} & {"cholmod", "pardiso", "pyamg", "direct"}
    want = {m for m in ("pardiso", "pyamg") if SOLVER_METHODS[m].available()}
    if fam.matrix_kind == "spd" and SOLVER_METHODS["cholmod"].available():
        want.add("cholmod")
    assert want <= baselines
    assert any(s.get("preconditioner") == "gmg" for s in strategies)


def test_auto_rule_by_size_and_kind():
    big2d, big3d = build_family("darcy", n=200), build_family("darcy", n=64, dim=3)
    cold = {"warm_start": False}  # i.i.d. samples: the previous solution is no better a start than zero
    assert default_strategy(big2d) == default_strategy(big3d) == {"method": "cg", "preconditioner": "gmg", **cold}
    assert default_strategy(build_family("advection_diffusion", n=256)) == {"method": "gmres", "preconditioner": "gmg",
                                                                            **cold}
    assert default_strategy(build_family("darcy", n=200, relation="drift")) == {"method": "cg", "preconditioner": "gmg"}
    assert "warm_start" not in default_strategy(build_family("heat", n=48, dim=3))  # along a trajectory: warm
    # heat in 2D: one Cholesky per trajectory on small grids, GMG-PCG once the factor's fill costs more
    assert default_strategy(build_family("heat", n=256)) == {"method": "cg", "preconditioner": "gmg"}
    assert default_strategy(build_family("heat", n=160)) == {"method": "cg", "preconditioner": "gmg"}
    for n in (64, 128):
        assert default_strategy(build_family("heat", n=n))["method"] == (
            "cholmod" if SOLVER_METHODS["cholmod"].available() else "direct")
    small = default_strategy(build_family("darcy", n=32))
    assert small["method"] == ("cholmod" if SOLVER_METHODS["cholmod"].available() else "cg")


def test_solve_records_have_setup_seconds_and_warm_up_is_timed():
    assert "setup_seconds" in SolveInfo.__dataclass_fields__
    assert SolveInfo("cg", "none", 1, 1, 0.0, 0.1, 0, True).setup_seconds == 0.0
    seconds = warm_up()
    assert isinstance(seconds, float) and seconds >= 0.0
    s = SequenceSolver("cg", "jacobi")
    A, b = build_family("darcy", n=8).system(np.ones((8, 8)))
    s(A, b, matrix_changed=True)
    assert s.records[0].as_dict()["setup_seconds"] >= 0.0
