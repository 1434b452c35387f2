"""Tests for kryflow.solvers: correctness, recycling behaviour, sequence driver, bad input."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from kryflow.pdes import build_family, diffusion_operator
from kryflow.solvers import (
    GCRODR,
    PRECONDITIONERS,
    SOLVER_METHODS,
    RecycledCG,
    SequenceSolver,
    SolverDidNotConverge,
    benchmark_sequence,
    cg,
    default_strategy,
    gmres,
)

RTOL = 1e-8


def darcy_systems(num=4, n=16, seed=0, **kw):
    fam = build_family("darcy", n=n, **kw)
    return [fam.system(s.fields["a"]) for s in fam.samples(num, seed)]


def advdiff_systems(num=4, n=16, seed=0, **kw):
    fam = build_family("advection_diffusion", n=n, **kw)
    out = []
    for s in fam.samples(num, seed):
        out.append(fam.system(s.fields["f"], tuple(s.fields[f"v{ax}"] for ax in "xy"[: fam.dim])))
    return out


def true_relres(A, x, b):
    return np.linalg.norm(b - A @ x) / np.linalg.norm(b)


def _combos(kind):
    methods = ("cg", "rcg", "direct") if kind == "spd" else ("gmres", "gcrodr", "direct")
    # the baselines from elsewhere, where installed (CHOLMOD is SPD only)
    methods += tuple(m for m in ("cholmod", "pardiso", "pyamg") if SOLVER_METHODS[m].available()
                     and (kind == "spd" or m != "cholmod"))
    pres = ("none", "jacobi", "amg", "gmg") if kind == "spd" else PRECONDITIONERS
    for m in methods:
        for p in pres if SOLVER_METHODS[m].uses_preconditioner else ("none",):
            yield m, p, {}
            if m == "rcg":
                yield m, p, {"recycle_mode": "spectral", "harvest_per_solve": 2}


@pytest.mark.parametrize("family,kind,kw", [
    ("darcy", "spd", {}),
    ("darcy", "spd", {"dim": 3, "n": 6, "coefficient": "lognormal"}),
    ("heat", "spd", {"num_steps": 4, "save_every": 2, "scheme": "crank_nicolson"}),
    ("advection_diffusion", "nonsymmetric", {}),
    ("advection_diffusion", "nonsymmetric", {"dim": 3, "n": 6}),
])
def test_every_method_meets_tolerance_and_matches_spsolve(family, kind, kw):
    fam = build_family(family, **{"n": 12, **kw})
    for method, pre, opts in _combos(kind):
        solver = SequenceSolver(method, pre, rtol=RTOL, recycle_dim=4, **opts)
        systems = []

        def solve(A, b, *, matrix_changed):
            x = solver(A, b, matrix_changed=matrix_changed)
            systems.append((A, b, x))
            return x

        for s in fam.samples(3, seed=0):
            s.solve(solve)
        recs = solver.pop_records()
        assert len(recs) == len(systems) == 3 * fam.solves_per_sample
        for (A, b, x), rec in zip(systems, recs):
            rel = true_relres(A, x, b)
            assert rel <= RTOL * 1.0001, (method, pre, rel)
            assert rec.converged and abs(rec.rel_residual - rel) <= 1e-3 * RTOL + 1e-14
            ref = spla.spsolve(A.tocsc(), b)
            assert np.linalg.norm(x - ref) <= 1e-5 * np.linalg.norm(ref), (method, pre)
        assert solver.pop_records() == []


def test_cg_and_gmres_match_scipy_iteration_counts():
    A, b = darcy_systems(1, n=20)[0]
    its = []
    spla.cg(A, b, rtol=RTOL, callback=lambda xk: its.append(1))
    _, info = cg(A, b, rtol=RTOL, full_output=True)
    assert info.iterations == len(its) and info.converged
    A, b = advdiff_systems(1, n=20)[0]
    its = []
    spla.gmres(A, b, rtol=RTOL, restart=20, callback=lambda r: its.append(1), callback_type="pr_norm")
    _, info = gmres(A, b, rtol=RTOL, restart=20, full_output=True)
    assert abs(info.iterations - len(its)) <= 1 and info.converged


@pytest.mark.parametrize("pre", ["none", "jacobi", "amg"])
def test_empty_recycle_space_reproduces_cg(pre):
    for A, b in darcy_systems(3, n=20):
        M = None if pre == "none" else SequenceSolver("cg", pre)._pre
        if M is not None:
            M.update(A, True)
        counts = []
        _, ref = cg(A, b, rtol=RTOL, M=M, callback=lambda x: counts.append(1), full_output=True)
        for k in (0, 6):  # k=6: fresh solver, nothing harvested yet -> also plain PCG
            for mode in ("deflation", "spectral"):
                _, info = RecycledCG(k, mode=mode).solve(A, b, rtol=RTOL, M=M)
                assert info.iterations == ref.iterations == len(counts)
                assert info.recycle_dim == 0


def test_empty_recycle_space_reproduces_gmres():
    for A, b in advdiff_systems(3, n=20):
        for restart in (10, 25):
            _, ref = gmres(A, b, rtol=RTOL, restart=restart, full_output=True)
            _, info = GCRODR(0, restart).solve(A, b, rtol=RTOL)
            assert info.iterations == ref.iterations


def test_exact_eigenvectors_cut_iterations_as_theory_predicts():
    n = 24
    A = diffusion_operator(np.ones((n, n)))
    b = np.random.default_rng(0).standard_normal(n * n)
    lam_all = np.linalg.eigvalsh(A.toarray())
    k = 8
    lam, V = spla.eigsh(A, k=k, sigma=0, which="LM")
    rc = RecycledCG(k, harvest_solves=0)
    rc.W, rc.AW = np.ascontiguousarray(V.T), np.ascontiguousarray((A @ V).T)
    rc._factor_E()
    rc._fp = rc._fingerprint(A)
    _, plain = cg(A, b, rtol=RTOL, full_output=True)
    _, defl = rc.solve(A, b, rtol=RTOL, matrix_changed=False)

    def chebyshev_bound(kappa):  # CG iterations for an A-norm reduction of RTOL
        return np.ceil(0.5 * np.sqrt(kappa) * np.log(2 / RTOL))

    kappa, kappa_eff = lam_all[-1] / lam_all[0], lam_all[-1] / lam_all[k]
    assert defl.iterations <= chebyshev_bound(kappa_eff * 1.01)
    # deflated CG = CG on the complement of span(W): compare with the reduced problem directly
    P = np.eye(n * n) - V @ V.T
    red = np.linalg.eigvalsh(P @ A.toarray() @ P)
    assert np.isclose(red[red > 1e-8].min(), lam_all[k], rtol=1e-6)
    ratio = defl.iterations / plain.iterations
    predicted = np.sqrt(lam_all[0] / lam_all[k])  # sqrt(kappa_eff / kappa)
    assert predicted * 0.9 <= ratio <= 1.0 and defl.iterations < plain.iterations
    assert kappa / kappa_eff > 4


@pytest.mark.parametrize("pre", ["none", "jacobi"])
def test_spectral_preconditioner_moves_exact_eigenvalues_to_theta(pre):
    # P = M^-1 + sum_i (theta/mu_i - 1) y_i y_i^T with exact eigenpairs (mu_i, y_i) of the pencil
    # (A, M), y_i M-orthonormal: P A has the eigenvalue theta on each y_i and keeps the rest, so
    # PCG needs the iterations of kappa_eff = lambda_max / lambda_(k+1)
    n, k = 20, 8
    a = np.exp(np.random.default_rng(1).standard_normal((n, n)))  # variable coefficient
    A = diffusion_operator(a)
    b = np.random.default_rng(0).standard_normal(n * n)
    d = A.diagonal()
    Mdiag = np.ones(n * n) if pre == "none" else d
    # symmetric form: S = M^-1/2 A M^-1/2, eigenvectors y = M^-1/2 u are M-orthonormal
    S = (A.toarray() / np.sqrt(Mdiag)[:, None]) / np.sqrt(Mdiag)[None, :]
    lam_all, U = np.linalg.eigh(S)
    Y = (U[:, :k] / np.sqrt(Mdiag)[:, None]).T
    M = None if pre == "none" else SequenceSolver("cg", "jacobi")._pre
    if M is not None:
        M.update(A, True)
    theta = d.mean() if pre == "none" else 1.0
    rc = RecycledCG(k, mode="spectral")
    rc.W, rc._shift = np.ascontiguousarray(Y), theta / lam_all[:k] - 1.0
    P = rc._spectral_preconditioner(M)
    PA = np.column_stack([P(col) for col in A.toarray().T])
    ev = np.sort(np.linalg.eigvals(PA).real)
    expected = np.sort(np.concatenate([np.full(k, theta), lam_all[k:]]))
    assert np.allclose(ev, expected, rtol=1e-8, atol=1e-10 * lam_all[-1])
    _, plain = RecycledCG(0).solve(A, b, rtol=RTOL, M=M)
    _, spec = rc.solve(A, b, rtol=RTOL, M=M)
    lo, hi = min(lam_all[k], theta), max(lam_all[-1], theta)
    assert spec.converged and spec.recycle_dim == k
    assert spec.iterations <= np.ceil(0.5 * np.sqrt(hi / lo) * np.log(2 / RTOL))
    assert spec.iterations < 0.6 * plain.iterations
    # no A·W products: the same residual checks as plain PCG
    assert spec.matvecs - spec.iterations == plain.matvecs - plain.iterations


def test_spectral_recycling_grows_without_matvecs_and_stays_spd():
    systems = darcy_systems(10, n=32)
    spec = SequenceSolver("rcg", "jacobi", recycle_dim=48, recycle_mode="spectral", harvest_per_solve=16)
    cold = SequenceSolver("cg", "jacobi", warm_start=False)
    for A, b in systems:
        spec(A, b, matrix_changed=True)
        cold(A, b, matrix_changed=True)
    dims = [r.recycle_dim for r in spec.records]
    assert dims[:4] == [0, 16, 32, 48] and set(dims[4:]) == {48}  # full after three solves
    # no rebuilds (deflation would add 48 per solve): only the start, restart and true-residual checks
    assert all(r.matvecs <= r.iterations + 5 for r in spec.records)
    assert all(r.converged for r in spec.records)
    assert sum(r.matvecs for r in spec.records[3:]) < 0.75 * sum(r.matvecs for r in cold.records[3:])
    # the preconditioner is SPD for any matrix: an unrelated one converges, nothing is stale
    shock = darcy_systems(1, n=32, seed=9, coefficient="lognormal", sigma=3.0)[0]
    x = spec(*shock, matrix_changed=True)
    assert true_relres(shock[0], x, shock[1]) <= RTOL
    with pytest.raises(ValueError, match="recycle_mode must be 'deflation' or 'spectral'"):
        SequenceSolver("rcg", "jacobi", recycle_mode="ritz")
    with pytest.raises(ValueError, match="harvest_per_solve"):
        RecycledCG(8, mode="spectral", harvest_per_solve=0)


def test_spectral_recycling_refills_when_iterations_drift_up():
    a_sys = darcy_systems(6, n=24)
    other = darcy_systems(4, n=24, seed=5, coefficient="lognormal", sigma=2.5)
    s = SequenceSolver("rcg", "none", recycle_dim=16, recycle_mode="spectral", harvest_per_solve=8,
                       refresh_factor=1.1, maxiter=10000)
    for A, b in a_sys + other:
        x = s(A, b, matrix_changed=True)
        assert true_relres(A, x, b) <= RTOL
    dims = [r.recycle_dim for r in s.records]
    assert 16 in dims[:6]
    # the switch to a rougher coefficient field drove iterations up: the space was emptied and refilled
    assert 0 in dims[6:] and dims[-1] > 0, dims


def test_recycling_reduces_matvecs_on_drift_sequence():
    systems = darcy_systems(12, n=32, relation="drift")  # i.i.d. is the families' default now
    rc = SequenceSolver("rcg", "none", recycle_dim=16)
    cold = SequenceSolver("cg", "none", warm_start=False)
    for A, b in systems:
        rc(A, b, matrix_changed=True)
        cold(A, b, matrix_changed=True)
    mv_rc = sum(r.matvecs for r in rc.records[4:])
    mv_cold = sum(r.matvecs for r in cold.records[4:])
    assert mv_rc < 0.65 * mv_cold
    gc = SequenceSolver("gcrodr", "none", recycle_dim=8, restart=30)
    gm = SequenceSolver("gmres", "none", warm_start=False, restart=30)
    for A, b in advdiff_systems(6, n=24, relation="drift"):
        gc(A, b, matrix_changed=True)
        gm(A, b, matrix_changed=True)
    assert sum(r.matvecs for r in gc.records) < sum(r.matvecs for r in gm.records)


def test_sharp_matrix_change_keeps_convergence():
    a_sys = darcy_systems(4, n=20)
    shock = darcy_systems(1, n=20, seed=9, coefficient="lognormal", sigma=3.0)[0]
    for pre in ("none", "amg"):
        s = SequenceSolver("rcg", pre, recycle_dim=8, maxiter=10000)
        for A, b in a_sys + [shock] + a_sys[:1]:
            x = s(A, b, matrix_changed=True)
            assert true_relres(A, x, b) <= RTOL
    s = SequenceSolver("gcrodr", "ilu", recycle_dim=6, restart=20)
    adv = advdiff_systems(3, n=16)
    shock = advdiff_systems(1, n=16, seed=3, peclet=500.0, rotation=2.0)[0]
    for A, b in adv + [shock] + adv[:1]:
        x = s(A, b, matrix_changed=True)
        assert true_relres(A, x, b) <= RTOL


def test_stale_recycle_space_is_detected():
    (A1, b1), (A2, b2) = darcy_systems(2, n=16)[:2]
    for solver in (RecycledCG(4), GCRODR(4, 20)):
        solver.solve(A1, b1, matrix_changed=True)
        solver.solve(A1, b1, matrix_changed=False)  # same matrix: fine
        assert solver.recycle_dim > 0
        with pytest.raises(ValueError, match="stale"):
            solver.solve(A2, b2, matrix_changed=False)
        _, info = solver.solve(A2, b2, matrix_changed=True)
        assert info.converged
    d = SequenceSolver("direct")
    d(A1, b1, matrix_changed=True)
    with pytest.raises(ValueError, match="stale"):
        d(A2, b2, matrix_changed=False)
    A3 = A1.copy()
    A3.data[5] *= 1.5  # in-place edit of the same sparsity pattern is caught too
    with pytest.raises(ValueError, match="stale"):
        d(A3, b1, matrix_changed=False)


@pytest.mark.parametrize("mode", ["deflation", "spectral"])
def test_fixed_seed_gives_identical_iteration_counts(mode):
    def run():
        fam = build_family("darcy", n=16)
        s = SequenceSolver("rcg", "jacobi", recycle_dim=4, recycle_mode=mode)
        for sample in fam.samples(5, seed=3):
            sample.solve(s)
        return [(r.iterations, r.matvecs, r.recycle_dim) for r in s.records]

    assert run() == run()


def test_nonconvergence_raises_or_flags():
    A, b = darcy_systems(1, n=16)[0]
    s = SequenceSolver("cg", "none", maxiter=5)
    with pytest.raises(SolverDidNotConverge, match="maxiter=5") as exc:
        s(A, b, matrix_changed=True)
    assert exc.value.info.converged is False and exc.value.info.iterations == 5
    s = SequenceSolver("cg", "none", maxiter=5, on_nonconvergence="flag")
    x = s(A, b, matrix_changed=True)
    assert s.records[-1].converged is False and s.records[-1].rel_residual > RTOL
    assert x.shape == b.shape
    _, code = cg(A, b, maxiter=3)
    assert code == 3


def test_bad_input_is_named():
    A, b = darcy_systems(1, n=8)[0]
    s = SequenceSolver("cg", "jacobi")
    with pytest.raises(ValueError, match="NaN"):
        s(A, np.full_like(b, np.nan), matrix_changed=True)
    with pytest.raises(ValueError, match="length"):
        s(A, b[:-1], matrix_changed=True)
    with pytest.raises(ValueError, match="square"):
        s(A[:-1], b[:-1], matrix_changed=True)
    with pytest.raises(ValueError, match="sparse"):
        s("matrix", b, matrix_changed=True)
    Anan = A.copy()
    Anan.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s(Anan, b, matrix_changed=True)
    with pytest.raises(ValueError, match="valid"):
        SequenceSolver("bicgstab")
    with pytest.raises(ValueError, match="valid"):
        SequenceSolver("cg", "sor")  # unknown ("ssor" is registered since issue 18)
    with pytest.raises(ValueError, match="valid options"):
        SequenceSolver("cg", "none", restart=10)
    with pytest.raises(ValueError, match="rtol"):
        SequenceSolver("cg", rtol=2.0)


def test_singular_systems_raise():
    n = 10
    A = sp.diags([np.r_[np.ones(n - 1), 0.0]], [0], format="csr")  # last row/col zero
    b = np.ones(n)
    with pytest.raises(ValueError, match="singular"):
        SequenceSolver("direct")(A, b, matrix_changed=True)
    with pytest.raises(ValueError, match="singular"):
        SequenceSolver("cg", "none")(A, b, matrix_changed=True)
    with pytest.raises(ValueError, match="singular|zero diagonal"):
        SequenceSolver("cg", "jacobi")(A, b, matrix_changed=True)
    with pytest.raises(ValueError, match="singular"):
        SequenceSolver("gmres", "none")(A, b, matrix_changed=True)


def test_zero_rhs_and_size_change():
    s = SequenceSolver("rcg", "none")
    A, b = darcy_systems(1, n=8)[0]
    assert np.all(s(A, np.zeros_like(b), matrix_changed=True) == 0)
    s(A, b, matrix_changed=True)
    A2, b2 = darcy_systems(1, n=10)[0]
    x = s(A2, b2, matrix_changed=False)  # new size: state resets, no stale complaint
    assert true_relres(A2, x, b2) <= RTOL


def test_benchmark_sequence_records():
    fam = build_family("darcy", n=12)
    strategies = [{"method": "cg", "preconditioner": "none", "warm_start": False},
                  {"method": "rcg", "preconditioner": "jacobi"}, {"method": "direct", "preconditioner": "none"},
                  default_strategy(fam)]
    recs = benchmark_sequence(fam, 4, seed=0, strategies=strategies)
    assert len(recs) == 4
    keys = {"sequence", "method", "preconditioner", "n_unknowns", "n_systems", "matvecs", "iterations",
            "seconds", "max_true_relres", "default", "per_solve"}
    for r in recs:
        assert keys <= set(r) and r["n_systems"] == 4 and r["n_unknowns"] == 144
        assert r["max_true_relres"] <= RTOL and len(r["per_solve"]) == 4
    assert sum(r["default"] for r in recs) == 1


@pytest.mark.parametrize("name,kw", [("darcy", {}), ("darcy", {"n": 256}), ("darcy", {"dim": 3, "n": 32}),
                                     ("darcy", {"dim": 3, "n": 64}), ("heat", {}), ("heat", {"dim": 3, "n": 32}),
                                     ("advection_diffusion", {}), ("advection_diffusion", {"n": 256})])
def test_default_strategy_is_benchmarked(name, kw):
    from kryflow.solvers import default_strategies

    fam = build_family(name, **kw)
    d = default_strategy(fam)
    assert d["method"] in SOLVER_METHODS and d["preconditioner"] in PRECONDITIONERS
    assert d in default_strategies(fam)


def test_benchmark_targets_are_computed_from_the_records():
    fam = build_family("darcy", n=16)
    strategies = [{"method": "cg", "preconditioner": "jacobi", "warm_start": False},
                  {"method": "rcg", "preconditioner": "jacobi", "recycle_dim": 4},
                  {"method": "direct", "preconditioner": "none"},
                  {"method": "cg", "preconditioner": "none", "maxiter": 3},  # fast but not converged
                  default_strategy(fam)]
    recs = benchmark_sequence(fam, 6, seed=0, strategies=strategies, repeats=3, contender_factor=1e9)
    ok = [r for r in recs if r["converged"]]
    assert len(ok) == 4  # the maxiter=3 record is flagged, and excluded from "fastest"
    fastest = min(ok, key=lambda r: r["seconds"])
    for r in recs:
        assert len(r["seconds_runs"]) == 3 and r["seconds"] == min(r["seconds_runs"])
        assert r["fastest_strategy"] == fastest["strategy"] and r["fastest_seconds"] == fastest["seconds"]
        assert np.isclose(r["vs_fastest"], r["seconds"] / fastest["seconds"])
    default = [r for r in recs if r["default"]]
    assert len(default) == 1 and default[0]["meets_t2"] == (default[0]["vs_fastest"] <= 1.1)
    rcg, cold = recs[1], recs[0]
    assert rcg["cold_strategy"] == cold["strategy"] == "cg+jacobi-cold"
    assert np.isclose(rcg["matvecs_vs_cold"], rcg["matvecs"] / cold["matvecs"])
    assert rcg["meets_t1"] == (rcg["matvecs_vs_cold"] <= 0.5)
    assert "matvecs_vs_cold" not in cold and "meets_t2" not in rcg
    # only contenders (within contender_factor of the fastest first run, and the default) are re-timed
    recs = benchmark_sequence(fam, 3, seed=0, strategies=strategies[:3], repeats=2, contender_factor=1.0)
    assert sorted(len(r["seconds_runs"]) for r in recs) == [1, 1, 2]
    # a short sequence is timed over at least min_window seconds (up to max_repeats runs)
    recs = benchmark_sequence(fam, 3, seed=0, strategies=strategies[:3], repeats=2, contender_factor=1e9,
                              min_window=1e6, max_repeats=5)
    assert [len(r["seconds_runs"]) for r in recs] == [5, 5, 5]


def _load_benchmark_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "solvers.py"
    spec = importlib.util.spec_from_file_location("bench_solvers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bandwidth_floor_counts_matrix_once_and_eleven_vector_passes():
    bench = _load_benchmark_script()
    A, _ = darcy_systems(1, n=24)[0]
    N, nnz = A.shape[0], A.nnz
    bw = {"best": 2e10, "blas_1_thread": 1e10, "threads": 2}
    rec = bench.cg_iteration_ratio(A, "darcy-test", bw, llc=None, iterations=20)
    assert rec["bytes_per_iteration_min"] == 12 * nnz + 4 * (N + 1) + 11 * 8 * N
    assert np.isclose(rec["floor_seconds"], rec["bytes_per_iteration_min"] / 2e10)
    assert np.isclose(rec["ratio_to_floor"], rec["seconds_per_iteration"] / rec["floor_seconds"])
    assert np.isclose(rec["ratio_1_thread"],
                      rec["seconds_per_iteration_1_thread"] / (rec["bytes_per_iteration_min"] / 1e10))
    assert rec["meets_target"] == (min(rec["ratio_to_floor"], rec["ratio_1_thread"]) <= 1.5)
    assert rec["fits_in_last_level_cache"] is None and rec["seconds_per_iteration"] > 0


def test_recycled_cg_halves_matvecs_on_darcy_drift():
    # recycling halves the matvecs on a Darcy drift sequence (benchmarks/solvers.py runs the full sizes):
    # k = 32 harvested Ritz vectors, A·W rebuilt (32 matvecs, counted) for every new matrix
    systems = darcy_systems(16, n=128, coefficient="lognormal", relation="drift")
    rc = SequenceSolver("rcg", "jacobi", recycle_dim=32)
    cold = SequenceSolver("cg", "jacobi", warm_start=False)
    for A, b in systems:
        rc(A, b, matrix_changed=True)
        cold(A, b, matrix_changed=True)
    ratio = sum(r.matvecs for r in rc.records) / sum(r.matvecs for r in cold.records)
    assert ratio <= 0.5, ratio
    assert all(r.converged for r in rc.records) and max(r.recycle_dim for r in rc.records) == 32


# --- compiled kernels (kryflow.solvers._kernels) ---------------------------------------------

@pytest.mark.parametrize("pre", ["none", "jacobi"])
def test_compiled_cg_loop_matches_python_loop_bit_for_bit(pre):
    # without a callback cg runs its whole loop compiled; with one, a Python loop over the same
    # kernels: the arithmetic must be identical (iterations and every bit of x)
    for A, b in darcy_systems(2, n=40):
        M = None if pre == "none" else SequenceSolver("cg", pre)._pre
        if M is not None:
            M.update(A, True)
        x1, i1 = cg(A, b, rtol=RTOL, M=M, full_output=True)
        x2, i2 = cg(A, b, rtol=RTOL, M=M, callback=lambda x: None, full_output=True)
        assert i1.iterations == i2.iterations > 0
        assert np.array_equal(x1, x2)
        assert i1.rel_residual <= RTOL


def test_compiled_cg_is_identical_with_one_or_two_threads():
    import numba

    from kryflow.solvers import _kernels

    n = 100  # 10^4 rows: above PARALLEL_MIN_ROWS, so the rows are split over threads
    A, b = darcy_systems(1, n=n)[0]
    assert A.shape[0] >= _kernels.PARALLEL_MIN_ROWS
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        x1, i1 = cg(A, b, rtol=RTOL, full_output=True)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        x2, i2 = cg(A, b, rtol=RTOL, full_output=True)
    finally:
        numba.set_num_threads(old)
    assert i1.iterations == i2.iterations and np.array_equal(x1, x2)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_kernels_agree_with_scipy(index_dtype):
    from kryflow.solvers import _kernels

    rng = np.random.default_rng(3)
    A = sp.random(300, 300, density=0.03, random_state=4, format="csr") + sp.identity(300, format="csr")
    A.indices, A.indptr = A.indices.astype(index_dtype), A.indptr.astype(index_dtype)
    p, q = rng.standard_normal(300), np.empty(300)
    pq = _kernels.matvec_dot(A, p, q)
    assert np.allclose(q, A @ p) and np.isclose(pq, p @ (A @ p))
    x, r, d = rng.standard_normal(300), rng.standard_normal(300), rng.random(300) + 0.5
    x0, r0 = x.copy(), r.copy()
    rr, rz = _kernels.update_xr(x, r, p, q, 0.3, d)
    assert np.allclose(x, x0 + 0.3 * p) and np.allclose(r, r0 - 0.3 * q)
    assert np.isclose(rr, r @ r) and np.isclose(rz, r @ (d * r))
    p0 = p.copy()
    _kernels.direction(p, r, 0.7, d)
    assert np.allclose(p, d * r + 0.7 * p0)


# --- scipy's calling convention: A, M, x0, b in every form scipy takes --------------------------

def _spd_system(n=16):
    return darcy_systems(1, n=n)[0]


def _solvers_with_scipy_convention():
    """name -> f(A, b, **kw) returning (x, SolveInfo), one per solver with scipy's arguments."""
    return {
        "cg": lambda A, b, **kw: cg(A, b, full_output=True, **kw),
        "gmres": lambda A, b, **kw: gmres(A, b, full_output=True, **kw),
        "rcg-deflation": lambda A, b, **kw: RecycledCG(4).solve(A, b, **kw),
        "rcg-spectral": lambda A, b, **kw: RecycledCG(4, mode="spectral").solve(A, b, **kw),
        "gcrodr": lambda A, b, **kw: GCRODR(4, 20).solve(A, b, **kw),
    }


