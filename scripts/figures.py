"""Rule figures: paper figures and tables from the results (logged to MLflow)."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_figures, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        tuning = list(smk.input.tuning)  # the tuning report, when the protocol ran
        run_figures(smk.input.summary, smk.params.runs_root, list(smk.input.solvers), Path(smk.output.png[0]).parent,
                    smk.output.tables, smk.input.tracking, datasets=smk.params.datasets, models=smk.params.models,
                    tuning_report=tuning[0] if tuning else None, rollout_datasets=smk.params.rollout_datasets)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
