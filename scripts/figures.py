"""Rule figures: paper figures and tables from the results (logged to MLflow)."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_figures, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        runs_root = Path(smk.input.summary).parent / "runs"
        fig_dir = Path(smk.output.png[0]).parent
        run_figures(smk.input.summary, runs_root, list(smk.input.solvers), fig_dir,
                    smk.output.tables, smk.input.tracking, datasets=list(smk.config["datasets"]),
                    models=list(smk.config["models"]))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
