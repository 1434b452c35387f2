# Evaluation of each cell (logged into the cell's MLflow run) and aggregation across cells.


rule evaluate:
    input:
        run="results/runs/{dataset}/{model}/{optimizer}/{seed}/run.json",
        model="results/runs/{dataset}/{model}/{optimizer}/{seed}/model.pt",
        dataset="data/{dataset}.zarr",
        transfer=transfer_path,
        tracking=ancient("results/tracking.json"),
    output:
        metrics="results/runs/{dataset}/{model}/{optimizer}/{seed}/metrics.json",
        predictions="results/runs/{dataset}/{model}/{optimizer}/{seed}/predictions.npz",
    params:
        evaluation=config.get("evaluation", {}),
    log:
        "logs/evaluate/{dataset}/{model}/{optimizer}/{seed}.log",
    benchmark:
        "results/benchmarks/rules/evaluate/{dataset}/{model}/{optimizer}/{seed}.tsv"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        runtime=30,
        gpu=use_gpu(),
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/evaluate.py"


rule aggregate:
    # One row per cell and seed, and across-seed aggregates, computed here, not by hand.
    input:
        cell_outputs("metrics.json"),
    output:
        summary="results/summary.csv",
        aggregate="results/summary_aggregate.csv",
    log:
        "logs/aggregate.log",
    benchmark:
        "results/benchmarks/rules/aggregate.tsv"
    localrule: True
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/aggregate.py"
