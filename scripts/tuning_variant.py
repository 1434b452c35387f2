"""Rule finetune: a trained model adapted to a shifted dataset by one optimizer (tuning.finetune)."""

import sys
from pathlib import Path

import torch

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_finetune, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        torch.set_num_threads(max(1, smk.threads))
        w = smk.wildcards
        cell = {"dataset": w.dataset, "model": w.model, "optimizer": w.optimizer, "seed": int(w.seed)}
        run_finetune(cell, smk.params.spec, smk.params.training, smk.params.steps, smk.input.pretrained,
                     smk.input.selected, smk.input.budget, smk.input.dataset, Path(smk.output.metrics).parent,
                     smk.input.tracking)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
