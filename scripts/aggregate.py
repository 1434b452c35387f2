"""Rule aggregate: metrics.json of every cell -> results/summary.csv (+ across-seed aggregates)."""

from kryflow.pipeline import run_aggregate, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        run_aggregate(list(smk.input), smk.output.summary, smk.output.aggregate)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
