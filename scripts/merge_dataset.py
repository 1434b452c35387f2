"""Rule merge_dataset: the shards of a dataset into data/{dataset}.zarr .
Standalone: `kryflow data merge --out OUT PART...`."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_merge, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        run_merge(smk.wildcards.dataset, smk.params.spec, list(smk.input.parts), smk.output[0], smk.input.tracking)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