@pytest.mark.parametrize("solver", sorted(_solvers_with_scipy_convention()))
@pytest.mark.parametrize("form", ["csr", "csr_array", "csc", "dense", "linear_operator", "function_operator"])
def test_every_form_of_A_gives_the_same_solution(solver, form):
    A, b = _spd_system()
    As = {"csr": A, "csr_array": sp.csr_array(A), "csc": A.tocsc(), "dense": A.toarray(),
          "linear_operator": spla.aslinearoperator(A),
          "function_operator": spla.LinearOperator(A.shape, matvec=lambda v: A @ v, dtype=np.float64)}
    solve = _solvers_with_scipy_convention()[solver]
    x_ref, ref = solve(A, b, rtol=RTOL)
    x, info = solve(As[form], b, rtol=RTOL)
    assert info.converged and true_relres(A, x, b) <= RTOL
    assert abs(info.iterations - ref.iterations) <= 1
    assert np.linalg.norm(x - x_ref) <= 1e-6 * np.linalg.norm(x_ref)


@pytest.mark.parametrize("solver", sorted(_solvers_with_scipy_convention()))
@pytest.mark.parametrize("form", ["sparse", "dense", "linear_operator", "callable"])
def test_every_form_of_M_is_the_same_preconditioner(solver, form):
    A, b = _spd_system()
    d = A.diagonal()
    Ms = {"sparse": sp.diags(1.0 / d), "dense": np.diag(1.0 / d),
          "linear_operator": spla.aslinearoperator(sp.diags(1.0 / d)), "callable": lambda r: r / d}
    solve = _solvers_with_scipy_convention()[solver]
    _, plain = solve(A, b, rtol=RTOL)
    x_ref, ref = solve(A, b, rtol=RTOL, M=Ms["callable"])
    x, info = solve(A, b, rtol=RTOL, M=Ms[form])
    assert info.converged and info.preconditioner == "custom" and info.iterations == ref.iterations
    assert np.linalg.norm(x - x_ref) <= 1e-10 * np.linalg.norm(x_ref)
    assert info.iterations < plain.iterations  # the Darcy coefficient varies: Jacobi helps


