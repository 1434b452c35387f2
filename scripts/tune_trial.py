"""Rule tune_trial: one trial of the tuning protocol (results/tuning/.../trial{trial})."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_trial, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        w = smk.wildcards
        cell = {"dataset": w.dataset, "model": w.model, "optimizer": w.optimizer}
        run_trial(cell, smk.params.trial, smk.params.spec, smk.params.training, smk.params.tuning, smk.input.dataset,
                  Path(smk.output.trial).parent, smk.input.tracking, budget_json=smk.input.budget or None)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
