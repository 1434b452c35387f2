"""Warm starts from earlier solutions of the same matrix (``start_window``)."""

import numpy as np
import pytest
from scipy.sparse.linalg import spsolve

from kryflow._registry import ParameterError
from kryflow.pdes import build_family
from kryflow.solvers import SequenceSolver, SolutionWindow

RTOL = 1e-8


def _darcy(seed=0, n=24):
    fam = build_family("darcy", n=n, relation="iid")
    return fam.system(next(iter(fam.samples(1, seed))).fields["a"])[0]


@pytest.mark.parametrize("method,pre", [("cg", "jacobi"), ("cg", "gmg"), ("gmres", "ilu")])
def test_a_right_hand_side_in_the_span_of_earlier_ones_needs_no_iterations(method, pre):
    A = _darcy()
    rng = np.random.default_rng(1)
    bs = [rng.standard_normal(A.shape[0]) for _ in range(3)]
    b_new = 2.0 * bs[0] - 0.5 * bs[1] + 3.0 * bs[2]
    its = {}
    for window in (1, 4):
        s = SequenceSolver(method, pre, rtol=RTOL, start_window=window)
        for i, b in enumerate(bs):
            s(A, b, matrix_changed=i == 0)
        x = s(A, b_new, matrix_changed=False)
        assert np.linalg.norm(b_new - A @ x) <= RTOL * np.linalg.norm(b_new) * (1 + 1e-9)
        its[window] = s.records[-1].iterations
    # the combination of the three solutions already solves it to about the tolerance
    assert its[4] <= 1 < its[1]


def test_the_window_start_is_never_worse_than_the_previous_solution():
    A = _darcy(n=20)
    rng = np.random.default_rng(2)
    # a slowly turning sequence of right-hand sides, as along a time trajectory
    base, turn = rng.standard_normal((2, A.shape[0]))
    window, x_prev, ratios = SolutionWindow(5), None, []
    for i in range(12):
        b = np.cos(0.1 * i) * base + np.sin(0.1 * i) * turn + 0.01 * rng.standard_normal(A.shape[0])
        x0 = window.start(b)
        if x_prev is not None:
            ratios.append(np.linalg.norm(b - A @ x0) / np.linalg.norm(b - A @ x_prev))
        x_prev = spsolve(A.tocsc(), b)
        window.add(x_prev, b)
    assert len(window) == 5
    assert max(ratios) <= 1.0 + 1e-6
    assert min(ratios) < 0.2  # and on such a sequence much better


def test_an_empty_or_cleared_window_gives_no_start():
    window = SolutionWindow(3)
    assert window.start(np.ones(4)) is None
    window.add(np.ones(4), np.ones(4))
    np.testing.assert_allclose(window.start(2 * np.ones(4)), 2 * np.ones(4))
    window.clear()
    assert len(window) == 0 and window.start(np.ones(4)) is None
    with pytest.raises(ValueError, match="at least 1"):
        SolutionWindow(0)


def test_a_new_matrix_forgets_the_window():
    A1, A2 = _darcy(0), _darcy(1)
    rng = np.random.default_rng(3)
    b1, b2 = rng.standard_normal((2, A1.shape[0]))
    runs = {}
    for window in (1, 8):
        s = SequenceSolver("cg", "jacobi", rtol=RTOL, start_window=window)
        s(A1, b1, matrix_changed=True)
        s(A1, b2, matrix_changed=False)
        # A1's pairs say nothing of A2: the start is the previous solution, as with no window
        s(A2, b1 + b2, matrix_changed=True)
        s(A2, b1, matrix_changed=False)
        runs[window] = [r.iterations for r in s.records]
    assert runs[8][2] == runs[1][2]
    assert runs[8][3] <= runs[1][3]


def test_an_unconverged_solution_is_not_kept():
    A = _darcy()
    rng = np.random.default_rng(4)
    b1, b2 = rng.standard_normal((2, A.shape[0]))
    s = SequenceSolver("cg", "none", rtol=RTOL, maxiter=3, on_nonconvergence="flag", start_window=4)
    s(A, b1, matrix_changed=True)
    assert not s.records[-1].converged and len(s.window) == 0
    s.maxiter = 5000
    s(A, b2, matrix_changed=False)
    assert s.records[-1].converged and len(s.window) == 1


def test_direct_methods_and_cold_starts_keep_no_window():
    assert SequenceSolver("direct", "none").window is None
    assert SequenceSolver("cg", "jacobi", warm_start=False).window is None
    assert SequenceSolver("cg", "jacobi", start_window=1).window is None


@pytest.mark.parametrize("bad", [0, -2, 1.5, "8"])
def test_a_bad_window_is_named(bad):
    with pytest.raises(ParameterError, match="start_window"):
        SequenceSolver("cg", "jacobi", start_window=bad)