@pytest.mark.parametrize("solver", sorted(_solvers_with_scipy_convention()))
def test_column_vectors_and_x0_mb(solver):
    A, b = _spd_system()
    solve = _solvers_with_scipy_convention()[solver]
    M = lambda r: r / A.diagonal()  # noqa: E731
    x_ref, _ = solve(A, b, rtol=RTOL)
    x, info = solve(A, b[:, None], x0=np.zeros((b.size, 1)), rtol=RTOL)
    assert x.shape == b.shape and info.converged
    assert np.linalg.norm(x - x_ref) <= 1e-6 * np.linalg.norm(x_ref)
    x, info = solve(A, b, x0="Mb", M=M, rtol=RTOL)
    assert x.shape == b.shape and info.converged and true_relres(A, x, b) <= RTOL
    # x0="Mb" starts from M b: with M the exact inverse that is the solution, found in 0 iterations
    lu = spla.splu(A.tocsc())
    x, info = solve(A, b, x0="Mb", M=spla.LinearOperator(A.shape, matvec=lu.solve, dtype=np.float64), rtol=RTOL)
    assert info.iterations == 0 and info.converged and np.allclose(x, lu.solve(b))
    with pytest.raises(ValueError, match="x0"):
        solve(A, b, x0="b")
    with pytest.raises(ValueError, match="x0"):
        solve(A, b, x0=np.zeros(b.size + 1))


