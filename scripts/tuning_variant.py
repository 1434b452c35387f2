"""Rule tuning_variant: a workload on another dataset of its family, one optimizer with its
selected setting (tuning.finetune: adapting a trained model; tuning.heldout: from scratch)."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import cell_job, run_variant


def main(smk):
    with cell_job(smk) as cell:
        run_variant(smk.wildcards.kind, cell, smk.params.spec, smk.params.training, smk.params.entry, smk.input.selected,
                    smk.input.budget, smk.input.dataset, Path(smk.output.metrics).parent, smk.input.tracking,
                    pretrained=smk.input.get("pretrained"))


# __main__ only: the generator processes of an online cell (spawned) import this file as __mp_main__
if "snakemake" in globals() and __name__ == "__main__":
    main(snakemake)  # noqa: F821
