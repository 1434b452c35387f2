"""Rule select_setting: the trial an optimizer reruns, chosen on the validation split."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_select, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        run_select(smk.params.workload, list(smk.input.batches), smk.params.studies, smk.output[0], smk.input.tracking)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
