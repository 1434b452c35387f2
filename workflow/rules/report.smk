# Paper figures and tables, regenerated from results; browsable with `snakemake --report`.


rule figures:
    input:
        summary="results/summary.csv",
        histories=cell_outputs("history.csv"),
        predictions=cell_outputs("predictions.npz"),
        solvers=solver_benchmark_outputs(),
        tracking="results/tracking.json",
    output:
        figures=report(
            directory("results/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
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
