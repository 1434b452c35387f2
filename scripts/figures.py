"""Rule figures: paper figures and tables from the results (logged to MLflow)."""

from pathlib import Path

from kryflow.pipeline import run_figures, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        runs_root = Path(smk.input.summary).parent / "runs"
        run_figures(smk.input.summary, runs_root, list(smk.input.solvers), smk.output.figures,
                    smk.output.tables, smk.input.tracking, datasets=list(smk.config["datasets"]),
                    models=list(smk.config["models"]))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