def test_operator_without_diagonal_uses_a_scale_estimate():
    A, b = _spd_system()
    op = spla.LinearOperator(A.shape, matvec=lambda v: A @ v, dtype=np.float64)
    _, ref = cg(A, b, rtol=RTOL, full_output=True)
    _, info = cg(op, b, rtol=RTOL, full_output=True)
    # one matvec more: the singular-step guard's scale estimate ||A u|| / ||u||
    assert info.iterations == ref.iterations and info.matvecs == ref.matvecs + 1
    zero = spla.LinearOperator(A.shape, matvec=lambda v: 0.0 * v, dtype=np.float64)
    with pytest.raises(ValueError, match="not SPD"):  # the sequence method raises
        SOLVER_METHODS["cg"]().solve(zero, b)
    x, code = cg(zero, b)  # scipy's convention: the iterate reached, with the failure code
    assert code == 10 * b.size and np.array_equal(x, np.zeros_like(b))


def _advdiff_system(n=20):
    return advdiff_systems(1, n=n)[0]


@pytest.mark.parametrize("restart", [5, 10])
@pytest.mark.parametrize("maxiter", [1, 2, 3, None])
def test_gmres_maxiter_counts_restart_cycles_as_scipy(restart, maxiter):
    A, b = _advdiff_system()
    _, code_ref = spla.gmres(A, b, rtol=RTOL, restart=restart, maxiter=maxiter)
    _, code = gmres(A, b, rtol=RTOL, restart=restart, maxiter=maxiter)
    assert code == code_ref  # 0, or maxiter (cycles) on failure
    _, info = gmres(A, b, rtol=RTOL, restart=restart, maxiter=maxiter, full_output=True)
    if maxiter is not None:
        assert info.iterations == maxiter * restart and not info.converged and code == maxiter
    else:
        assert info.converged and code == 0


