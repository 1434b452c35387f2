"""Rule evaluate: score one cell. Standalone: `kryflow evaluate CONFIG DATASET MODEL OPTIMIZER SEED`."""

import sys
from pathlib import Path

import torch

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_evaluate, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        torch.set_num_threads(max(1, smk.threads))
        w = smk.wildcards
        cell = {"dataset": w.dataset, "model": w.model, "optimizer": w.optimizer, "seed": int(w.seed)}
        transfer = smk.input.transfer  # a path, or an empty list when no transfer set is configured
        if isinstance(transfer, list):
            transfer = transfer[0] if transfer else None
        run_evaluate(cell, smk.params.evaluation, smk.params.device, smk.input.dataset, Path(smk.input.run).parent,
                     smk.input.tracking, transfer_path=transfer)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
