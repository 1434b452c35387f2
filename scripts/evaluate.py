"""Rule evaluate: score one cell. Standalone: `kryflow evaluate CONFIG DATASET MODEL OPTIMIZER SEED`."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import cell_job, run_evaluate


def main(smk):
    with cell_job(smk) as cell:
        transfer = smk.input.transfer  # a path, or an empty list when no transfer set is configured
        if isinstance(transfer, list):
            transfer = transfer[0] if transfer else None
        run_evaluate(cell, smk.params.evaluation, smk.params.device, smk.input.dataset, Path(smk.input.run).parent,
                     smk.input.tracking, transfer_path=transfer)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