@pytest.mark.parametrize("callback_type", ["x", "pr_norm", "legacy"])
def test_gmres_callback_types_as_scipy(callback_type):
    A, b = _advdiff_system()
    for maxiter in (3, 7):
        ref, ours = [], []
        _, code_ref = spla.gmres(A, b, rtol=RTOL, restart=5, maxiter=maxiter, callback=ref.append,
                                 callback_type=callback_type)
        _, code = gmres(A, b, rtol=RTOL, restart=5, maxiter=maxiter, callback=ours.append,
                        callback_type=callback_type)
        assert code == code_ref == maxiter and len(ours) == len(ref)
        if callback_type == "x":  # one call per cycle, with the iterate
            assert len(ours) == maxiter and all(x.shape == b.shape for x in ours)
        else:  # one call per inner iteration, with a relative residual estimate
            assert len(ours) == (maxiter if callback_type == "legacy" else 5 * maxiter)
            assert all(isinstance(r, float) and 0 < r < 1 for r in ours)
    # unpreconditioned, pr_norm is the true residual estimate: it matches scipy's closely
    ref, ours = [], []
    spla.gmres(A, b, rtol=RTOL, restart=10, maxiter=2, callback=ref.append, callback_type="pr_norm")
    gmres(A, b, rtol=RTOL, restart=10, maxiter=2, callback=ours.append, callback_type="pr_norm")
    assert np.allclose(ours, ref, rtol=1e-6)
    with pytest.raises(ValueError, match="callback_type"):
        gmres(A, b, callback=print, callback_type="residual")


