# Training: one job per grid cell (dataset x model x optimizer x seed).
# checkpoint.pt is deliberately not an output: Snakemake removes the outputs of a failed job,
# and the checkpoint must survive a kill so that the rerun resumes from it.


rule train:
    input:
        dataset="data/{dataset}.zarr",
        tracking=ancient("results/tracking.json"),
    output:
        run="results/runs/{dataset}/{model}/{optimizer}/{seed}/run.json",
        model="results/runs/{dataset}/{model}/{optimizer}/{seed}/model.pt",
        history="results/runs/{dataset}/{model}/{optimizer}/{seed}/history.csv",
    params:
        model=lambda w: config["models"][w.model],
        optimizer=lambda w: config["optimizers"][w.optimizer],
        training=config["training"],
    log:
        "logs/train/{dataset}/{model}/{optimizer}/{seed}.log",
    benchmark:
        "results/benchmarks/rules/train/{dataset}/{model}/{optimizer}/{seed}.tsv"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=use_gpu(),
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/train.py"
