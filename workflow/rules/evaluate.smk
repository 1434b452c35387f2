# Evaluation of each cell (logged into the cell's MLflow run) and aggregation across cells.


rule evaluate:
    input:
        run=RUN_DIR + "/run.json",
        model=RUN_DIR + "/model.pt",
        dataset=DATA + "/{dataset}.zarr",
        transfer=transfer_path,
        tracking=TRACKING,
    output:
        metrics=RUN_DIR + "/metrics.json",
        predictions=RUN_DIR + "/predictions.npz",
    params:
        evaluation=config.get("evaluation", {}),
    log:
        "logs/evaluate/{dataset}/{model}/{optimizer}/{seed}.log",
    benchmark:
        RESULTS + "/benchmarks/rules/evaluate/{dataset}/{model}/{optimizer}/{seed}.tsv"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        runtime=30,
        gpu=use_gpu(),
    script:
        "../../scripts/evaluate.py"


rule aggregate:
    # One row per cell and seed, and across-seed aggregates, computed here, not by hand.
    input:
        cell_outputs("metrics.json"),
    output:
        summary=RESULTS + "/summary.csv",
        aggregate=RESULTS + "/summary_aggregate.csv",
    log:
        "logs/aggregate.log",
    benchmark:
        RESULTS + "/benchmarks/rules/aggregate.tsv"
    localrule: True
    script:
        "../../scripts/aggregate.py"
