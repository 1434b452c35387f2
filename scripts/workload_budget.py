"""Rule workload_budget: the target and budget of a workload, from the reference optimizer reruns."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_budget, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        runs = [Path(p).parent for p in smk.input.runs]
        run_budget(smk.params.workload, runs, smk.params.max_steps, smk.params.factor, smk.output[0], smk.input.tracking)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
