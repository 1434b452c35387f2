"""Rule tuning_report: times to target, performance profiles and scores of the comparison."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_tuning_report, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        run_tuning_report(smk.params.reference, smk.params.seeds, list(smk.input.budgets), list(smk.input.selected),
                          smk.params.trial_root, smk.params.runs_root, smk.output[0], smk.input.tracking,
                          finetune=list(smk.input.finetune), heldout=list(smk.input.heldout))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
