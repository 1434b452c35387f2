"""Rules generate_dataset (data/{dataset}.zarr) and generate_shard (data/{dataset}.parts/{shard}.zarr).
Standalone: `kryflow generate CONFIG DATASET [--shard K]`."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_generate, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        run_generate(smk.wildcards.dataset, smk.params.spec, smk.params.experiment, smk.output[0], smk.input.tracking,
                     shard=smk.params.shard)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
