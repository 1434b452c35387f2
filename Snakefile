# kryflow: recycled-Krylov PDE data -> zarr -> surrogates x optimizers -> evaluation -> MLflow.
# Reads like a table of contents; each stage lives in workflow/rules/<stage>.smk, its entry
# point in scripts/, its science in src/kryflow/<stage>/.

# The default config, unless one is given with --configfile (Snakemake would otherwise merge
# the two, mixing the default grid into the requested one).
if not config:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


onsuccess:
    print_locations()


rule all:
    default_target: True
    input:
        final_outputs(),
