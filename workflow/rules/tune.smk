# The optimizer comparison protocol (config key `tuning`): quasi-random trials per (dataset,
# model, optimizer), the setting selected on the validation split, and each workload's target
# and budget from the reference optimizer's reruns. The trials are known from the config, so the
# DAG is static; the reference's trials come first, every other optimizer trains under its budget.

WORKLOADS = [(d, m) for d in grid_datasets(config) for m in config["models"]]
TUNED = [(d, m, o) for d, m in WORKLOADS for o in config["optimizers"]]


rule tune_batch:
    # a batch of trials of one (dataset, model, optimizer, study) in one process; every trial
    # writes its own folder results/tuning/.../trial<k>/ (kept when the job is killed, so a
    # rerun starts at the first unfinished trial) and its own nested MLflow run
    input:
        dataset=layout.DATASET,
        tracking=ancient(layout.TRACKING_JSON),
        budget=workload_budget_of,
    output:
        batch=layout.BATCH,
    params:
        spec=cell_spec_of,
        training=training_of,
        tuning=TUNING,
        batch=lambda w: int(w.batch),
        settings=batch_settings,
    log:
        layout.rule_log("tune_batch", "{dataset}/{model}/{optimizer}/batch{batch}"),
    benchmark:
        layout.rule_benchmark("tune_batch", "{dataset}/{model}/{optimizer}/batch{batch}")
    # each trial trained at once: its trainer and, for online cells, its generator processes
    threads: (TUNING["concurrent"] if TUNING else 1) * train_threads()
    resources:
        mem_mb=batch_mem_mb,
        runtime=batch_runtime,
        gpu=use_gpu(),
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/tune_batch.py"


rule select_setting:
    input:
        batches=batches_of,
        tracking=ancient(layout.TRACKING_JSON),
    output:
        layout.SELECTED,
    params:
        studies=TUNING["studies"] if TUNING else 1,
        workload=lambda w: {"dataset": w.dataset, "model": w.model, "optimizer": w.optimizer},
    log:
        layout.rule_log("select_setting", "{dataset}/{model}/{optimizer}"),
    benchmark:
        layout.rule_benchmark("select_setting", "{dataset}/{model}/{optimizer}")
    localrule: True
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/select_setting.py"


rule workload_budget:
    input:
        runs=reference_reruns,
        tracking=ancient(layout.TRACKING_JSON),
    output:
        layout.BUDGET,
    params:
        max_steps=lambda w: cell_training(config, w.dataset)["max_steps"],
        factor=TUNING["budget_factor"] if TUNING else 4 / 3,
        workload=lambda w: {"dataset": w.dataset, "model": w.model},
    log:
        layout.rule_log("workload_budget", "{dataset}/{model}"),
    benchmark:
        layout.rule_benchmark("workload_budget", "{dataset}/{model}")
    localrule: True
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/workload_budget.py"


rule tuning_variant:
    # a workload moved to another dataset of its family, every optimizer with the setting selected
    # on the source workload: tuning.finetune adapts the reference's trained model to it,
    # tuning.heldout trains there from scratch under the source workload's budget
    input:
        unpack(variant_inputs),
        dataset=layout.DATASET,
        tracking=ancient(layout.TRACKING_JSON),
    output:
        metrics=f"{layout.VARIANT_DIR}/metrics.json",
        history=f"{layout.VARIANT_DIR}/history.csv",
    wildcard_constraints:
        kind="finetune|heldout",
        dataset=name_pattern([v["dataset"] for k in VARIANT_KINDS for v in (TUNING or {}).get(k) or []]),
    params:
        spec=cell_spec_of,
        training=training_of,
        entry=lambda w: variant_source(config, w.kind, w.dataset),
    log:
        layout.rule_log("tuning_variant", f"{{kind}}/{layout.CELL}"),
    benchmark:
        layout.rule_benchmark("tuning_variant", f"{{kind}}/{layout.CELL}")
    threads: train_threads()
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=use_gpu(),
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/tuning_variant.py"


rule tuning_report:
    input:
        budgets=expand(layout.BUDGET, zip, dataset=[d for d, _ in WORKLOADS], model=[m for _, m in WORKLOADS]),
        selected=expand(layout.SELECTED, zip, dataset=[d for d, _, _ in TUNED], model=[m for _, m, _ in TUNED],
                        optimizer=[o for _, _, o in TUNED]),
        batches=[layout.BATCH.format(dataset=d, model=m, optimizer=o, batch=b) for d, m, o, b in batch_cells(config)],
        reruns=cell_outputs("metrics.json"),
        finetune=variant_outputs("finetune"),
        heldout=variant_outputs("heldout"),
        tracking=ancient(layout.TRACKING_JSON),
    output:
        layout.TUNING_REPORT,
    params:
        reference=TUNING["reference"] if TUNING else None,
        seeds=config["seeds"],
        trial_root=lambda w, input: layout.tuning_root_of_batch(input.batches[0]),
        runs_root=lambda w, input: layout.runs_root_of(input.reruns[0]),
    log:
        layout.rule_log("tuning_report"),
    benchmark:
        layout.rule_benchmark("tuning_report")
    localrule: True
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/tuning_report.py"
