# Config validation (before any job starts), wildcard constraints, the grid, and the
# functions that turn config into paths, params and resources. Rules look values up here;
# every path comes from kryflow.layout, every stage's params from kryflow.config.

import functools
import json
import os
import re
import uuid
from pathlib import Path

from kryflow import layout
from kryflow.config import (
    VARIANT_KINDS,
    cell_spec,
    cell_training,
    check_config,
    dataset_shards,
    dataset_spec,
    generated_dataset_names,
    grid_datasets,
    imported_dataset_names,
    online_generators,
    parent_runs,
    read_yaml,
    rollout_datasets,
    batch_cells,
    batch_trials,
    training_cells,
    transfer_dataset,
    variant_cells,
    variant_source,
)

# Schema + registry checks: an invalid config stops here with one message naming the key.
# Config files are re-read strictly first: Snakemake's YAML reading keeps the last of two
# equal keys without a word, which would silently drop a dataset or an optimizer.
for _configfile in workflow.configfiles:
    read_yaml(_configfile)
check_config(config)

# One id per workflow invocation, tagged on every MLflow run of it.
os.environ.setdefault("KRYFLOW_INVOCATION_ID", uuid.uuid4().hex[:12])


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    optimizer=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    seed=r"\d+",
    batch=r"\d+",


RUN = layout.RUN_DIR  # results/runs/{dataset}/{model}/{optimizer}/{seed}


def tracking_uri():
    """The tracking URI the jobs will use (a change reruns init_tracking)."""
    from kryflow.tracking import resolve_tracking_uri

    return resolve_tracking_uri(config.get("tracking"))


def name_pattern(names):
    """A wildcard constraint matching exactly these dataset names (none: matches nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def transfer_path(wildcards):
    """The finer-grid test set for a cell's dataset, or nothing when none is configured."""
    name = transfer_dataset(config, wildcards.dataset)
    return str(layout.dataset_path(name)) if name else []


def dataset_spec_of(wildcards):
    return dataset_spec(config, wildcards.dataset)


def surrogate_model_of(wildcards):
    """The model file of a surrogate start (solver.initial_guess: surrogate): a training cell's
    model.pt, so the dataset is generated after that training, or a given file; nothing for an
    MLflow model URI or another start."""
    solver = dataset_spec_of(wildcards).get("solver") or {}
    ref = solver.get("surrogate") if solver.get("initial_guess") == "surrogate" else None
    if not ref or ref.startswith(("runs:/", "models:/")):
        return []
    return str(Path(ref) / "model.pt") if Path(ref).is_dir() else str(ref)


def sharded_names():
    """Generated datasets made by several shard jobs and a merge."""
    return [d for d in generated_dataset_names(config) if dataset_shards(dataset_spec(config, d)) > 1]


def single_job_names():
    """Generated datasets made by one job."""
    return [d for d in generated_dataset_names(config) if d not in sharded_names()]


def dataset_parts(wildcards):
    """The part stores of a sharded dataset, one per shard job."""
    shards = dataset_shards(dataset_spec(config, wildcards.dataset))
    return [str(layout.dataset_part_path(wildcards.dataset, k)) for k in range(shards)]


TUNING = config.get("tuning")


def selected_setting(wildcards):
    """Under the tuning protocol a cell reruns its optimizer's selected setting."""
    return layout.SELECTED.format(**wildcards) if TUNING else []


def workload_budget_of(wildcards):
    """The workload budget every optimizer but the reference trains under (reference: none)."""
    if not TUNING or wildcards.optimizer == TUNING["reference"]:
        return []
    return layout.BUDGET.format(dataset=wildcards.dataset, model=wildcards.model)


def batches_of(wildcards):
    """Every batch file of one (dataset, model, optimizer): its trials' records, in trial order."""
    return [layout.BATCH.format(batch=b, **wildcards) for d, m, o, b in batch_cells(config)
            if (d, m, o) == (wildcards.dataset, wildcards.model, wildcards.optimizer)]


def reference_reruns(wildcards):
    """The reference optimizer's reruns on a workload, one folder per seed (their train.json)."""
    return [str(layout.run_file((wildcards.dataset, wildcards.model, TUNING["reference"], s), "train.json"))
            for s in config["seeds"]]


def variant_inputs(wildcards):
    """What a fine-tuning or held-out run needs from its source workload: the optimizer's setting
    selected there and the workload's budget; fine-tuning also the reference's trained model."""
    src = variant_source(config, wildcards.kind, wildcards.dataset)["source"]
    out = {
        "selected": layout.SELECTED.format(dataset=src, model=wildcards.model, optimizer=wildcards.optimizer),
        "budget": layout.BUDGET.format(dataset=src, model=wildcards.model),
    }
    if wildcards.kind == "finetune":
        out["pretrained"] = str(layout.run_file((src, wildcards.model, TUNING["reference"], wildcards.seed), "model.pt"))
    return out


def variant_outputs(kind):
    return [f"{layout.VARIANT_DIR}/metrics.json".format(kind=kind, dataset=d, model=m, optimizer=o, seed=s)
            for d, m, o, s in variant_cells(config, kind)]


def cell_spec_of(wildcards):
    return cell_spec(config, wildcards.model, wildcards.optimizer)


def _unknowns(spec):
    p = spec.get("params") or {}
    n, dim = int(p.get("n", 32)), int(p.get("dim", 2))
    return n**dim


