# Training: one job per grid cell (dataset x model x optimizer x seed).
# checkpoint.pt is deliberately not an output: Snakemake removes the outputs of a failed job,
# and the checkpoint must survive a kill so that the rerun resumes from it.


rule train:
    input:
        dataset=DATA + "/{dataset}.zarr",
        tracking=TRACKING,
    output:
        run=RUN_DIR + "/run.json",
        model=RUN_DIR + "/model.pt",
        history=RUN_DIR + "/history.csv",
    params:
        model=lambda w: config["models"][w.model],
        optimizer=lambda w: config["optimizers"][w.optimizer],
        training=config["training"],
    log:
        "logs/train/{dataset}/{model}/{optimizer}/{seed}.log",
    benchmark:
        RESULTS + "/benchmarks/rules/train/{dataset}/{model}/{optimizer}/{seed}.tsv"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=use_gpu(),
    script:
        "../../scripts/train.py"