def test_gmres_default_restart_is_scipys():
    A, b = _advdiff_system()
    its = []
    spla.gmres(A, b, rtol=RTOL, callback=its.append, callback_type="pr_norm")
    _, info = gmres(A, b, rtol=RTOL, full_output=True)  # restart=None: min(20, N)
    assert abs(info.iterations - len(its)) <= 1 and info.converged
    x, info = gmres(A[:6, :6] + 10 * sp.identity(6), b[:6], full_output=True)  # N < 20: restart N
    assert info.converged and info.iterations <= 6


def test_failure_info_equals_scipys():
    A, b = _spd_system()
    for maxiter in (3, 17):
        assert cg(A, b, maxiter=maxiter)[1] == spla.cg(A, b, rtol=RTOL, maxiter=maxiter)[1] == maxiter
    A, b = _advdiff_system()
    assert gmres(A, b, restart=4, maxiter=2)[1] == spla.gmres(A, b, rtol=RTOL, restart=4, maxiter=2)[1] == 2
    assert gmres(A, b, rtol=1e-30, atol=0.0, restart=4, maxiter=None)[1] == spla.gmres(
        A, b, rtol=1e-30, restart=4)[1] == 10 * b.size
    assert gmres(A, b, maxiter=9, callback=lambda r: None, callback_type="legacy")[1] == 9


