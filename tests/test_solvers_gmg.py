"""Tests for the geometric multigrid preconditioner ``gmg`` (kryflow.solvers._gmg)."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from kryflow.pdes import build_family, diffusion_operator, on_grid
from kryflow.solvers import SequenceSolver, cg, gmres, make_preconditioner
from kryflow.solvers import _gmg_kernels
from kryflow.solvers._gmg import GMGPreconditioner, grid_levels

RTOL = 1e-8


def darcy(n, dim=2, coefficient="lognormal", seed=0):
    fam = build_family("darcy", n=n, dim=dim, coefficient=coefficient, relation="iid")
    return fam.system(next(iter(fam.samples(1, seed))).fields["a"])


def _gmg(A, **kw):
    M = GMGPreconditioner(**kw)
    M.setup(A)
    return M


@pytest.mark.parametrize("shape", [(16, 16), (13, 13), (13, 20), (9, 9, 9), (8, 11, 7)])
@pytest.mark.parametrize("interpolation", ["operator", "linear"])
def test_vcycle_is_symmetric(shape, interpolation):
    a = np.exp(np.random.default_rng(1).standard_normal(shape))
    A = diffusion_operator(a)
    M = _gmg(A, interpolation=interpolation, precision="double")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(A.shape[0]), rng.standard_normal(A.shape[0])
    xMy, yMx = x @ M(y), y @ M(x)
    assert abs(xMy - yMx) <= 1e-12 * abs(xMy) + 1e-14, (xMy, yMx)
    assert x @ M(x) > 0  # positive definite


@pytest.mark.parametrize("dim,precision", [(2, "auto"), (3, "auto")])  # auto: single for CG
def test_single_precision_vcycle_is_symmetric_to_its_rounding(dim, precision):
    A, _ = darcy(24 if dim == 2 else 10, dim)
    M = _gmg(A, precision=precision)
    assert M._dtype == np.float32
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(A.shape[0]), rng.standard_normal(A.shape[0])
    assert abs(x @ M(y) - y @ M(x)) <= 1e-5 * abs(x @ M(y))
    z = M(x)
    assert z.dtype == np.float64 and z.shape == x.shape


@pytest.mark.parametrize("n,dim,factor", [(64, 2, 15), (24, 3, 8)])
@pytest.mark.parametrize("coefficient", ["binary", "lognormal"])
def test_gmg_cuts_cg_iterations_by_a_large_factor_against_jacobi(n, dim, factor, coefficient):
    A, b = darcy(n, dim, coefficient)
    _, jac = cg(A, b, rtol=RTOL, M=_jacobi(A), full_output=True)
    x, info = cg(A, b, rtol=RTOL, M=_gmg(A), full_output=True)
    assert info.converged and jac.converged
    assert info.iterations * factor <= jac.iterations, (info.iterations, jac.iterations)
    assert info.iterations <= 12
    assert np.linalg.norm(b - A @ x) <= RTOL * np.linalg.norm(b) * 1.0001


def _jacobi(A):
    M = make_preconditioner("jacobi")
    M.setup(A)
    return M


@pytest.mark.parametrize("n", [5, 7, 13, 31, 33])
def test_odd_grid_sizes_converge_and_match_spsolve(n):
    for dim in (2, 3) if n <= 13 else (2,):
        A, b = darcy(n, dim, "binary")
        x, info = cg(A, b, rtol=RTOL, M=_gmg(A), full_output=True)
        ref = spla.spsolve(A.tocsc(), b)
        assert info.converged and info.iterations <= 15, (n, dim, info.iterations)
        assert np.linalg.norm(x - ref) <= 1e-6 * np.linalg.norm(ref)


def test_levels_coarsen_every_dimension_by_two_down_to_a_small_grid():
    levels, transfers = grid_levels((200, 200))
    assert [lv.shape for lv in levels] == [(200, 200), (100, 100), (50, 50), (25, 25), (12, 12), (6, 6)]
    assert len(transfers) == len(levels) - 1
    levels, _ = grid_levels((9, 9, 9))
    assert [lv.shape for lv in levels] == [(9, 9, 9), (4, 4, 4)]


def test_gmres_with_gmg_solves_advection_diffusion():
    for dim, n in ((2, 48), (3, 12)):
        fam = build_family("advection_diffusion", n=n, dim=dim, relation="iid")
        s = next(iter(fam.samples(1, 0)))
        A, b = fam.system(s.fields["f"], tuple(s.fields[f"v{ax}"] for ax in "xyz"[:dim]))
        x, info = gmres(A, b, rtol=RTOL, restart=30, M=_gmg(A), full_output=True)
        ref = spla.spsolve(A.tocsc(), b)
        assert info.converged and info.iterations <= 20, info.iterations
        assert np.linalg.norm(x - ref) <= 1e-6 * np.linalg.norm(ref)


def test_heat_sequence_reuses_the_hierarchy_while_the_matrix_is_unchanged():
    fam = build_family("heat", n=16, num_steps=4, save_every=2, relation="iid")
    solver = SequenceSolver("cg", "gmg")
    for s in fam.samples(2, 0):
        s.solve(solver)
    assert solver._pre.setups == 2  # one per sample: the time steps reuse it
    assert all(r.converged and r.preconditioner == "gmg" for r in solver.records)


def test_matrix_without_grid_or_with_foreign_entries_names_the_fix():
    A, b = darcy(8)
    plain = sp.csr_matrix(A)  # a copy without the grid tag
    with pytest.raises(ValueError, match="grid_shape"):
        _gmg(plain)
    with pytest.raises(ValueError, match="grid_shape"):
        _gmg(on_grid(sp.csr_matrix(A), (8, 9)))
    far = A.tolil()
    far[0, 30] = far[30, 0] = -0.1  # a coupling between cells that are not neighbours
    with pytest.raises(ValueError, match="not neighbours"):
        _gmg(on_grid(far.tocsr(), (8, 8)))
    # the grid survives the driver's conversion of another format to CSR
    csc = A.tocsc()
    csc.grid_shape = (8, 8)
    x = SequenceSolver("cg", "gmg")(csc, b, matrix_changed=True)
    assert np.linalg.norm(b - A @ x) <= RTOL * np.linalg.norm(b) * 1.0001


def test_setup_seconds_count_the_grid_tables_once():
    grid_levels.cache_clear()
    fam = build_family("darcy", n=20, relation="iid")
    solver = SequenceSolver("cg", "gmg")
    for s in fam.samples(3, 0):
        s.solve(solver)
    first, *rest = solver.records
    assert first.setup_seconds > 0 and all(r.setup_seconds == 0.0 for r in rest)
    assert all(r.setup_seconds <= r.seconds for r in solver.records)


@pytest.mark.parametrize("shape", [(16, 16), (13, 13), (13, 20), (21, 8), (11, 9)])
@pytest.mark.parametrize("interpolation,precision", [("operator", "double"), ("linear", "double"),
                                                     ("operator", "single")])
def test_2d_vcycle_is_the_general_one(shape, interpolation, precision):
    """The 2D kernels (rows and computed parents) apply the same M as the general, index-table
    V-cycle the 3D grids use, on even and odd grids and every interpolation."""
    A = diffusion_operator(np.exp(np.random.default_rng(4).standard_normal(shape)))
    M = _gmg(A, interpolation=interpolation, precision=precision)
    r = np.random.default_rng(5).standard_normal(A.shape[0])
    z2d, general = M(r), np.empty(A.shape[0])
    _gmg_kernels.vcycle(r, general, M._cycle_levels, M._cycle_transfers, M._levels[-1].inner, M._coarse_inv, 1)
    tol = 1e-12 if precision == "double" else 1e-5
    assert np.linalg.norm(z2d - general) <= tol * np.linalg.norm(general)


@pytest.mark.parametrize("shape", [(16, 16), (13, 20), (9, 13)])
def test_gmg_offers_the_product_with_its_own_matrix_only(shape):
    A = diffusion_operator(np.exp(np.random.default_rng(6).standard_normal(shape)))
    M = _gmg(A)
    p = np.random.default_rng(7).standard_normal(A.shape[0])
    q = np.empty_like(p)
    product = M.matvec_dot_for(A)
    assert np.isclose(product(p, q), p @ (A @ p), rtol=1e-13)
    np.testing.assert_allclose(q, A @ p, rtol=1e-13, atol=1e-13 * np.abs(A @ p).max())
    assert M.matvec_dot_for(A.copy()) is None  # equal entries, but not the matrix it was set up with
    assert M.matvec_dot_for(None) is None
    B = diffusion_operator(np.ones(shape))
    M.setup(B)
    assert M.matvec_dot_for(A) is None and M.matvec_dot_for(B) is not None
    assert _gmg(darcy(6, 3)[0]).matvec_dot_for(darcy(6, 3)[0]) is None  # 3D: the CSR product stays
