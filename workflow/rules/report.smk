# Paper figures and tables, regenerated from results; browsable with `snakemake --report`.


rule figures:
    # every figure is declared (PNG in the report, PDF for the paper), from the figure registry;
    # tables depend on which results exist (e.g. transfer), so they are a folder
    input:
        summary=layout.SUMMARY_CSV,
        histories=cell_outputs("history.csv"),
        predictions=cell_outputs("predictions.npz"),
        solvers=solver_benchmark_outputs(),
        tuning=[layout.TUNING_REPORT] if TUNING else [],
        tracking=ancient(layout.TRACKING_JSON),
    output:
        png=report(
            expand(f"{layout.FIGURES_DIR}/{{stem}}.png", stem=figure_stems_of_config()),
            caption="../report/figures.rst",
            category="Figures",
        ),
        pdf=expand(f"{layout.FIGURES_DIR}/{{stem}}.pdf", stem=figure_stems_of_config()),
        tables=report(
            directory(layout.TABLES_DIR),
            patterns=["{name}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    params:
        runs_root=lambda w, input: layout.runs_root_of(input.histories[0]),
        datasets=grid_datasets(config),
        models=list(config["models"]),
        rollout_datasets=rollout_datasets(config),
    log:
        layout.rule_log("figures"),
    benchmark:
        layout.rule_benchmark("figures")
    localrule: True
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/figures.py"
