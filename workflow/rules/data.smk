# Data: tracking set-up, dataset generation with recycled Krylov solvers, solver benchmark.


rule init_tracking:
    # The experiment is created once, before jobs fan out (sqlite creation races otherwise).
    output:
        layout.TRACKING_JSON,
    params:
        experiment=config["experiment"],
        tracking=config.get("tracking") or {},
        parents=parent_runs(config),
        uri=tracking_uri(),  # not read by the script: a changed store reruns this rule
    log:
        layout.rule_log("init_tracking"),
    benchmark:
        layout.rule_benchmark("init_tracking")
    localrule: True
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/init_tracking.py"


rule generate_dataset:
    # A PDE family's samples solved as one sequence (recycling where it pays), streamed into a
    # zarr store (written under a temporary name and moved into place only when complete).
    input:
        tracking=ancient(layout.TRACKING_JSON),
        surrogate=surrogate_model_of,  # solver.initial_guess surrogate: the model trained first
    output:
        directory(layout.DATASET),
    wildcard_constraints:
        dataset=name_pattern(single_job_names()),
    params:
        spec=dataset_spec_of,
        experiment=config["experiment"],
        shard=None,
    log:
        layout.rule_log("generate_dataset", "{dataset}"),
    benchmark:
        layout.rule_benchmark("generate_dataset", "{dataset}")
    threads: 1
    resources:
        mem_mb=generate_mem_mb,
        runtime=generate_runtime,
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/generate_dataset.py"


rule generate_shard:
    # One block of whole chunks of a sharded dataset, solved with its own solver state; each
    # shard is its own job (a SLURM job on a cluster) and a killed one reruns alone.
    input:
        tracking=ancient(layout.TRACKING_JSON),
        surrogate=surrogate_model_of,
    output:
        directory(layout.DATASET_PART),
    wildcard_constraints:
        dataset=name_pattern(sharded_names()),
        shard=r"\d+",
    params:
        spec=dataset_spec_of,
        experiment=config["experiment"],
        shard=lambda w: int(w.shard),
    log:
        layout.rule_log("generate_shard", "{dataset}/{shard}"),
    benchmark:
        layout.rule_benchmark("generate_shard", "{dataset}/{shard}")
    threads: 1
    resources:
        mem_mb=generate_mem_mb,
        runtime=generate_runtime,
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/generate_dataset.py"


rule merge_dataset:
    # The shards' parts in the one store: inputs value for value those of a one-job run.
    input:
        parts=dataset_parts,
        tracking=ancient(layout.TRACKING_JSON),
    output:
        directory(layout.DATASET),
    wildcard_constraints:
        dataset=name_pattern(sharded_names()),
    params:
        spec=dataset_spec_of,
    log:
        layout.rule_log("merge_dataset", "{dataset}"),
    benchmark:
        layout.rule_benchmark("merge_dataset", "{dataset}")
    threads: 1
    resources:
        mem_mb=generate_mem_mb,
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/merge_dataset.py"


rule import_dataset:
    # External data (neuraloperator's Darcy sets) in kryflow's schema; the files are read
    # from their path, never copied. The 32x32 test file becomes data/{dataset}__hi.zarr.
    input:
        tracking=ancient(layout.TRACKING_JSON),
    output:
        main=directory(layout.DATASET),
        hi=directory(layout.IMPORTED_HI),
    wildcard_constraints:
        dataset=name_pattern(imported_dataset_names(config, "neuraloperator_darcy")),
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
    log:
        layout.rule_log("import_dataset", "{dataset}"),
    benchmark:
        layout.rule_benchmark("import_dataset", "{dataset}")
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/import_dataset.py"


rule import_pdebench:
    # A PDEBench 2D Darcy .hdf5 file in kryflow's schema (read in place, never copied); one store,
    # no finer-grid test set.
    input:
        tracking=ancient(layout.TRACKING_JSON),
    output:
        main=directory(layout.DATASET),
    wildcard_constraints:
        dataset=name_pattern(imported_dataset_names(config, "pdebench_darcy")),
    params:
        source=lambda w: config["datasets"][w.dataset]["source"],
    log:
        layout.rule_log("import_dataset", "{dataset}"),
    benchmark:
        layout.rule_benchmark("import_dataset", "{dataset}")
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/import_dataset.py"


rule solver_benchmark:
    # Recycled vs cold vs preconditioned vs direct on the dataset's own sequence.
    input:
        tracking=ancient(layout.TRACKING_JSON),
    output:
        layout.SOLVER_BENCHMARK,
    params:
        spec=dataset_spec_of,
        benchmark=config.get("solver_benchmark") or {},
    log:
        layout.rule_log("solver_benchmark", "{dataset}"),
    benchmark:
        layout.rule_benchmark("solver_benchmark", "{dataset}")
    threads: 1
    resources:
        mem_mb=generate_mem_mb,
        runtime=generate_runtime,
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/solver_benchmark.py"
