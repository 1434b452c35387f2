"""Rule tune_trial: one trial of the tuning protocol (results/tuning/.../trial{trial})."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import cell_job, run_trial


def main(smk):
    with cell_job(smk) as cell:
        run_trial(cell, smk.params.trial, smk.params.spec, smk.params.training, smk.params.tuning, smk.input.dataset,
                  Path(smk.output.trial).parent, smk.input.tracking, budget_json=smk.input.budget or None)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
