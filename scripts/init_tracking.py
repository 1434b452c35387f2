"""Rule init_tracking: create the MLflow experiment once. Standalone: `kryflow tracking init CONFIG`."""

import sys
from pathlib import Path

if "snakemake" in globals():  # the workflow's own kryflow first (cluster conda envs hold only its dependencies)
    sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from kryflow.pipeline import init_tracking, setup_logging


def main(smk):
    with setup_logging(smk.log[0]):
        init_tracking(smk.params.experiment, smk.params.tracking, smk.output[0], parents=smk.params.parents)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
