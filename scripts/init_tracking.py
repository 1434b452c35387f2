"""Rule init_tracking: create the MLflow experiment once. Standalone: `kryflow tracking init CONFIG`."""

from kryflow.pipeline import init_tracking, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        init_tracking(smk.config, smk.output[0])


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