def generate_mem_mb(wildcards, attempt):
    """Memory for a generation job: solver working set, a few chunks, AMG hierarchy."""
    spec = dataset_spec_of(wildcards)
    per_unknown = 8 * 200  # bytes: matrix, recycle space, hierarchy, buffers
    return int(1024 + _unknowns(spec) * per_unknown / 2**20 * attempt)


def generate_runtime(wildcards, attempt):
    spec = dataset_spec_of(wildcards)
    seconds = 60 + spec["num_samples"] * _unknowns(spec) * 2e-4
    return int(max(10, seconds / 60) * attempt)


def _trained_datasets():
    return [d for d in config["datasets"] if "source" not in config["datasets"][d]]


def train_mem_mb(wildcards, attempt):
    """Memory of a training job: the largest any dataset of the config needs, so that every job of
    the rule asks the same (the SLURM profile submits them as one array, which asks once); an
    online cell's generator processes (a solver's working set each) and its buffer count too."""
    need = [_unknowns(config["datasets"][d]) * cell_training(config, d)["batch_size"] for d in _trained_datasets()]
    online = [online_generators(config, d) * (512 + _unknowns(config["datasets"][d]) * 8 * 200 / 2**20)
              + (cell_training(config, d).get("online") or {}).get("buffer", 256) * _unknowns(config["datasets"][d])
              * 4 * 8 / 2**20 for d in _trained_datasets() if online_generators(config, d)]
    return int((2048 + max(need, default=0) * 4 * 200 / 2**20 + max(online, default=0)) * attempt)


def train_threads():
    """Threads of a training job: the trainer, and one per generator process of an online cell
    (``training.online.generators``); the most any dataset's cells start, so that every job of the
    rule asks the same (as train_mem_mb). The trainer's torch threads are the rest."""
    return 1 + max((online_generators(config, d) for d in _trained_datasets()), default=0)


@functools.lru_cache(maxsize=None)
def _trial_plan(dataset, model, optimizer):
    from kryflow.tuning import trial_plan

    return trial_plan(config, dataset, model, optimizer)


def batch_settings(wildcards):
    """The points of the search space a batch trains, one per trial (known before any job runs)."""
    plan = _trial_plan(wildcards.dataset, wildcards.model, wildcards.optimizer)
    return [plan.settings[t] for t in batch_trials(TUNING, int(wildcards.batch))]


def batch_mem_mb(wildcards, attempt):
    """Memory of a batch job: one training's per trial trained at once."""
    return train_mem_mb(wildcards, attempt) * (TUNING["concurrent"] if TUNING else 1)


def batch_runtime(wildcards, attempt):
    """Minutes: every trial of a full batch, ``concurrent`` at a time (the same for every batch job)."""
    size = min(TUNING["batch"], TUNING["trials"] // TUNING["studies"])
    rounds = -(-size // TUNING["concurrent"])
    return train_runtime(wildcards, attempt) * rounds


def training_of(wildcards):
    return cell_training(config, wildcards.dataset)


def _runtime_of(dataset):
    tcfg = cell_training(config, dataset)
    if tcfg.get("max_seconds"):
        return tcfg["max_seconds"] / 60 + 15
    return 30 + tcfg["max_steps"] * 0.05


def train_runtime(wildcards, attempt):
    """Minutes: the wall-clock budget if one is set, else a bound from the step budget; the
    longest of the config's datasets (every job of the rule asks the same, as train_mem_mb)."""
    return int(max((_runtime_of(d) for d in config["datasets"]), default=30) * attempt)


def use_gpu():
    return int(config["training"].get("device", "auto") in ("cuda",))


def cell_outputs(filename):
    return [str(layout.run_file(cell, filename)) for cell in training_cells(config)]


def solver_benchmark_outputs():
    if not config.get("solver_benchmark", {}).get("enabled", True):
        return []
    return [str(layout.solver_benchmark_path(d)) for d in generated_dataset_names(config, with_transfer=False)]


def figure_stems_of_config():
    """The figure files the figures rule writes for this config."""
    from kryflow.figures import figure_stems

    return figure_stems(grid_datasets(config), config["models"], solver_benchmark_outputs(),
                        [layout.TUNING_REPORT] if TUNING else [], rollout_datasets(config))


def final_outputs():
    tuning = [layout.TUNING_REPORT] if TUNING else []
    return tuning + [
        layout.SUMMARY_CSV,
        layout.SUMMARY_AGGREGATE_CSV,
        *[f"{layout.FIGURES_DIR}/{stem}.{ext}" for stem in figure_stems_of_config() for ext in ("png", "pdf")],
        layout.TABLES_DIR,
        *solver_benchmark_outputs(),
    ]


def print_locations():
    """Where everything is, and the one command that opens the MLflow UI on it."""
    here = Path.cwd()
    lines = ["", "kryflow outputs:"]
    lines.append(f"  datasets      {here / layout.DATA_DIR}/*.zarr")
    lines.append(f"  summary table {here / layout.SUMMARY_CSV}")
    lines.append(f"  figures       {here / layout.FIGURES_DIR}")
    lines.append(f"  tables        {here / layout.TABLES_DIR}")
    if Path(layout.TRACKING_JSON).exists():
        info = json.loads(Path(layout.TRACKING_JSON).read_text())
        lines.append(f"  MLflow store  {info['uri']} (experiment '{info['experiment']}')")
        lines.append(f"  open the UI:  {info['ui']}")
        if "ui_page" in info:
            lines.append(f"  then browse:  {info['ui_page']}")
    print("\n".join(lines))
