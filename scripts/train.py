"""Rule train: one grid cell. Standalone: `kryflow train CONFIG DATASET MODEL OPTIMIZER SEED`."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import cell_job, run_train


def main(smk):
    with cell_job(smk) as cell:
        run_train(cell, smk.params.spec, smk.params.training, smk.input.dataset, Path(smk.output.run).parent,
                  smk.input.tracking, system_metrics=smk.params.system_metrics,
                  selected_json=smk.input.selected or None, budget_json=smk.input.budget or None)


# __main__ only: the generator processes of an online cell (spawned) import this file as __mp_main__
if "snakemake" in globals() and __name__ == "__main__":
    main(snakemake)  # noqa: F821
