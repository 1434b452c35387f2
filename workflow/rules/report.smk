# Paper figures and tables, regenerated from results; browsable with `snakemake --report`.


rule figures:
    # every figure is declared (PNG in the report, PDF for the paper); tables depend on which
    # results exist (e.g. transfer), so they are a folder
    input:
        summary="results/summary.csv",
        histories=cell_outputs("history.csv"),
        predictions=cell_outputs("predictions.npz"),
        solvers=solver_benchmark_outputs(),
        tracking=ancient("results/tracking.json"),
    output:
        png=report(
            expand("results/figures/{stem}.png", stem=figure_stems_of_config()),
            caption="../report/figures.rst",
            category="Figures",
        ),
        pdf=expand("results/figures/{stem}.pdf", stem=figure_stems_of_config()),
        tables=report(
            directory("results/tables"),
            patterns=["{name}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        "logs/figures.log",
    benchmark:
        "results/benchmarks/rules/figures.tsv"
    localrule: True
    conda:
        "../../envs/kryflow.yaml"
    script:
        "../../scripts/figures.py"
