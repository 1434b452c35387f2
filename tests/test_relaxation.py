"""SSOR preconditioning with a learnt relaxation (issue 18): the bandits on synthetic cost tables
with a known best arm, the SSOR sweep against its formula, SSOR-PCG and the learnt ω through the
sequence driver, the config checks, and what a generated dataset records."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from kryflow.config import ConfigError, check_config
from kryflow.pdes import build_family
from kryflow.solvers import SequenceSolver, check_solver_options, make_preconditioner
from kryflow.solvers._bandit import ContextualTsallisINF, TsallisINF, dominance_feature, replay


def _stochastic_table(rounds: int, seed: int = 0) -> np.ndarray:
    """Costs of 6 arms: arm 3 is best on average (mean 20), the others 22-40, noise +-4."""
    rng = np.random.default_rng(seed)
    means = np.array([40.0, 30.0, 24.0, 20.0, 22.0, 35.0])
    return means + rng.uniform(-4.0, 4.0, size=(rounds, means.size))


def test_regret_per_round_shrinks_with_the_sequence_length():
    table = _stochastic_table(4000)
    assert int(np.argmin(table.sum(axis=0))) == 3
    per_round = {}
    for T in (250, 1000, 4000):
        runs = [replay(table[:T], TsallisINF(range(6), seed)) for seed in range(5)]
        per_round[T] = np.mean([r["regret_per_round"] for r in runs])
        assert all(r["best_arm"] == 3 for r in runs)
    assert per_round[250] > per_round[1000] > per_round[4000] > 0
    assert per_round[4000] < 0.4 * per_round[250]  # about 1/sqrt(T): 0.25 for 16x the rounds, up to noise
    late = replay(table, TsallisINF(range(6), 0))["choices"][-1000:]
    assert np.mean(late == 3) > 0.8


def test_bandit_learns_faster_with_a_larger_rate_and_stays_seeded():
    table = _stochastic_table(500, seed=1)
    slow = np.mean([replay(table, TsallisINF(range(6), s, rate=2.0))["cost"] for s in range(5)])
    fast = np.mean([replay(table, TsallisINF(range(6), s, rate=16.0))["cost"] for s in range(5)])
    assert fast < slow
    a, b = replay(table, TsallisINF(range(6), 7)), replay(table, TsallisINF(range(6), 7))
    assert np.array_equal(a["choices"], b["choices"])


def test_contextual_bandit_learns_a_best_arm_per_context():
    rng = np.random.default_rng(3)
    rounds = 2000
    features = rng.choice([0.01, 0.5], size=rounds)  # two kinds of systems, in different cells
    table = np.where((features < 0.1)[:, None], [10.0, 20.0, 30.0], [30.0, 20.0, 10.0])
    table = table + rng.uniform(-2, 2, size=table.shape)
    ctx = replay(table, ContextualTsallisINF(range(3), 0, rate=16.0), features)
    plain = replay(table, TsallisINF(range(3), 0, rate=16.0))
    assert ctx["cost"] < 0.75 * plain["cost"]  # the best fixed arm (1) costs 20 per round, per context 10
    late = ctx["choices"][-500:]
    assert np.mean(late == np.where(features[-500:] < 0.1, 0, 2)) > 0.8


def test_bandit_rejects_bad_feedback():
    b = TsallisINF([1.0, 1.5])
    with pytest.raises(RuntimeError, match="choose"):
        b.observe(3.0)
    b.choose()
    with pytest.raises(ValueError, match="cost"):
        b.observe(-1.0)
    assert np.isclose(b.probabilities().sum(), 1.0)
    with pytest.raises(ValueError, match="feature"):
        ContextualTsallisINF([1.0, 1.5]).choose(0.0)


def test_ssor_sweep_is_the_ssor_preconditioner():
    rng = np.random.default_rng(0)
    B = sp.random(40, 40, density=0.15, random_state=1)
    A = (B + B.T + 10 * sp.identity(40)).tocsr()
    D, L, U = np.diag(A.diagonal()), np.tril(A.toarray(), -1), np.triu(A.toarray(), 1)
    for omega in (0.6, 1.0, 1.7):
        M = (D / omega + L) @ np.linalg.inv(D / omega) @ (D / omega + U) / (2 - omega)
        pre = make_preconditioner("ssor", omega=omega)
        pre.update(A, True)
        r = rng.standard_normal(40)
        np.testing.assert_allclose(pre(r), np.linalg.solve(M, r), rtol=1e-12, atol=1e-14)
        assert np.allclose(M, M.T) and np.linalg.eigvalsh(M).min() > 0  # SPD: CG may use it


def _heat_solve(systems_of: int, **solver):
    fam = build_family("heat", n=24, scheme="crank_nicolson", relation="iid", num_steps=10, save_every=5)
    s = SequenceSolver(rtol=1e-8, **solver)
    outs = [smp.solve(s) for smp in fam.samples(systems_of, seed=0)]
    return s.records, outs


def test_ssor_pcg_converges_in_fewer_iterations_than_cg_and_records_omega():
    plain, _ = _heat_solve(2, method="cg", preconditioner="none")
    ssor, _ = _heat_solve(2, method="cg", preconditioner="ssor", omega=1.5)
    assert all(r.converged and r.rel_residual <= 1e-8 for r in ssor)
    assert sum(r.iterations for r in ssor) < 0.6 * sum(r.iterations for r in plain)
    assert {r.parameter for r in ssor} == {1.5} and all(np.isnan(r.regret_estimate) for r in ssor)
    assert all(np.isnan(r.parameter) for r in plain)


def test_learnt_omega_is_seeded_from_the_grid_and_does_not_change_the_outputs():
    grid = [1.0, 1.3, 1.6, 1.9]
    a, out_a = _heat_solve(3, method="cg", preconditioner="ssor", omega="learn", omega_grid=grid, omega_seed=4)
    b, _ = _heat_solve(3, method="cg", preconditioner="ssor", omega="learn", omega_grid=grid, omega_seed=4)
    _, out_ref = _heat_solve(3, method="direct")
    assert [r.parameter for r in a] == [r.parameter for r in b]
    assert set(r.parameter for r in a) <= set(grid) and len(set(r.parameter for r in a)) > 1
    assert all(r.converged for r in a) and np.isfinite(a[-1].regret_estimate)  # once an arm has 3 plays
    for got, ref in zip(out_a, out_ref):
        for k in ref:
            assert np.abs(got[k] - ref[k]).max() <= 1e-6 * np.abs(ref[k]).max()  # rtol 1e-8 on well-conditioned CN
    ctx, _ = _heat_solve(2, method="cg", preconditioner="ssor", omega="learn", omega_context="dominance")
    assert all(r.converged for r in ctx)


def test_dominance_feature_orders_stiffness():
    lap = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(50, 50))
    mild, stiff = (sp.identity(50) + 0.1 * lap), (sp.identity(50) + 100 * lap)
    assert 0 < dominance_feature(stiff) < dominance_feature(mild) < 1


@pytest.mark.parametrize("options,key", [
    ({"omega": 2.0}, "omega"), ({"omega": "fast"}, "omega"), ({"omega": "learn", "omega_grid": [1.0]}, "omega_grid"),
    ({"omega": "learn", "omega_grid": [1.0, 2.5]}, "omega_grid"), ({"omega": "learn", "omega_feedback": "flops"},
                                                                  "omega_feedback"),
    ({"omega": "learn", "omega_rate": 0}, "omega_rate"),
])
def test_bad_ssor_options_name_the_key(tiny_config, options, key):
    with pytest.raises(ValueError) as err:
        check_solver_options("cg", "ssor", options)
    assert err.value.param == key
    tiny_config["datasets"]["darcy"]["solver"] = {"method": "cg", "preconditioner": "ssor", **options}
    with pytest.raises(ConfigError) as err:
        check_config(tiny_config)
    assert f"datasets.darcy.solver.{key}" in str(err.value)


def test_omega_with_another_preconditioner_says_whose_option_it_is():
    with pytest.raises(ValueError, match="preconditioner 'ssor'") as err:
        check_solver_options("cg", "jacobi", {"omega": 1.5})
    assert err.value.param == "omega"


def test_generated_dataset_stores_omega_and_regret_per_solve(tmp_path):
    from kryflow.data import open_dataset
    from kryflow.generation import generate_dataset

    out = tmp_path / "heat.zarr"
    generate_dataset(out, family="heat", params={"n": 16, "num_steps": 4, "save_every": 2, "scheme": "crank_nicolson"},
                     num_samples=4, seed=0, chunk_samples=2, progress=False,
                     solver={"method": "cg", "preconditioner": "ssor", "omega": "learn", "omega_grid": [1.2, 1.6]})
    ds = open_dataset(out)
    omega = ds["solver_omega"].values
    assert omega.shape == (4, ds.sizes["solve"]) and set(np.unique(omega)) <= {1.2, 1.6}
    assert np.isfinite(ds["solver_regret_estimate"].values[-1, -1])
    assert int(ds["solver_converged"].values.min()) == 1


def test_generation_run_logs_omega_and_regret_series(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from kryflow.pipeline import init_tracking, run_generate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    info = init_tracking("ssor", {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, tmp_path / "tracking.json", tmp_path)
    spec = {"family": "darcy", "params": {"n": 12}, "num_samples": 12, "seed": 0, "chunk_samples": 3,
            "solver": {"method": "cg", "preconditioner": "ssor", "omega": "learn", "omega_grid": [1.0, 1.5, 1.8]}}
    run_generate("learnt", spec, "ssor", tmp_path / "learnt.zarr", tmp_path / "tracking.json")
    client = MlflowClient(tracking_uri=info["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("ssor").experiment_id])
    omega = [m.value for m in client.get_metric_history(run.info.run_id, "solve_omega")]
    regret = client.get_metric_history(run.info.run_id, "solve_regret_estimate")
    assert len(omega) == 12 and set(omega) <= {1.0, 1.5, 1.8}
    assert 1 <= len(regret) <= 12 and regret[-1].step == 11  # from the solve where an arm has 3 plays
    assert run.info.status == "FINISHED"


def test_regret_estimate_tracks_the_true_regret_on_a_known_table():
    table = _stochastic_table(1000, seed=2)
    learner = TsallisINF(range(6), 0, rate=16.0)
    true = replay(table, learner)["regret"][-1]
    est = learner.estimated_regret()
    assert 0.5 * true < est < 2.0 * true  # a plug-in estimate, not the importance-weighted minimum
    assert np.isnan(TsallisINF(range(6)).estimated_regret())  # no arm played yet


def test_strategy_choice_learns_the_faster_strategy_and_keeps_the_outputs():
    from kryflow.solvers import StrategyChoice

    fam = build_family("darcy", n=64, relation="iid")
    systems = []
    for smp in fam.samples(60, seed=0):
        smp.solve(lambda A, b, *, matrix_changed: systems.append((A, b)) or np.zeros_like(b))
    slow = {"method": "cg", "preconditioner": "none", "warm_start": False}  # ~25x GMG-PCG's iterations
    fast = {"method": "cg", "preconditioner": "gmg", "warm_start": False}
    choice = StrategyChoice([slow, fast], seed=0, cost=lambda info: info.iterations)  # not timed: deterministic
    for A, b in systems:
        x = choice(A, b, matrix_changed=True)
        assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b) * (1 + 1e-9)
    picks = np.array([r.parameter for r in choice.pop_records()])
    assert set(picks) <= {0.0, 1.0} and np.mean(picks[-20:] == 1.0) > 0.7
    assert choice.pop_records() == []


def test_choose_config_checks_every_strategy(tiny_config):
    solver = tiny_config["datasets"]["darcy"]["solver"] = {
        "method": "choose", "rtol": 1e-8, "strategies": [{"method": "cg", "preconditioner": "gmg"}, {"method": "direct"}]}
    check_config(tiny_config)
    for change, key in (({"strategies": [{"method": "cg"}]}, "strategies"),
                        ({"strategies": [{"method": "cg"}, {"method": "gmres", "restart": 0}]}, "strategies.1.restart"),
                        ({"restart": 10}, "restart"), ({"choose_rate": 0}, "choose_rate")):
        tiny_config["datasets"]["darcy"]["solver"] = {**solver, **change}
        with pytest.raises(ConfigError) as err:
            check_config(tiny_config)
        assert f"datasets.darcy.solver.{key}" in str(err.value)


def test_generated_dataset_with_method_choose_records_the_strategy(tmp_path):
    from kryflow.data import open_dataset
    from kryflow.generation import generate_dataset

    out = tmp_path / "darcy.zarr"
    strategies = [{"method": "cg", "preconditioner": "jacobi"}, {"method": "direct"}]
    generate_dataset(out, family="darcy", params={"n": 12}, num_samples=6, seed=0, chunk_samples=3, progress=False,
                     solver={"method": "choose", "strategies": strategies})
    ds = open_dataset(out)
    assert set(np.unique(ds["solver_strategy"].values)) <= {0.0, 1.0}
    assert int(ds["solver_converged"].values.min()) == 1 and "solver_omega" not in ds


def test_strategy_choice_decides_once_per_matrix():
    from kryflow.solvers import StrategyChoice

    fam = build_family("heat", n=12, scheme="crank_nicolson", relation="iid", num_steps=4, save_every=2)
    choice = StrategyChoice([{"method": "cg", "preconditioner": "jacobi"}, {"method": "direct"}], seed=1)
    for smp in fam.samples(8, seed=0):
        smp.solve(choice)
    picks = np.array([r.parameter for r in choice.pop_records()]).reshape(8, int(fam.solves_per_sample))
    assert np.all(picks == picks[:, :1])  # every solve of one matrix (a trajectory) by one strategy
    assert choice.learner.rounds == 7  # told each matrix's total cost when the next matrix arrives
