"""scipy's own iterative-solver tests, run against kryflow's ``cg`` and ``gmres``.

The test file installed with scipy (``scipy/sparse/linalg/_isolve/tests/test_iterative.py``) is
loaded as a private module; its names ``cg`` and ``gmres`` are rebound to counting wrappers of
:func:`kryflow.solvers.cg` and :func:`kryflow.solvers.gmres`, its solver list is cut to those two,
and its tests are collected here with their own bodies, tolerances and assertions unchanged.
Every case must call kryflow (checked after each test). Cases that only concern scipy's other
solvers (``test_show``: tfqmr; ``TestQMR``) are left out. Complex systems are skipped with the
reason: kryflow's solvers are real (float64); their number is what issue 28 asks to report.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg._isolve as scipy_isolve

import kryflow.solvers

SCIPY_TESTS = Path(scipy_isolve.__file__).parent / "tests" / "test_iterative.py"
COMPLEX = "complex system: kryflow's solvers are real (float64) only"
CALLS: Counter = Counter()


def _counting(solver):
    """kryflow's ``solver`` under its own name, counting its calls in :data:`CALLS`."""

    @functools.wraps(solver)
    def call(*args, **kwargs):
        CALLS[solver.__name__] += 1
        return solver(*args, **kwargs)

    call.kryflow = solver
    return call


def _load_scipy_tests():
    """scipy's test module, executed as a private copy with kryflow's solvers bound in it."""
    if not SCIPY_TESTS.is_file():
        pytest.skip(f"scipy's test files are not installed ({SCIPY_TESTS} missing)", allow_module_level=True)
    spec = importlib.util.spec_from_file_location("kryflow_scipy_test_iterative", SCIPY_TESTS)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        spec.loader.exec_module(module)
    module.cg = _counting(kryflow.solvers.cg)
    module.gmres = _counting(kryflow.solvers.gmres)
    # in place: test_x0_solves_problem_exactly's parametrisation and test_precond_inverse's loop
    # hold this very list
    module._SOLVERS[:] = [module.cg, module.gmres]
    return module


scipy_tests = _load_scipy_tests()
KRYFLOW_SOLVERS = tuple(scipy_tests._SOLVERS)
# the cases rebuilt after the rebinding, so that their skip lists name kryflow's solvers
CASES = scipy_tests.IterativeParams().generate_tests()


def _is_complex(case) -> bool:
    return np.iscomplexobj(case.A) or np.iscomplexobj(case.b)


@pytest.fixture(params=KRYFLOW_SOLVERS, ids=lambda s: s.__name__)
def solver(request):
    return request.param


@pytest.fixture(params=[pytest.param(c, id=c.name, marks=[pytest.mark.skip(reason=COMPLEX)] if _is_complex(c) else [])
                        for c in CASES])
def case(request):
    return request.param


@pytest.fixture(autouse=True)
def calls_kryflow(request):
    """Each of scipy's tests that runs must call kryflow's cg or gmres."""
    before = sum(CALLS.values())
    yield
    if request.function.__module__ == scipy_tests.__name__:
        assert sum(CALLS.values()) > before, f"{request.node.name} did not call kryflow's cg or gmres"


for _name in ("test_maxiter", "test_convergence", "test_precond_dummy", "test_precond_inverse", "test_atol",
              "test_zero_rhs", "test_x0_working", "test_x0_equals_Mb",
              "test_x0_solves_problem_exactly", "test_positional_error", "test_invalid_atol"):
    globals()[_name] = getattr(scipy_tests, _name)


class TestGMRES(scipy_tests.TestGMRES):
    """scipy's GMRES tests; ``test_abi`` solves a complex system."""

    test_abi = pytest.mark.skip(reason=COMPLEX)(scipy_tests.TestGMRES.test_abi)


test_maxiter_worsening = pytest.mark.skip(reason=COMPLEX)(scipy_tests.test_maxiter_worsening)


def test_solvers_are_kryflows():
    """The names scipy's tests call are kryflow's solvers, and a call through them is counted."""
    assert [s.kryflow for s in KRYFLOW_SOLVERS] == [kryflow.solvers.cg, kryflow.solvers.gmres]
    assert scipy_tests.cg.kryflow is kryflow.solvers.cg and scipy_tests.gmres.kryflow is kryflow.solvers.gmres
    assert all(c.solver in KRYFLOW_SOLVERS for c in CASES)
    before = CALLS.copy()
    for solve in KRYFLOW_SOLVERS:
        assert solve(np.eye(3), np.ones(3))[1] == 0
    assert CALLS - before == Counter(cg=1, gmres=1)


def test_complex_cases_are_counted():
    """The complex systems of scipy's suite, which kryflow skips: 9 cases (2 for cg, 7 for gmres)
    in each of the 4 case-parametrised tests, TestGMRES.test_abi and test_maxiter_worsening (per
    solver): 39 skipped tests in all."""
    complex_cases = [c.name for c in CASES if _is_complex(c)]
    assert len(complex_cases) == 9 and sum(c.endswith("-cg") for c in complex_cases) == 2


# --- what scipy's suite leaves untested: CG's breakdown; the sequence methods keep raising ----------

def test_cg_breakdown_returns_its_iterate_as_scipy():
    """An indefinite A (pᵀ A p = 0 at the first step): scipy's convention returns the iterate it
    reached with the failure code; kryflow's sequence method raises, naming the breakdown."""
    A, b = np.diag([1.0, -1.0]), np.ones(2)
    x, info = kryflow.solvers.cg(A, b)
    assert info == 20 and np.array_equal(x, np.zeros(2))
    _, record = kryflow.solvers.cg(A, b, full_output=True)
    assert not record.converged and record.iterations == 1
    with pytest.raises(ValueError, match="breakdown"):
        kryflow.solvers.SOLVER_METHODS["cg"]().solve(A, b)


def test_gmres_breakdown_returns_the_least_squares_iterate():
    """scipy's defective matrix: gmres returns a least-squares solution (A A x = A b), finite, with
    the failure code; the sequence method "gmres" raises."""
    A, b = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 0]]), np.array([1.0, 0, 1])
    x, info = kryflow.solvers.gmres(A, b, rtol=1e-8, atol=0)
    assert info == 30 and np.all(np.isfinite(x))
    np.testing.assert_allclose(A @ (A @ x), A @ b, atol=1e-14)
    with pytest.raises(ValueError, match="singular"):
        kryflow.solvers.SOLVER_METHODS["gmres"]().solve(A, b)


def test_scipy_tolerances_are_checked_naming_the_argument():
    A, b = np.eye(3), np.ones(3)
    for solve in (kryflow.solvers.cg, kryflow.solvers.gmres):
        for bad in (None, "legacy", -1.0, float("nan")):
            with pytest.raises(ValueError, match="atol"):
                solve(A, b, atol=bad)
            with pytest.raises(ValueError, match="rtol"):
                solve(A, b, rtol=bad)
        assert solve(A, b, rtol=0.0, atol=0.0, maxiter=3)[1] in (0, 3)  # maxiter ends it, as scipy
