"""Rule tune_batch: a batch of trials of the tuning protocol in one job (results/tuning/.../batch{batch}.json)."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import cell_job, run_trial_batch


def main(smk):
    with cell_job(smk) as cell:
        run_trial_batch(cell, smk.params.batch, smk.params.spec, smk.params.training, smk.params.tuning,
                        smk.input.dataset, smk.output.batch, smk.input.tracking, budget_json=smk.input.budget or None,
                        threads=int(smk.threads), settings=smk.params.settings)


# __main__ only: worker processes of concurrent trials (spawned) import this file as __mp_main__
if "snakemake" in globals() and __name__ == "__main__":
    main(snakemake)  # noqa: F821