# --- the sequence driver with operators; the registries -----------------------------------------

class _DiagonalOperator(spla.LinearOperator):
    """A matrix-free A that can give its diagonal (what Jacobi and nothing else needs)."""

    def __init__(self, A):
        super().__init__(np.float64, A.shape)
        self._A = A

    def _matvec(self, v):
        return self._A @ v

    def diagonal(self):
        return self._A.diagonal()


@pytest.mark.parametrize("method,pre", [("cg", "none"), ("cg", "jacobi"), ("rcg", "jacobi"), ("gmres", "none"),
                                        ("gcrodr", "jacobi"), ("scipy_gcrotmk", "none")])
def test_sequence_solver_takes_operators(method, pre):
    systems = darcy_systems(3, n=16)
    s = SequenceSolver(method, pre, recycle_dim=4)
    for A, b in systems:
        x = s(_DiagonalOperator(A), b, matrix_changed=True)  # an operator: matrix_changed is trusted
        assert true_relres(A, x, b) <= RTOL
    assert all(r.converged for r in s.records)


@pytest.mark.parametrize("method,pre,match", [("cg", "amg", "assembled"), ("gmres", "ilu", "assembled"),
                                              ("direct", "none", "assembled"), ("cg", "jacobi", "diag")])
def test_what_needs_matrix_entries_names_the_fix(method, pre, match):
    A, b = _spd_system()
    with pytest.raises(ValueError, match=match) as exc:
        SequenceSolver(method, pre)(spla.aslinearoperator(A), b, matrix_changed=True)
    assert "sparse matrix" in str(exc.value)


