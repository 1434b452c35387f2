# Paper figures and tables, regenerated from results; browsable with `snakemake --report`.


rule figures:
    input:
        summary=RESULTS + "/summary.csv",
        histories=cell_outputs("history.csv"),
        predictions=cell_outputs("predictions.npz"),
        solvers=solver_benchmark_outputs(),
        tracking=TRACKING,
    output:
        figures=report(
            directory(RESULTS + "/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
        tables=report(
            directory(RESULTS + "/tables"),
            patterns=["{name}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        "logs/figures.log",
    benchmark:
        RESULTS + "/benchmarks/rules/figures.tsv"
    localrule: True
    script:
        "../../scripts/figures.py"
