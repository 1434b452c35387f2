# Training: one job per grid cell (dataset x model x optimizer x seed).
# checkpoint.pt is deliberately not an output: Snakemake removes the outputs of a failed job,
# and the checkpoint must survive a kill so that the rerun resumes from it.


rule train:
    input:
        dataset=layout.DATASET,
        tracking=ancient(layout.TRACKING_JSON),
        selected=selected_setting,
        budget=workload_budget_of,
    output:
        run=f"{RUN}/run.json",
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
        train=f"{RUN}/train.json",
    params:
        spec=cell_spec_of,
        training=training_of,
        system_metrics=bool((config.get("tracking") or {}).get("system_metrics")),
    log:
        layout.rule_log("train", layout.CELL),
    benchmark:
        layout.rule_benchmark("train", layout.CELL)
    # the trainer and, for online cells, their generator processes
    threads: train_threads()
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=use_gpu(),
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/train.py"
