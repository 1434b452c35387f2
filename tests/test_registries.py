"""Registries: one definition adds an extension point's entry everywhere it is used.

Each case runs in a fresh process (a new entry would otherwise stay registered for the rest of
the session) and defines one entry the way a new module would, then uses it through the public
interfaces that read the registry: config checks, building, summary columns, tables, figures.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

PRELUDE = f"""
import copy, json, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from conftest import TINY_CONFIG
cfg = copy.deepcopy(TINY_CONFIG)
"""

CASES = {
    "model": """
        import torch
        from torch import nn
        from kryflow.config import check_config
        from kryflow.models import RegisteredModel, build_model, model_config, model_from_config

        class Linear1x1(RegisteredModel):
            name = "linear1x1"

            def __init__(self, in_channels, out_channels, dim, width: int = 4):
                super().__init__()
                self._record(locals())
                self.net = nn.Conv2d(in_channels, out_channels, 1)

            def forward(self, x):
                return self.net(x)

        cfg["models"] = {"lin": {"name": "linear1x1", "width": 2}}
        check_config(cfg)
        m = build_model("linear1x1", in_channels=2, out_channels=1, dim=2, width=2)
        again = model_from_config(model_config(m))
        assert type(again) is Linear1x1 and again(torch.zeros(1, 2, 4, 4)).shape == (1, 1, 4, 4)
        bad = copy.deepcopy(cfg)
        bad["models"]["lin"]["width"] = 0
        try:
            check_config(bad)
        except ValueError as exc:
            assert "models.lin.width" in str(exc), exc
        else:
            raise AssertionError("width 0 accepted")
    """,
    "optimizer": """
        import torch
        from kryflow.config import check_config
        from kryflow.figures import optimizer_style
        from kryflow.optim import OPTIMIZERS, OptimizerSpec, build_optimizer

        def make(model, lr, weight_decay, **extras):
            return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay, **extras)

        OPTIMIZERS.register("plain_sgd", OptimizerSpec(
            "plain_sgd", "backward", "first_order", {"dampening": 0.0}, make, label="Plain SGD",
            style=("#123456", "1", "-")))
        cfg["optimizers"] = {"plain_sgd": {"lr": 0.1}}
        check_config(cfg)
        runner = build_optimizer("plain_sgd", torch.nn.Linear(2, 1), lr=0.1)
        loss = runner.step(lambda: runner.model(torch.ones(3, 2)).pow(2).sum())
        assert float(loss) >= 0
        assert optimizer_style("plain_sgd")["label"] == "Plain SGD"
    """,
    "metric": """
        import numpy as np, pandas as pd, torch
        from kryflow.evaluation import Column, register_metric, summary_columns
        from kryflow.evaluation.metrics import score_test_split
        from kryflow.figures import aggregate, make_tables

        @register_metric("bias", Column("test_bias", "Bias", "test_error"))
        def bias(pred, true):
            return {"test_bias": float((pred - true).mean())}

        assert "test_bias" in summary_columns()
        assert score_test_split(torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))["test_bias"] == 1.0
        row = {c: 0.1 for c in summary_columns()}
        row.update(dataset="d", model="m", optimizer="adam", seed=0, status="finished", run_id="r")
        pd.DataFrame([row]).to_csv("summary.csv", index=False)
        assert "test_bias_mean" in aggregate(pd.read_csv("summary.csv")).columns
        make_tables("summary.csv", "tables")
        assert "| Bias |" in open("tables/test_error.md").read()
    """,
    "figure": """
        from kryflow.figures import figure_instances, figure_stems, make_figures, register_figure
        from kryflow.figures._style import new_figure

        @register_figure("blank", "dataset", "model")
        def blank(inputs, dataset, model):
            fig = new_figure(2, 2)
            fig.add_subplot().set_title(f"{dataset}/{model}")
            return fig

        stems = figure_stems(["d"], ["m"])
        assert "blank_d_m" in stems
        (inst,) = [i for i in figure_instances(["d"], ["m"]) if i.stem == "blank_d_m"]
        assert inst.concerns(dataset="d", model="m") and not inst.concerns(dataset="d", model="x")
        paths = make_figures("missing.csv", "runs", [], "figs", datasets=["d"], models=["m"])
        assert {p.name for p in paths} >= {"blank_d_m.png", "blank_d_m.pdf"}
    """,
    "pde_family": """
        import numpy as np
        from kryflow.pdes import PDE_FAMILIES, DarcyFamily, build_family

        class Poisson(DarcyFamily):
            \"\"\"Darcy with a constant coefficient (a new family reusing Darcy's machinery).\"\"\"
            name = "poisson"

            def _coefficient(self, xi):
                return np.ones_like(xi)

        assert "poisson" in PDE_FAMILIES
        fam = build_family("poisson", n=8)
        sample = next(iter(fam.samples(1, 0)))
        assert np.all(sample.fields["a"] == 1.0)
        # the config schema enumerates family names: a new family is its module plus that line
        from kryflow.config import schema
        assert "poisson" not in schema()["$defs"]["dataset"]["properties"]["family"]["enum"]
    """,
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_one_definition_adds_an_entry_everywhere(kind, tmp_path):
    code = PRELUDE + textwrap.dedent(CASES[kind]) + "\nprint('ok')\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-4000:]


def test_registries_refuse_a_name_twice():
    from kryflow._registry import Registry

    reg = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 2)
    with pytest.raises(ValueError, match="valid things: \\['a'\\]"):
        reg["b"]
