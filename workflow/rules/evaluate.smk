# Evaluation of each cell (logged into the cell's MLflow run) and aggregation across cells.


rule evaluate:
    # every file evaluate_cell reads is an input here
    input:
        run=f"{RUN}/run.json",
        model=f"{RUN}/model.pt",
        train=f"{RUN}/train.json",
        history=f"{RUN}/history.csv",
        dataset=layout.DATASET,
        transfer=transfer_path,
        tracking=ancient(layout.TRACKING_JSON),
    output:
        metrics=f"{RUN}/metrics.json",
        predictions=f"{RUN}/predictions.npz",
    params:
        evaluation=config.get("evaluation", {}),
        device=config["training"].get("device", "auto"),
    log:
        layout.rule_log("evaluate", layout.CELL),
    benchmark:
        layout.rule_benchmark("evaluate", layout.CELL)
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
        summary=layout.SUMMARY_CSV,
        aggregate=layout.SUMMARY_AGGREGATE_CSV,
    log:
        layout.rule_log("aggregate"),
    benchmark:
        layout.rule_benchmark("aggregate")
    localrule: True
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/aggregate.py"
