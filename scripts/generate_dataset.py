"""Rule generate_dataset: one dataset into data/{dataset}.zarr (generated or imported).
Standalone: `kryflow generate CONFIG DATASET`."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_generate, run_import, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        name = smk.wildcards.dataset
        if "source" in smk.params.spec:
            run_import(smk.config, name, smk.output[0], smk.input.tracking)
        else:
            run_generate(smk.config, name, smk.output[0], smk.input.tracking)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
