"""Rule aggregate: metrics.json of every cell -> results/summary.csv (+ across-seed aggregates)."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_aggregate, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        run_aggregate(list(smk.input), smk.output.summary, smk.output.aggregate)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
