"""Tests for kryflow.pdes: registry, GRF sampler, operators, families (2D and 3D)."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from kryflow.pdes import (
    PDE_FAMILIES,
    GaussianRandomField,
    advection_operator,
    build_family,
    diffusion_operator,
    family_parameters,
)


def lu_solve(A, b, *, matrix_changed):
    return spla.spsolve(A.tocsc(), b)


def test_registry_names_and_errors():
    assert set(PDE_FAMILIES) == {"darcy", "heat", "advection_diffusion", "navier_stokes"}
    with pytest.raises(ValueError, match="valid families"):
        build_family("burgers")
    with pytest.raises(ValueError, match="valid parameters"):
        build_family("darcy", viscosity=1.0)
    for name in PDE_FAMILIES:
        params = family_parameters(name)
        assert {"n", "dim", "relation", "drift_angle", "alpha", "tau"} <= set(params)
        fam = build_family(name, **params)
        assert fam.params == params


@pytest.mark.parametrize(
    "bad",
    [{"n": 1}, {"dim": 4}, {"relation": "walk"}, {"alpha": -1.0}, {"coefficient": "uniform"},
     {"contrast_low": -3.0}],
)
def test_bad_darcy_params(bad):
    with pytest.raises(ValueError):
        build_family("darcy", **bad)


def test_bad_heat_params():
    with pytest.raises(ValueError, match="save_every"):
        build_family("heat", num_steps=10, save_every=3)
    with pytest.raises(ValueError, match="scheme"):
        build_family("heat", scheme="rk4")
    with pytest.raises(ValueError, match="dt"):
        build_family("heat", dt=0.0)
    with pytest.raises(ValueError, match="rannacher_steps"):
        build_family("heat", scheme="crank_nicolson", num_steps=4, save_every=2, rannacher_steps=5)


@pytest.mark.parametrize("name", sorted(PDE_FAMILIES))
@pytest.mark.parametrize("dim,n", [(2, 12), (3, 6)])
def test_family_contract(name, dim, n):
    if name == "navier_stokes" and dim == 3:
        pytest.skip("navier_stokes is 2D only")
    kw = {"num_steps": 4, "save_every": 2} if name in ("heat", "navier_stokes") else {}
    fam = build_family(name, n=n, dim=dim, **kw)
    assert fam.shape == (n,) * dim and fam.dim == dim
    coords = fam.coords()
    assert list(coords) == ["x", "y", "z"][:dim]
    assert all(c.shape == (n,) and 0 < c.min() and c.max() < 1 for c in coords.values())
    variables = fam.variables()
    for v in fam.inputs:
        assert variables[v]["role"] == "input"
    for v in fam.targets:
        assert variables[v]["role"] == "output"
    for info in variables.values():
        assert {"dims", "long_name", "units", "role"} <= set(info)
    extra = fam.extra_coords()
    samples = list(fam.samples(3, seed=5))
    assert [s.index for s in samples] == [0, 1, 2]
    calls = []

    def solve(A, b, *, matrix_changed):
        calls.append(matrix_changed)
        # Navier–Stokes: the momentum systems live on the (n-1) x n interior faces of a component
        size = fam.n_unknowns if name != "navier_stokes" else b.shape[0]
        assert A.shape == (size, size) and b.shape == (size,) and size in (fam.n_unknowns, n * (n - 1))
        return lu_solve(A, b, matrix_changed=matrix_changed)

    for s in samples:
        assert set(s.fields) == set(fam.inputs)
        for f in s.fields.values():
            assert f.shape == fam.shape and f.dtype == np.float64 and np.all(np.isfinite(f))
        out = s.solve(solve)
        outputs = [k for k, v in variables.items() if v["role"] == "output"]
        assert set(out) == set(outputs)
        for k, arr in out.items():
            dims = variables[k]["dims"]
            expected = tuple(len(extra[d][1]) if d in extra else n for d in dims)
            assert arr.shape == expected and np.all(np.isfinite(arr))
    assert len(calls) == 3 * fam.solves_per_sample
    if name == "heat":
        assert calls[:4] == [True, False, False, False]
        assert len(extra["time"][1]) == 2 and extra["time"][2]["units"] == "s"


@pytest.mark.parametrize("name", sorted(PDE_FAMILIES))
def test_samples_are_seeded(name):
    fam = build_family(name, n=10)
    a = [s.fields for s in fam.samples(3, seed=1)]
    b = [s.fields for s in fam.samples(3, seed=1)]
    c = [s.fields for s in fam.samples(3, seed=2)]
    for fa, fb, fc in zip(a, b, c):
        for k in fa:
            np.testing.assert_array_equal(fa[k], fb[k])
        assert any(not np.array_equal(fa[k], fc[k]) for k in fa)


def test_grf_variance_and_drift_correlation():
    grf = GaussianRandomField((32, 32), alpha=2.0, tau=3.0)
    rng = np.random.default_rng(0)
    fields = np.stack([grf.sample(rng) for _ in range(200)])
    assert abs(fields.var() - 1.0) < 0.1  # unit marginal variance by construction
    theta = 0.3
    path = np.stack(list(grf.path(np.random.default_rng(1), 400, "drift", theta)))
    corr = np.mean(path[1:] * path[:-1]) / np.mean(path**2)
    assert abs(corr - np.cos(theta)) < 0.05
    iid = np.stack(list(grf.path(np.random.default_rng(1), 400, "iid", theta)))
    assert abs(np.mean(iid[1:] * iid[:-1]) / np.mean(iid**2)) < 0.1


def test_binary_and_lognormal_coefficients():
    fam = build_family("darcy", n=16)
    a = next(iter(fam.samples(1, 0))).fields["a"]
    assert set(np.unique(a)) <= {3.0, 12.0} and len(np.unique(a)) == 2
    fam = build_family("darcy", n=16, coefficient="lognormal", sigma=1.5)
    a = next(iter(fam.samples(1, 0))).fields["a"]
    assert np.all(a > 0) and len(np.unique(a)) > 100


def test_diffusion_operator_spd_and_harmonic_mean():
    rng = np.random.default_rng(0)
    a = np.exp(rng.standard_normal((8, 8)))
    A = diffusion_operator(a)
    assert abs(A - A.T).max() < 1e-12
    assert np.linalg.eigvalsh(A.toarray()).min() > 0
    # face between cells (0,0) and (1,0): -2 a0 a1 / (a0 + a1) / h^2
    h2 = (1 / 8) ** 2
    assert np.isclose(A[0, 8], -2 * a[0, 0] * a[1, 0] / (a[0, 0] + a[1, 0]) / h2)


def test_darcy_converges_second_order():
    # manufactured solution u = sin(pi x) sin(pi y), a = 1, f = 2 pi^2 u
    errs = []
    for n in (16, 32):
        c = (np.arange(n) + 0.5) / n
        X, Y = np.meshgrid(c, c, indexing="ij")
        u = np.sin(np.pi * X) * np.sin(np.pi * Y)
        A = diffusion_operator(np.ones((n, n)))
        uh = spla.spsolve(A.tocsc(), (2 * np.pi**2 * u).ravel())
        errs.append(np.abs(uh - u.ravel()).max())
    assert errs[1] < errs[0] / 3.0


def test_advection_operator_upwind_m_matrix():
    rng = np.random.default_rng(0)
    v = (rng.standard_normal((8, 8)), rng.standard_normal((8, 8)))
    A = advection_operator(v).toarray()
    off = A - np.diag(np.diag(A))
    assert np.all(off <= 0) and np.all(np.diag(A) > 0)
    assert np.all(np.diag(A) + off.sum(axis=1) >= -1e-12)  # weakly diagonally dominant rows
    fam = build_family("advection_diffusion", n=12)
    s = next(iter(fam.samples(1, 0)))
    A, _ = fam.system(s.fields["f"], (s.fields["vx"], s.fields["vy"]))
    assert abs(A - A.T).max() > 1e-3
    speed = np.sqrt(s.fields["vx"] ** 2 + s.fields["vy"] ** 2)
    assert np.isclose(speed.max(), 1.0)


def test_bad_fields_raise_clear_errors():
    fam = build_family("darcy", n=8)
    a = np.ones((8, 8))
    with pytest.raises(ValueError, match="strictly positive"):
        fam.system(-a)
    bad = a.copy()
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fam.system(bad)
    with pytest.raises(ValueError, match="shape"):
        fam.system(np.ones((8, 9)))
    with pytest.raises(ValueError, match="num_samples"):
        list(fam.samples(-1, 0))


def test_heat_schemes_approach_steady_state():
    # CN is A- but not L-stable: dt*lambda_max stays moderate so its stiff modes still decay
    for scheme in ("backward_euler", "crank_nicolson"):
        fam = build_family("heat", n=12, scheme=scheme, dt=0.01, num_steps=200, save_every=100,
                           coefficient="lognormal", sigma=0.0)
        s = next(iter(fam.samples(1, 0)))
        out = s.solve(lu_solve)
        steady = spla.spsolve(diffusion_operator(np.ones(fam.shape)).tocsc(), np.ones(fam.n_unknowns))
        assert np.abs(out["u"].ravel() - steady).max() < 1e-3 * np.abs(steady).max() + 1e-6
        np.testing.assert_allclose(out["trajectory"][-1], out["u"])


def _hf_energy(x):
    """Energy of the Fourier modes above a quarter of the grid frequency."""
    f = np.abs(np.fft.fft2(x)) ** 2
    k = np.fft.fftfreq(x.shape[0]) * x.shape[0]
    return f[np.hypot(k[:, None], k[None, :]) > x.shape[0] / 4].sum()


def test_crank_nicolson_rannacher_start_damps_grid_scale_oscillation():
    """At dt*a/h^2 >> 1 plain CN keeps the stiff modes of u0 (amplification -> -1); the Rannacher
    start (two backward-Euler half steps per start-up step, same matrix) removes them."""
    rough = np.random.default_rng(0).standard_normal((32, 32))
    out = {}
    for rs in (0, 2):
        fam = build_family("heat", n=32, scheme="crank_nicolson", dt=0.002, num_steps=8, save_every=8,
                           rannacher_steps=rs, coefficient="lognormal", sigma=0.0)
        calls = []

        def solve(A, b, matrix_changed):
            calls.append(matrix_changed)
            return lu_solve(A, b, matrix_changed=matrix_changed)

        out[rs] = fam.integrate(10.0 * np.ones(fam.shape), rough, solve)["u"]  # dt*a/h^2 = 20
        assert len(calls) == fam.solves_per_sample == 8 + rs and calls.count(True) == 1
    kept = {rs: _hf_energy(u) / _hf_energy(rough) for rs, u in out.items()}
    assert kept[0] > 0.1 and kept[2] < 1e-3, kept


def test_crank_nicolson_with_rannacher_start_is_second_order():
    fam_kw = dict(n=12, scheme="crank_nicolson", coefficient="lognormal", sigma=0.0, forcing=1.0)
    u0 = np.sin(np.pi * np.linspace(0.05, 0.95, 12))[:, None] * np.ones((1, 12))

    def final(num_steps):
        fam = build_family("heat", dt=0.08 / num_steps, num_steps=num_steps, save_every=num_steps, **fam_kw)
        return fam.integrate(np.ones(fam.shape), u0, lu_solve)["u"]

    ref = final(512)
    e1, e2 = (np.abs(final(m) - ref).max() for m in (16, 32))
    assert 3.2 < e1 / e2 < 4.8, (e1, e2)  # halving dt divides the error by about 4


@pytest.mark.parametrize("relation", ["iid", "drift"])
@pytest.mark.parametrize("name", sorted(PDE_FAMILIES))
def test_a_sample_depends_on_seed_and_index_alone(name, relation):
    # whatever block of the dataset is asked for (a shard), sample k is the same
    kw = {"num_steps": 2, "save_every": 1} if name == "heat" else {}
    fam = build_family(name, n=8, relation=relation, **kw)
    whole = list(fam.samples(10, seed=4))
    block = list(fam.samples(10, seed=4, start=6, stop=9))
    assert [s.index for s in block] == [6, 7, 8]
    for s in block:
        for key, value in s.fields.items():
            np.testing.assert_array_equal(value, whole[s.index].fields[key])
    with pytest.raises(ValueError, match="sample range"):
        next(iter(fam.samples(10, seed=4, start=8, stop=12)))


def test_iid_is_the_default_and_drift_correlates_neighbours():
    assert all(family_parameters(name)["relation"] == "iid" for name in PDE_FAMILIES)

    def lag1(relation):
        fam = build_family("darcy", n=32, coefficient="lognormal", relation=relation, drift_angle=0.3)
        xi = np.stack([np.log(s.fields["a"]) for s in fam.samples(150, 0)])
        return np.mean(xi[1:] * xi[:-1]) / np.mean(xi**2)

    assert abs(lag1("iid")) < 0.05
    assert abs(lag1("drift") - np.cos(0.3)) < 0.05
    # i.i.d. advection-diffusion: the mean flow direction is drawn per sample too
    fam = build_family("advection_diffusion", n=8)
    mean_v = [np.array([s.fields["vx"].mean(), s.fields["vy"].mean()]) for s in fam.samples(6, 0)]
    angles = [np.arctan2(v[1], v[0]) for v in mean_v]
    assert np.ptp(angles) > 1.0


def test_advection_diffusion_trajectory_variant():
    # num_steps > 0: heat's implicit steps on the same operator, stored as heat stores them
    steady = build_family("advection_diffusion", n=12)
    timed = build_family("advection_diffusion", n=12, num_steps=200, save_every=50, dt=0.5)
    assert steady.solves_per_sample == 1 and steady.extra_coords() == {} and steady.states == {}
    assert timed.inputs == ["f", "vx", "vy", "u0"] and timed.solves_per_sample == 200
    assert timed.states == {"u": ("u0", "trajectory")}
    assert timed.variables()["trajectory"]["dims"] == ("time", "x", "y")
    np.testing.assert_allclose(timed.extra_coords()["time"][1], [25.0, 50.0, 75.0, 100.0])
    a, b = next(iter(steady.samples(1, seed=3))), next(iter(timed.samples(1, seed=3)))
    for key in a.fields:  # the steady problem's f and v, and a u0 of its own stream
        np.testing.assert_array_equal(a.fields[key], b.fields[key])
    assert not any(np.array_equal(b.fields["u0"], b.fields[k]) for k in a.fields)
    calls = []

    def solve(A, rhs, *, matrix_changed):
        calls.append(matrix_changed)
        return lu_solve(A, rhs, matrix_changed=matrix_changed)

    out = b.solve(solve)
    assert calls == [True] + [False] * 199  # one matrix per sample
    assert out["trajectory"].shape == (4, 12, 12)
    np.testing.assert_array_equal(out["u"], out["trajectory"][-1])
    # backward Euler's fixed point is the steady solution, reached long before t = 100
    u_steady = a.solve(lu_solve)["u"]
    assert np.abs(out["u"] - u_steady).max() < 1e-8 * np.abs(u_steady).max()


@pytest.mark.parametrize("bad,key", [({"num_steps": -1}, "num_steps"),
                                     ({"num_steps": 10, "save_every": 3}, "save_every"),
                                     ({"num_steps": 4, "dt": 0.0}, "dt"),
                                     ({"num_steps": 4, "scheme": "rk4"}, "scheme")])
def test_bad_advection_diffusion_time_params(bad, key):
    with pytest.raises(ValueError, match=key) as err:
        build_family("advection_diffusion", **bad)
    assert err.value.param == key
