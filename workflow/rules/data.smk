# Data: tracking set-up, dataset generation with recycled Krylov solvers, solver benchmark.


rule init_tracking:
    # The experiment is created once, before jobs fan out (sqlite creation races otherwise).
    output:
        "results/tracking.json",
    params:
        experiment=config["experiment"],
        uri=tracking_uri(),
    log:
        "logs/init_tracking.log",
    benchmark:
        "results/benchmarks/rules/init_tracking.tsv"
    localrule: True
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/init_tracking.py"


rule generate_dataset:
    # A PDE family's sequence solved by one recycling solver, streamed into a zarr store
    # (written under a temporary name and moved into place only when complete).
    input:
        tracking=ancient("results/tracking.json"),
    output:
        directory("data/{dataset}.zarr"),
    wildcard_constraints:
        dataset=name_pattern(generated_names()),
    params:
        spec=dataset_spec_of,
    log:
        "logs/generate_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/rules/generate_dataset/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=generate_mem_mb,
        runtime=generate_runtime,
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/generate_dataset.py"


rule import_dataset:
    # External data (neuraloperator's Darcy sets) in kryflow's schema; the files are read
    # from their path, never copied. The 32x32 test file becomes data/{dataset}__hi.zarr.
    input:
        tracking=ancient("results/tracking.json"),
    output:
        main=directory("data/{dataset}.zarr"),
        hi=directory("data/{dataset}__hi.zarr"),
    wildcard_constraints:
        dataset=name_pattern(imported_datasets()),
    log:
        "logs/import_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/rules/import_dataset/{dataset}.tsv"
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/import_dataset.py"


rule solver_benchmark:
    # Recycled vs cold vs preconditioned vs direct on the dataset's own sequence.
    input:
        tracking=ancient("results/tracking.json"),
    output:
        "results/solvers/{dataset}.json",
    params:
        spec=dataset_spec_of,
    log:
        "logs/solver_benchmark/{dataset}.log",
    benchmark:
        "results/benchmarks/rules/solver_benchmark/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=generate_mem_mb,
        runtime=generate_runtime,
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/solver_benchmark.py"
