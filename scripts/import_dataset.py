"""Rules import_dataset and import_pdebench: external data into kryflow's schema.
Standalone: `kryflow data import-neuraloperator --train .. --test .. --test-hi .. OUT`,
`kryflow data import-pdebench FILE OUT`."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import run_import, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        run_import(smk.wildcards.dataset, smk.params.source, smk.output.main, smk.input.tracking,
                   transfer_out=getattr(smk.output, "hi", None))  # rule import_pdebench has none


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
