"""Config validation: schema + registries, before any job starts, one message naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import ROOT, run_snakemake, write_config
from kryflow.config import ConfigError, check_config, load_config, training_cells


def test_default_and_paper_configs_are_valid():
    default = load_config(ROOT / "config" / "config.yaml")
    cells = training_cells(default)
    assert len(default["datasets"]) >= 2 and len(default["models"]) >= 2
    assert len(default["optimizers"]) >= 4 and len(default["seeds"]) >= 2
    from kryflow.optim import OPTIMIZERS

    families = {OPTIMIZERS[o].family for o in default["optimizers"]}
    assert {"first_order", "curvature", "zeroth_order"} <= families
    assert len(cells) == 2 * 2 * 4 * 2
    paper = load_config(ROOT / "config" / "paper.yaml")
    assert len(training_cells(paper)) > len(cells)


BAD = [
    (lambda c: c["optimizers"].update({"adamx": {"lr": 1e-3}}), "optimizers.adamx"),
    (lambda c: c["models"].update({"transformerx": {}}), "models.transformerx"),
    (lambda c: c["datasets"]["darcy"].update({"family": "navier"}), "datasets.darcy.family"),
    (lambda c: c["training"].update({"batch_size": "eight"}), "training.batch_size"),
    (lambda c: c["training"].update({"max_steps": 0}), "training.max_steps"),
    (lambda c: c["datasets"]["darcy"]["params"].update({"n": 17}), "models.unet"),
    (lambda c: c["datasets"]["darcy"]["params"].update({"n": -4}), "datasets.darcy.params.n"),
    (lambda c: c["optimizers"]["adam"].update({"lr": -1.0}), "optimizers.adam.lr"),
    (lambda c: c["optimizers"]["adam"].update({"betaz": 0.9}), "optimizers.adam.betaz"),
    (lambda c: c["datasets"].update({"../evil": c["datasets"]["darcy"]}), "datasets"),
    (lambda c: c.update({"seeds": []}), "seeds"),
    (lambda c: c.update({"tracking": {"uri": "not a uri"}}), "tracking.uri"),
    (lambda c: c["datasets"]["darcy"]["solver"].update({"method": "bicgx"}), "datasets.darcy.solver.method"),
    (lambda c: c["datasets"]["darcy"].update({"splits": [0.5, 0.5, 0.5]}), "datasets.darcy.splits"),
    (lambda c: c["datasets"]["darcy"]["solver"].update({"method": "rcg", "recycle_mode": "ritz"}),
     "datasets.darcy.solver.recycle_mode"),
    (lambda c: c["datasets"]["darcy"]["solver"].update({"method": "cg", "recycle_mode": "spectral"}),
     "datasets.darcy.solver.recycle_mode"),
    (lambda c: c.update({"trainig": {}}), "trainig"),
]


@pytest.mark.parametrize("mutate,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_names_the_key(tiny_config, mutate, key):
    mutate(tiny_config)
    with pytest.raises(ConfigError) as err:
        check_config(tiny_config)
    assert key in str(err.value)


def test_invalid_config_fails_before_any_job(tmp_path, tiny_config):
    tiny_config["optimizers"]["adamx"] = {"lr": 1e-3}
    cfg = write_config(tmp_path / "bad.yaml", tiny_config)
    proc = run_snakemake(tmp_path, cfg, timeout=300)
    assert proc.returncode != 0
    assert "optimizers.adamx" in proc.stderr + proc.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def test_paper_config_plans_full_grid(tmp_path):
    paper = load_config(ROOT / "config" / "paper.yaml")
    proc = run_snakemake(tmp_path, ROOT / "config" / "paper.yaml", "-n", "--quiet", "rules", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    ncells = len(training_cells(paper))
    # the job-count table lists one train and one evaluate job per cell
    lines = {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if len(ln.split()) == 2 and ln.split()[1].isdigit()}
    assert int(lines["train"]) == ncells and int(lines["evaluate"]) == ncells


def test_snakemake_lint_is_clean(tmp_path):
    proc = run_snakemake(tmp_path, ROOT / "config" / "config.yaml", "--lint", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_schema_enumerations_and_options_equal_the_registries():
    """The schema lists registered names and solver options; the registries own them."""
    from kryflow.config import schema
    from kryflow.pdes import PDE_FAMILIES
    from kryflow.solvers import PRECONDITIONERS, SOLVER_METHODS, solver_options
    from kryflow.training import LOSSES

    root = schema()
    dataset = root["$defs"]["dataset"]["properties"]
    solver = root["$defs"]["solver"]["properties"]
    assert sorted(dataset["family"]["enum"]) == sorted(PDE_FAMILIES)
    assert sorted(solver["method"]["enum"]) == sorted(["auto", "choose", *SOLVER_METHODS])
    assert sorted(solver["preconditioner"]["enum"]) == sorted(PRECONDITIONERS)
    from kryflow.generation import INITIAL_GUESSES, ORDERS

    options = solver_options()
    from kryflow.solvers._choice import CHOICE_OPTIONS

    others = {"method", "preconditioner", "order", "initial_guess", "surrogate", *CHOICE_OPTIONS}
    assert set(solver) - others == set(options)
    assert solver["order"]["enum"] == list(ORDERS)
    assert solver["initial_guess"]["enum"] == list(INITIAL_GUESSES)
    for name, param in options.items():
        if param.choices is not None:
            assert solver[name]["enum"] == list(param.choices), name
    assert sorted(root["properties"]["training"]["properties"]["loss"]["enum"]) == sorted(LOSSES)