def test_check_solver_options_names_the_key():
    from kryflow._registry import ParameterError
    from kryflow.solvers import check_solver_options

    out = check_solver_options("rcg", "amg", {"recycle_mode": "spectral", "amg_reuse": "lagged"})
    assert out["recycle_mode"] == "spectral" and out["amg_reuse"] == "lagged" and out["rtol"] == 1e-8
    assert check_solver_options("auto", "amg", {"method": "auto", "amg_refresh": 2.0})["amg_refresh"] == 2.0
    bad = [
        ("bicgstab", "none", {}, "method", "valid"),
        ("cg", "sor", {}, "preconditioner", "valid"),
        ("cg", "none", {"recycle_mode": "spectral"}, "recycle_mode", "option of method 'rcg'"),
        ("cg", "none", {"restart": 10}, "restart", "valid options"),
        ("auto", "none", {"restart": 10}, "restart", "valid options"),
        ("gmres", "none", {"restart": 0}, "restart", "restart"),
        ("gcrodr", "none", {"restart": 8}, "restart", "recycle_dim=8"),
        ("cg", "none", {"rtol": 2.0}, "rtol", "rtol"),
        ("cg", "none", {"rtol": 0.0, "atol": 0.0}, "rtol", "both 0"),
        ("cg", "none", {"maxiter": 0}, "maxiter", "maxiter"),
        ("rcg", "none", {"recycle_mode": "ritz"}, "recycle_mode", "'deflation' or 'spectral'"),
        ("rcg", "none", {"harvest_per_solve": 0}, "harvest_per_solve", "harvest_per_solve"),
        ("cg", "jacobi", {"amg_reuse": "lagged"}, "amg_reuse", "valid options"),
        ("cg", "amg", {"amg_reuse": "never"}, "amg_reuse", "amg_reuse"),
        ("cg", "none", {"on_nonconvergence": "ignore"}, "on_nonconvergence", "on_nonconvergence"),
    ]
    for method, pre, opts, param, match in bad:
        with pytest.raises(ParameterError, match=match) as exc:
            check_solver_options(method, pre, opts)
        assert exc.value.param == param, (method, pre, opts)
        if method != "auto":  # the driver runs the same check
            with pytest.raises(ParameterError, match=match):
                SequenceSolver(method, pre, **opts)
    with pytest.raises(ValueError, match="default_strategy"):
        SequenceSolver("auto")


def test_solver_options_cover_every_registered_option():
    from kryflow.solvers import solver_options

    opts = solver_options()
    assert opts["recycle_mode"].choices == ("deflation", "spectral")
    assert opts["amg_reuse"].choices == ("rebuild", "aggregates", "lagged")
    for name, cls in SOLVER_METHODS.items():
        assert all(opts[k] is p for k, p in cls.OPTIONS.items()), name
    for name, cls in PRECONDITIONERS.items():
        assert all(opts[k] is p for k, p in cls.OPTIONS.items()), name
    for common in ("rtol", "maxiter", "recycle_dim", "warm_start", "on_nonconvergence", "atol", "blas_threads"):
        assert common in opts


def test_registries_behave_like_the_name_tuples():
    from kryflow.solvers import BASELINE_METHODS

    # the strong baselines (CHOLMOD, PARDISO, pyamg) joined the registry, listed after LU
    assert list(SOLVER_METHODS) == ["cg", "rcg", "gmres", "gcrodr", "direct", "cholmod", "pardiso", "pyamg",
                                    "scipy_gcrotmk"]
    assert BASELINE_METHODS == ("cholmod", "pardiso", "pyamg", "scipy_gcrotmk") and "rcg" in SOLVER_METHODS
    assert "bicg" not in SOLVER_METHODS
    assert list(PRECONDITIONERS) == ["none", "jacobi", "ilu", "amg", "gmg", "ssor"]
    for cls in SOLVER_METHODS.values():
        assert cls.cold_start is None or cls.cold_start in SOLVER_METHODS


@pytest.mark.parametrize("method", list(SOLVER_METHODS))
def test_every_registered_method_solves_a_sequence(method):
    cls = SOLVER_METHODS[method]
    if not cls.available():
        pytest.skip(cls.unavailable_reason())
    pre = "jacobi" if cls.uses_preconditioner else "none"
    s = SequenceSolver(method, pre, recycle_dim=4)
    systems = darcy_systems(3, n=12)
    for A, b in systems:
        x = s(A, b, matrix_changed=True)
        assert true_relres(A, x, b) <= RTOL
    assert [r.method for r in s.records] == [method] * 3
    assert all(r.recycle_dim == 0 for r in s.records) or cls.recycles


def test_a_new_method_is_one_class():
    from kryflow.solvers import SequenceMethod
    from kryflow.solvers._methods import MethodResult

    class Jacobi(SequenceMethod, name="test_jacobi_iteration"):
        """Damped Jacobi iteration x += w D^-1 (b - A x): a method in a dozen lines."""

        OPTIONS = {"damping": __import__("kryflow._registry", fromlist=["Param"]).Param.number(0.8, 0.0, 1.0)}

        def __init__(self, damping=0.8):
            self.damping = damping

        def _iterate(self, system, rtol, atol, maxiter, matrix_changed, callback):
            x, d = np.zeros(system.n), system.diagonal()
            for its in range(1, maxiter + 1):
                r = system.residual(x)
                if np.linalg.norm(r) <= rtol * system.bnorm:
                    return MethodResult(x, its - 1, its, 0)
                x += self.damping * r / d
            return MethodResult(x, maxiter, maxiter, 0)

    try:
        A = sp.diags([np.full(20, -1.0), np.full(21, 4.0), np.full(20, -1.0)], [-1, 0, 1], format="csr")
        b = np.ones(21)
        s = SequenceSolver("test_jacobi_iteration", "none", damping=0.9, rtol=1e-6)
        x = s(A, b, matrix_changed=True)
        assert true_relres(A, x, b) <= 1e-6 and s.records[0].method == "test_jacobi_iteration"
        with pytest.raises(ValueError, match="damping"):
            SequenceSolver("test_jacobi_iteration", "none", damping=2.0)
    finally:
        SOLVER_METHODS._entries.pop("test_jacobi_iteration", None)
