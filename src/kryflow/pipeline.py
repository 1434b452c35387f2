"""Workflow stages as plain functions: what each Snakemake rule (and the matching ``kryflow``
subcommand) runs. Rules stay thin: ``scripts/*.py`` hand a stage the rule's declared ``params``
and ``input``; nothing scientific lives here either, only wiring between the library packages,
the files the workflow exchanges and MLflow.

Every stage that owns an MLflow run opens it through :func:`stage`, the one place the run's
life cycle is written: an exception anywhere in the stage leaves the run FAILED with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("kryflow")

__all__ = [
    "setup_logging",
    "cell_job",
    "stage",
    "init_tracking",
    "run_generate",
    "run_merge",
    "run_import",
    "run_solver_benchmark",
    "run_train",
    "run_trial",
    "run_trial_batch",
    "run_select",
    "run_budget",
    "run_variant",
    "run_tuning_report",
    "run_evaluate",
    "run_aggregate",
    "run_figures",
]

Pathish = str | os.PathLike


@contextlib.contextmanager
def setup_logging(log_path: Pathish | None):
    """Send logging, warnings and stderr (progress bars) of one job to its log file."""
    if log_path is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    os.environ["KRYFLOW_JOB_LOG"] = str(Path(log_path).resolve())  # Tracker uploads it at the end
    with open(log_path, "a", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        old_err = sys.stderr
        sys.stderr = fh
        try:
            yield
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            sys.stderr = old_err
            root.removeHandler(handler)


@contextlib.contextmanager
def cell_job(smk: Any) -> Iterator[dict]:
    """A rule script's job on one cell: its log (:func:`setup_logging`), its torch threads, and
    the cell named by its wildcards (``dataset``, ``model``, ``optimizer``, and ``seed`` where
    the rule has one)."""
    import torch

    with setup_logging(smk.log[0]):
        torch.set_num_threads(max(1, int(smk.threads)))
        w = smk.wildcards
        cell = {"dataset": w.dataset, "model": w.model, "optimizer": w.optimizer}
        if "seed" in w.keys():
            cell["seed"] = int(w.seed)
        yield cell


def _tracking(tracking_json: Pathish) -> dict:
    return json.loads(Path(tracking_json).read_text())


@contextlib.contextmanager
def stage(tracking_json: Pathish, key: str, run_name: str, tags: Mapping[str, Any], *,
          run_id: str | None = None, parent_key: str | None = None) -> Iterator:
    """The stage kernel: a stage's MLflow run for the duration of the block.

    **Arguments:**
        tracking_json: ``results/tracking.json`` (store URI and experiment).
        key, run_name, tags: the run's identity (see :class:`kryflow.tracking.Tracker`).
        run_id: log into this existing run instead (evaluation logs into its training run);
            a normal exit then leaves the run's status as the stage that created it set it.
        parent_key: the run nests under this one in the UI (a study, an optimizer's tuning).

    **Yields:** the :class:`~kryflow.tracking.Tracker`. An exception in the block marks the run
    FAILED with ``"<type>: <message>"`` and propagates; a block that did not close its run
    closes it ``finished``.
    """
    from kryflow.tracking import Tracker

    tr = _tracking(tracking_json)
    if run_id is not None:
        tracker = Tracker.reopen(tr["uri"], run_id)
    else:
        tracker = Tracker(tr["uri"], tr["experiment"], key=key, run_name=run_name, tags=tags, parent_key=parent_key)
    try:
        yield tracker
    except BaseException as exc:
        tracker.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    tracker.flush()
    if run_id is None and not getattr(tracker, "finished", False):
        tracker.finish("finished")


def init_tracking(experiment: str, tracking_cfg: Mapping | None, out_json: Pathish, workdir: Pathish = ".",
                  parents: Sequence[tuple[str, str, str | None]] = ()) -> dict:
    """Create the experiment once, before jobs fan out (sqlite creation races otherwise), and the
    runs that group others in the UI (``parents``: :func:`kryflow.config.parent_runs`)."""
    from kryflow.tracking import (
        artifact_root_uri, check_tracking_reachable, ensure_experiment, ensure_parent_runs, resolve_tracking_uri,
        ui_command, ui_url,
    )

    tcfg = tracking_cfg or {}
    uri = resolve_tracking_uri(tcfg, workdir)
    check_tracking_reachable(uri)
    exp_id = ensure_experiment(uri, experiment, artifact_root_uri(tcfg, workdir))
    if parents:
        ensure_parent_runs(uri, experiment, [tuple(p) for p in parents])
    info = {"uri": uri, "experiment": experiment, "experiment_id": exp_id, "ui": ui_command(uri),
            "ui_page": ui_url(exp_id)}
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).touch(mode=0o600)  # the URI may carry credentials the jobs need
    Path(out_json).write_text(json.dumps(info, indent=2))
    return info


# per-solve series of a generation run: (metric, SolveInfo field, store variable); a learner's regret
# estimate appears where it is recorded (NaN elsewhere). A recorded solver parameter (SSOR's omega,
# the strategy of method choose) is the series solve_<its parameter_name>, variable solver_<name>.
_SOLVE_SERIES = (("solve_iterations", "iterations", "solver_iterations"),
                 ("solve_rel_residual", "rel_residual", "solver_rel_residual"),
                 ("solve_seconds", "seconds", "solver_seconds"), ("solve_matvecs", "matvecs", "solver_matvecs"),
                 ("solve_regret_estimate", "regret_estimate", "solver_regret_estimate"))


def _log_series(tracker, metric: str, values: list, offset: int = 0) -> None:
    values = [float(v) for v in values]
    if any(math.isfinite(v) for v in values):  # a statistic the solver records (NaN before it has one)
        tracker.log_metric_series(metric, values, offset)


def _solve_logger(tracker):
    """``on_sample`` callback: every solve's statistics as stepped metrics of the generation run."""
    offset = [0]

    def on_sample(index: int, records: list) -> None:
        for metric, attr, _ in _SOLVE_SERIES:
            _log_series(tracker, metric, [getattr(r, attr, math.nan) for r in records], offset[0])
        for name in sorted({r.parameter_name for r in records} - {""}):
            _log_series(tracker, f"solve_{name}", [r.parameter if r.parameter_name == name else math.nan
                                                   for r in records], offset[0])
        offset[0] += len(records)

    return on_sample


def _generation_params(name: str, spec: Mapping) -> dict:
    return {"dataset": name, "family": spec["family"], "num_samples": spec["num_samples"],
            "seed": spec.get("seed", 0), "params": spec.get("params") or {}, "solver": spec.get("solver") or {}}


def run_generate(name: str, spec: Mapping, experiment: str, out_path: Pathish, tracking_json: Pathish,
                 shard: int | None = None) -> dict:
    """Generate one dataset from its spec (:func:`kryflow.config.dataset_spec`), or with ``shard``
    the part of a sharded one; a dataset-generation MLflow run records it."""
    from kryflow.config import dataset_shards
    from kryflow.generation import generate_dataset
    from kryflow.tracking import git_commit

    shards = dataset_shards(spec) if shard is not None else 1
    key = f"generate/{name}" + (f"/shard{shard}" if shard is not None else "")
    tags = {"dataset": name, "rule": "generate_dataset" if shard is None else "generate_shard",
            "pde_family": spec["family"], **({"shard": shard} if shard is not None else {})}
    with stage(tracking_json, key, key.replace("/", "-"), tags) as tracker:
        tracker.log_params({**_generation_params(name, spec), "shards": shards})
        provenance = {"dataset": name, "generating_config": json.dumps(spec, sort_keys=True, default=str),
                      "workflow_experiment": experiment, "git_commit": git_commit()}
        totals = generate_dataset(
            out_path, family=spec["family"], params=spec.get("params"), num_samples=spec["num_samples"],
            seed=int(spec.get("seed", 0)), chunk_samples=int(spec.get("chunk_samples", 16)),
            splits=spec.get("splits", (0.75, 0.125, 0.125)), split_block=int(spec.get("split_block", 1)),
            solver=spec.get("solver"), provenance=provenance, on_sample=_solve_logger(tracker),
            shards=shards, shard=shard or 0,
        )
        tracker.log_metrics({f"total_{k}": v for k, v in totals.items() if k != "digest"})
        if shard is None:
            tracker.log_dataset(name, out_path, totals["digest"], context="generation")
        tracker.finish("finished" if not totals["flagged"] else "finished_with_flagged_solves")
    log.info("generated %s: %s", out_path, totals)
    return totals


def run_merge(name: str, spec: Mapping, parts: Sequence[Pathish], out_path: Pathish, tracking_json: Pathish) -> dict:
    """Join the shards of a dataset into its one store; the dataset's generation run records it
    with every solve's statistics, in sample order."""
    import zarr

    from kryflow.data import merge_dataset
    from kryflow.generation import CHOICE_STATS, LEARNER_STATS

    tags = {"dataset": name, "rule": "merge_dataset", "pde_family": spec["family"]}
    with stage(tracking_json, f"generate/{name}", f"generate-{name}", tags) as tracker:
        tracker.log_params({**_generation_params(name, spec), "shards": len(parts)})
        totals = merge_dataset(parts, out_path)
        group = zarr.open_group(out_path, mode="r", zarr_format=3)
        parameters = [var for var, (attr, *_) in {**LEARNER_STATS, **CHOICE_STATS}.items() if attr == "parameter"]
        series = [(m, var) for m, _, var in _SOLVE_SERIES] + [(var.replace("solver_", "solve_", 1), var)
                                                            for var in parameters]
        for metric, var in series:
            if var in group:
                _log_series(tracker, metric, list(group[var][...].ravel()))
        tracker.log_metrics({f"total_{k}": v for k, v in totals.items() if isinstance(v, (int, float))})
        tracker.log_dataset(name, out_path, totals["digest"], context="generation")
        tracker.finish("finished" if not totals["flagged"] else "finished_with_flagged_solves")
    return totals


def run_import(name: str, source: Mapping, out_path: Pathish, tracking_json: Pathish,
               transfer_out: Pathish | None = None) -> Path:
    """Import an external dataset (neuraloperator's Darcy sets, a PDEBench 2D Darcy file) into
    kryflow's schema."""
    from kryflow.data import dataset_digest, import_neuraloperator_darcy, import_pdebench_darcy

    tags = {"dataset": name, "rule": "import_dataset", "source": source["kind"]}
    with stage(tracking_json, f"generate/{name}", f"import-{name}", tags) as tracker:
        tracker.log_params({"source": dict(source)})
        out_path = Path(out_path)
        if source["kind"] == "pdebench_darcy":
            options = {k: source[k] for k in ("num_samples", "stride", "val_fraction", "test_fraction", "seed")
                       if k in source}
            path = Path(import_pdebench_darcy(source["file"], out_path, overwrite=True, **options))
        else:
            path = Path(import_neuraloperator_darcy(source["train"], source["test"], out_path,
                                                    test_hi_pt=source.get("test_hi"), overwrite=True))
        tracker.log_dataset(name, path, dataset_digest(path), context="generation")
        if source.get("test_hi"):
            # the importer names the fine-grid store by its grid size; the workflow by role
            written = sorted(p for p in out_path.parent.glob(f"{out_path.stem}_*.zarr") if p.is_dir())
            if transfer_out is not None and written:
                os.replace(written[-1], transfer_out)
                tracker.log_dataset(Path(transfer_out).stem, transfer_out, dataset_digest(transfer_out),
                                    context="generation")
    return path


def run_solver_benchmark(name: str, spec: Mapping, benchmark: Mapping, out_json: Pathish,
                         tracking_json: Pathish) -> list[dict]:
    """Compare solver strategies on the dataset's own sequence; table to JSON and MLflow."""
    from kryflow.pdes import build_family
    from kryflow.solvers import benchmark_sequence

    tags = {"dataset": name, "rule": "solver_benchmark", "pde_family": spec["family"]}
    with stage(tracking_json, f"solver_benchmark/{name}", f"solver-benchmark-{name}", tags) as tracker:
        fam = build_family(spec["family"], **(spec.get("params") or {}))
        num = int(benchmark.get("num_samples", 12))
        records = benchmark_sequence(fam, num, int(spec.get("seed", 0)), repeats=int(benchmark.get("repeats", 3)))
        for r in records:
            r.setdefault("sequence", name)
            r["dataset"] = name
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(records, indent=2, default=float))
        tracker.log_params({"num_samples": num, "family": spec["family"], "params": spec.get("params") or {}})
        for r in records:
            # one name per strategy (cold and warm CG share method and preconditioner); MLflow
            # metric names allow letters, digits and _ - . / : and spaces
            label = re.sub(r"[^\w\-./: ]", "_", r["strategy"])
            tracker.log_metrics({f"{label}.seconds": r["seconds"], f"{label}.matvecs": r["matvecs"],
                                 f"{label}.iterations": r["iterations"],
                                 f"{label}.max_true_relres": r["max_true_relres"]})
            tracker.log_metric_series(f"{label}.per_solve_iterations",
                                      [s["iterations"] for s in r.get("per_solve", [])])
        tracker.log_artifact(out_json, "solver_benchmark")
    return records


def _cell_tags(cell: Mapping) -> dict:
    return {"dataset": cell["dataset"], "model": cell["model"], "optimizer": cell["optimizer"],
            "seed": cell["seed"]}


def _json(path: Pathish | None) -> dict | None:
    return json.loads(Path(path).read_text()) if path else None


@contextlib.contextmanager
def _train_source(training: Mapping, dataset_path: Pathish, seed: int) -> Iterator:
    """A cell's training data: None (the stored train split) or, with ``training.data: online``,
    the stream of fresh samples (:class:`kryflow.generation.OnlineStream`), its generator processes
    stopped at the end. The job's threads count the generators: the trainer keeps the rest."""
    if training.get("data", "stored") != "online":
        yield None
        return
    import torch

    from kryflow.generation import OnlineStream

    stream = OnlineStream(dataset_path, training, seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - stream.options["generators"]))
    try:
        with stream:
            yield stream
    finally:
        torch.set_num_threads(threads)


def _log_online(tracker, stream, out: Path) -> None:
    """What an online cell's stream did, aggregated here (the generators never log): ``online.json``
    beside the run, MLflow metrics ``online_*`` (samples generated, accepted, rejected, consumed,
    unique samples seen, reuse, generator throughput, back-pressure, trainer wait), the use-count
    histogram (``online_uses_<k>``), the series ``online_buffer_fill`` and ``online_wait_seconds``
    per step, and after a resume the tag ``online_resume`` saying what it changed."""
    if stream is None:
        return
    record = stream.summary()
    (out / "online.json").write_text(json.dumps(record, indent=2, default=float))
    tracker.log_metrics({f"online_{k}": v for k, v in record.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)})
    tracker.log_metrics({f"online_uses_{k}": n for k, n in record["use_count_histogram"].items()})
    tracker.log_metric_series("online_buffer_fill", record["fill"], start_step=1)
    tracker.log_metric_series("online_wait_seconds", record["wait"], start_step=1)
    tags = {"training_data": "online", "online_mode": record["mode"], "online_policy": record["policy"]}
    if record["resumed"]:
        log.warning("online stream %s", record["resumed"])
        tags["online_resume"] = record["resumed"][:4000]
    tracker.set_tags(tags)
    tracker.log_artifact(out / "online.json")


def run_train(cell: Mapping, spec: Mapping, training: Mapping, dataset_path: Pathish, out_dir: Pathish,
              tracking_json: Pathish, *, system_metrics: bool = False, progress: bool = True,
              selected_json: Pathish | None = None, budget_json: Pathish | None = None) -> dict:
    """Train one grid cell; writes run.json with the MLflow run id and the status.

    ``spec`` is :func:`kryflow.config.cell_spec`: ``{"model": {"name", ...}, "optimizer": {"name", ...}}``.
    Under the tuning protocol the cell reruns the setting in ``selected_json`` under the workload
    budget in ``budget_json`` (none for the reference optimizer), nested under its tuning run.
    """
    import torch

    from kryflow.data import dataset_digest, make_loader
    from kryflow.optim import OPTIMIZERS
    from kryflow.tracking import redact
    from kryflow.training import load_surrogate, train_cell
    from kryflow.tuning import budget_kind, tuned_cell

    d, m, o, s = cell["dataset"], cell["model"], cell["optimizer"], int(cell["seed"])
    parent = None
    if selected_json is not None:
        spec, training = tuned_cell(spec, training, _json(selected_json), _json(budget_json))
        parent = f"tune/{d}/{m}/{o}"
    model_cfg, opt_cfg = dict(spec["model"]), dict(spec["optimizer"])
    model_name, opt_name = model_cfg.pop("name"), opt_cfg.pop("name")
    tags = {**_cell_tags(cell), "rule": "train", "model_name": model_name, "optimizer_name": opt_name,
            "optimizer_family": OPTIMIZERS[opt_name].family}
    if selected_json is not None:
        tags["budget_kind"] = budget_kind(_json(budget_json), OPTIMIZERS[opt_name].family == "zeroth_order")
    # the store is reached here, before any training: an unreachable one fails at once
    with stage(tracking_json, f"train/{d}/{m}/{o}/{s}", f"{d}-{m}-{o}-s{s}", tags, parent_key=parent) as tracker:
        tracker.log_params({"dataset": d, "model": dict(spec["model"]), "optimizer": dict(spec["optimizer"]),
                            "seed": s, "training": dict(training)})
        tracker.log_dataset(d, dataset_path, dataset_digest(dataset_path), context="training")
        out = Path(out_dir)
        with tracker.system_metrics(system_metrics), _train_source(training, dataset_path, s) as source:
            result = train_cell(dataset_path, out, model_name=model_name, model_kwargs=model_cfg,
                                optimizer_name=opt_name, optimizer_kwargs=opt_cfg, seed=s,
                                train_cfg=training, tracker=tracker, progress=progress, train_source=source)
            _log_online(tracker, source, out)
        tracker.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))})
        tracker.log_artifact(out / "checkpoint.pt", "checkpoint")
        tracker.log_artifact(out / "history.csv")
        cfg_path = out / "effective_config.json"
        cfg_path.write_text(json.dumps({"cell": dict(cell), "model": dict(spec["model"]),
                                        "optimizer": dict(spec["optimizer"]), "training": dict(training)},
                                       indent=2, default=str))
        tracker.log_artifact(cfg_path)
        if result["status"] == "finished":  # an input example as the model takes it (the task's channels)
            x, _ = next(iter(make_loader(dataset_path, "test", batch_size=1, shuffle=False,
                                         task=training.get("task"))))
            tracker.log_model(load_surrogate(out / "model.pt").eval(), input_example=x.numpy())
        tracker.finish(result["status"], result.get("reason"))
    info = {"run_id": tracker.run_id, "tracking_uri": redact(_tracking(tracking_json)["uri"]), **dict(cell),
            **result, "torch": torch.__version__}
    (out / "run.json").write_text(json.dumps(info, indent=2, default=float))
    return info


def _trial_plan_entry(cell: Mapping, trial: int, spec: Mapping, training: Mapping, tuning: Mapping,
                      budget: Mapping | None, setting: Mapping | None = None) -> dict:
    """What one trial trains with: its point of the search space (drawn here unless the workflow
    hands it over: the DAG knows every trial), its study, the optimizer's hyperparameters and the
    training section under the workload budget."""
    from kryflow.config import ConfigError
    from kryflow.optim import OPTIMIZERS, apply_setting
    from kryflow.tuning import budgeted_training

    d, m, o = cell["dataset"], cell["model"], cell["optimizer"]
    trials, studies = int(tuning["trials"]), int(tuning.get("studies", 1))
    if not 0 <= trial < trials:
        raise ConfigError(f"trial {trial} of {o} on {d}/{m} is not planned (tuning.trials is {trials})", "tuning.trials")
    if setting is None:
        from kryflow.tuning._plan import _plan_of

        setting = _plan_of(tuning, spec["optimizer"]["name"], o, d, m).settings[trial]
    opt_spec = OPTIMIZERS[spec["optimizer"]["name"]]
    hp, train = apply_setting(opt_spec, spec["optimizer"], setting, training)
    zeroth = opt_spec.family == "zeroth_order"
    return {"setting": dict(setting), "study": trial // (trials // studies), "spec": opt_spec, "hp": hp,
            "train": budgeted_training(train, budget, zeroth), "zeroth": zeroth, "seed": int(tuning.get("seed", 0))}


def _trial_fingerprint(entry: Mapping, model: Mapping, dataset_path: Pathish, budget: Mapping | None) -> str:
    """Everything that shapes a trial's outcome; a finished trial with the same fingerprint is kept
    when its batch job runs again (after a kill), one with another is trained again."""
    import hashlib

    from kryflow.data import dataset_digest

    ident = {"setting": entry["setting"], "optimizer": [entry["spec"].name, entry["hp"]], "training": entry["train"],
             "model": dict(model), "seed": entry["seed"], "dataset": dataset_digest(dataset_path),
             "target": (budget or {}).get("target_val_rel_l2")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished_trial(out: Path, fingerprint: str) -> dict | None:
    """The trial.json of a trial that already ran with this fingerprint, else None."""
    try:
        info = json.loads((out / "trial.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("fingerprint") == fingerprint else None


def run_trial(cell: Mapping, trial: int, spec: Mapping, training: Mapping, tuning: Mapping, dataset_path: Pathish,
              out_dir: Pathish, tracking_json: Pathish, budget_json: Pathish | None = None,
              setting: Mapping | None = None) -> dict:
    """One tuning trial: the cell's optimizer with the trial's point of its search space, trained
    with the tuning seed (under the workload budget, except for the reference) and judged on the
    validation split; writes ``trial.json``. A trial that diverges or fails is recorded as such
    (its best validation error is inf) and the study goes on. A trial that already finished with
    the same fingerprint (:func:`_trial_fingerprint`) is not trained again; one that was killed
    continues from its checkpoint."""
    from kryflow.training import train_cell
    from kryflow.tuning import budget_kind, trial_record

    d, m, o = cell["dataset"], cell["model"], cell["optimizer"]
    budget = _json(budget_json)
    entry = _trial_plan_entry(cell, trial, spec, training, tuning, budget, setting)
    setting, study, opt_spec, hp, train = (entry[k] for k in ("setting", "study", "spec", "hp", "train"))
    model_kwargs = {k: v for k, v in spec["model"].items() if k != "name"}
    out = Path(out_dir)
    fingerprint = _trial_fingerprint(entry, spec["model"], dataset_path, budget)
    done = _finished_trial(out, fingerprint)
    if done is not None:
        log.info("trial %d of %s/%s/%s finished before with this setting: kept", trial, d, m, o)
        return {**done, "kept": True}
    tags = {"dataset": d, "model": m, "optimizer": o, "trial": trial, "study": study, "rule": "tune_batch"}
    key = f"tune/{d}/{m}/{o}/trial{trial}"
    with stage(tracking_json, key, f"{d}-{m}-{o}-trial{trial}", tags, parent_key=f"tune/{d}/{m}/{o}/study{study}") as tr:
        tr.log_params({"setting": setting, "optimizer": {"name": opt_spec.name, **hp}, "training": train})
        try:
            with _train_source(train, dataset_path, entry["seed"]) as source:
                train_cell(dataset_path, out, model_name=spec["model"]["name"], model_kwargs=model_kwargs,
                           optimizer_name=opt_spec.name, optimizer_kwargs=hp, seed=entry["seed"], train_cfg=train,
                           tracker=tr, progress=False, train_source=source)
                _log_online(tr, source, out)
        except Exception as exc:  # noqa: BLE001 (a setting that cannot train: recorded, the batch goes on)
            log.warning("trial %s failed: %s", key, exc, exc_info=True)
            _record_failed_trial(out, exc)
        record = trial_record(out, budget["target_val_rel_l2"] if budget else None)
        info = {"trial": trial, "study": study, "setting": setting, "hyperparameters": hp,
                "training": {k: train[k] for k in ("max_steps", "max_seconds", "max_grad_evals", "scheduler")
                             if k in train},
                "budget_kind": budget_kind(budget, entry["zeroth"]), **record, "fingerprint": fingerprint}
        tr.log_metrics({"best_val_rel_l2": record["best_val_rel_l2"]})
        tr.log_artifact(out / "history.csv")
        tr.finish(record["status"], json.loads((out / "train.json").read_text()).get("reason"))
    # written last: a trial.json means the trial and its MLflow run are complete
    _write_json_atomic(out / "trial.json", info)
    return info


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def _trial_worker_init(threads: int, log_path: str | None) -> None:
    """A worker process of a batch that trains several trials at once (``tuning.concurrent``)."""
    import torch

    torch.set_num_threads(max(1, threads))
    if log_path:
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [worker {os.getpid()}] %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        logging.captureWarnings(True)


def _run_concurrent(args: list[tuple], concurrent: int, threads: int) -> list[dict]:
    """``run_trial(*a)`` for every ``a`` in ``args``, ``concurrent`` at a time in worker processes
    (spawned: CUDA and torch's thread pools do not survive a fork). A worker that dies takes only
    the trials it was training: they are recorded as failed and the rest goes on in a new pool."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    results: dict[int, dict] = {}
    pending = list(range(len(args)))
    while pending:
        with ProcessPoolExecutor(concurrent, mp_context=mp.get_context("spawn"), initializer=_trial_worker_init,
                                 initargs=(threads // concurrent, os.environ.get("KRYFLOW_JOB_LOG"))) as pool:
            futures = {i: pool.submit(run_trial, *args[i]) for i in pending}
            broken = []
            for i, fut in futures.items():
                try:
                    results[i] = fut.result()
                except BrokenProcessPool as exc:
                    broken.append((i, exc))
        if not broken:
            break
        # the trials that never started are tried again; those that were running when the worker died fail
        first = broken[0][0]
        for i, exc in broken[:concurrent]:
            out = Path(args[i][6])
            _record_failed_trial(out, RuntimeError(f"the worker process training this trial died ({exc})"))
            results[i] = {"trial": args[i][1], "status": "failed", "best_val_rel_l2": math.inf}
        pending = [i for i, _ in broken[concurrent:]]
        log.warning("a worker of the batch died while training trial(s) from %d; %d trial(s) left", first, len(pending))
    return [results[i] for i in range(len(args))]


def run_trial_batch(cell: Mapping, batch: int, spec: Mapping, training: Mapping, tuning: Mapping,
                    dataset_path: Pathish, out_json: Pathish, tracking_json: Pathish,
                    budget_json: Pathish | None = None, threads: int = 1,
                    settings: Sequence[Mapping] | None = None) -> dict:
    """A batch of tuning trials of one (dataset, model, optimizer) in one job (``tuning.batch``):
    the process starts, imports and opens the tracking store once; every trial keeps its own
    folder ``trial<k>/``, seed and MLflow run, exactly as alone (:func:`run_trial`). A trial that
    diverges or fails is recorded and the batch goes on; a batch job that was killed starts again
    at its first unfinished trial. ``tuning.concurrent`` > 1 trains that many trials at once in
    worker processes (small models on one GPU).

    ``settings``: the batch's points of the search space, one per trial, as the workflow planned
    them (:func:`kryflow.tuning.trial_plan`); drawn here when None.

    Writes ``out_json`` (``batch<b>.json``: the batch's trial records, the job's wall seconds and
    the seconds spent in training steps) and returns it."""
    import time

    from kryflow.config import batch_trials

    t0 = time.perf_counter()
    trials = batch_trials(tuning, batch)
    root = Path(out_json).parent
    if settings is not None and len(settings) != len(trials):
        raise ValueError(f"batch {batch} holds trials {list(trials)}, but {len(settings)} settings were given")
    args = [(cell, t, spec, training, tuning, dataset_path, root / f"trial{t}", tracking_json, budget_json,
             None if settings is None else settings[i]) for i, t in enumerate(trials)]
    concurrent = min(int(tuning.get("concurrent", 1)), len(trials))
    if concurrent > 1:
        infos = _run_concurrent(args, concurrent, threads)
    else:
        infos = [run_trial(*a) for a in args]
    wall = time.perf_counter() - t0
    trained = sum(float(i.get("train_seconds") or 0.0) for i in infos if not i.get("kept"))
    out = {**{k: cell[k] for k in ("dataset", "model", "optimizer")}, "batch": batch, "trials": infos,
           "concurrent": concurrent, "seconds": wall, "train_seconds": trained}
    _write_json_atomic(Path(out_json), out)
    log.info("batch %d: %d trials in %.1f s (%.1f s training)", batch, len(trials), wall, trained)
    return out


def _record_failed_trial(out: Path, exc: BaseException) -> None:
    """A trial that could not train: train.json says so, history.csv has no rows."""
    from kryflow.training import HISTORY_COLUMNS

    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps({"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}))
    if not (out / "history.csv").exists():
        (out / "history.csv").write_text(",".join(HISTORY_COLUMNS) + "\n")


def run_select(workload: Mapping, batch_jsons: Sequence[Pathish], studies: int, out_json: Pathish,
               tracking_json: Pathish) -> dict:
    """The setting an optimizer reruns: the trial with the lowest validation error (per study
    too, for the protocol's median over studies); logged into the optimizer's tuning run.
    ``batch_jsons``: every ``batch<b>.json`` of the optimizer (:func:`run_trial_batch`)."""
    from kryflow.tuning import select_trials

    d, m, o = workload["dataset"], workload["model"], workload["optimizer"]
    records = [t for p in batch_jsons for t in json.loads(Path(p).read_text())["trials"]]
    trials = sorted(({k: v for k, v in t.items() if k != "kept"} for t in records), key=lambda t: t["trial"])
    chosen = select_trials(trials, studies)
    best = trials[chosen["selected"]]
    out = {**workload, **chosen, "setting": best["setting"], "hyperparameters": best["hyperparameters"],
           "training": best["training"], "trials": trials}
    Path(out_json).write_text(json.dumps(out, indent=2, default=float))
    tags = {"dataset": d, "model": m, "optimizer": o, "rule": "select_setting"}
    with stage(tracking_json, f"tune/{d}/{m}/{o}", f"{d}-{m}-{o}", tags, parent_key=f"workload/{d}/{m}") as tr:
        tr.log_params({"selected_trial": chosen["selected"], "selected": best["setting"]})
        tr.log_metrics({"best_val_rel_l2": best["best_val_rel_l2"]})
        tr.log_artifact(out_json, "tuning")
    return out


def run_budget(workload: Mapping, reference_runs: Sequence[Pathish], max_steps: int, factor: float,
               out_json: Pathish, tracking_json: Pathish) -> dict:
    """A workload's target and budget from the reference's reruns, logged into the workload's run."""
    from kryflow.tuning import workload_budget

    d, m = workload["dataset"], workload["model"]
    budget = {**workload, **workload_budget(reference_runs, max_steps, factor)}
    Path(out_json).write_text(json.dumps(budget, indent=2, default=float))
    with stage(tracking_json, f"workload/{d}/{m}", f"{d}-{m}", {"dataset": d, "model": m, "rule": "workload_budget"}) as tr:
        tr.log_metrics({k: budget[k] for k in ("target_val_rel_l2", "max_steps", "max_seconds") if budget.get(k)})
        tr.set_tags({"budget_kind": budget["kind"]})
        tr.log_artifact(out_json, "tuning")
    return budget


def _test_rel_l2(model_pt: Pathish, dataset_path: Pathish) -> float:
    """Mean relative L2 of a saved surrogate on a dataset's test split."""
    import numpy as np
    import torch

    from kryflow.data import make_loader
    from kryflow.evaluation.metrics import relative_l2
    from kryflow.training import load_surrogate

    surrogate = load_surrogate(model_pt).eval()
    errs = []
    with torch.no_grad():
        for x, y in make_loader(dataset_path, "test", batch_size=32, shuffle=False):
            errs.append(np.asarray(relative_l2(surrogate(x), y)))
    return float(np.concatenate(errs).mean())


def run_variant(kind: str, cell: Mapping, spec: Mapping, training: Mapping, entry: Mapping, selected_json: Pathish,
                budget_json: Pathish, dataset_path: Pathish, out_dir: Pathish, tracking_json: Pathish,
                pretrained: Pathish | None = None) -> dict:
    """A workload moved to another dataset of its family, trained by the cell's optimizer with
    its setting selected on the source workload (``entry["source"]``):

    * ``finetune`` (where zeroth order is known to work): the reference's trained model of the
      source (``pretrained``) adapted for ``entry["max_steps"]`` steps (zeroth order: the
      gradient evaluations those steps cost the reference); the test error before is kept too.
    * ``heldout`` (AlgoPerf's held-out variants): trained from scratch under the source
      workload's budget, the same for every optimizer; the report scores it against the
      reference's median best validation error there.

    Writes ``metrics.json`` (status, best validation and test error, steps, seconds, gradient
    evaluations, the budget's kind) beside the run's ``history.csv``.
    """
    from kryflow.optim import OPTIMIZERS
    from kryflow.training import train_cell
    from kryflow.tuning import budget_kind, trial_record, tuned_cell

    d, m, o, s = cell["dataset"], cell["model"], cell["optimizer"], int(cell["seed"])
    source = _json(budget_json)
    if kind == "finetune":
        steps = int(entry["max_steps"])
        budget = {"max_steps": steps, "kind": "steps",
                  "max_grad_evals": (source["max_grad_evals"] / source["max_steps"] * steps
                                     if source and source.get("max_grad_evals") else None)}
    else:
        budget = source
    spec, train = tuned_cell(spec, training, _json(selected_json), budget)
    opt = dict(spec["optimizer"])
    name = opt.pop("name")
    zeroth = OPTIMIZERS[name].family == "zeroth_order"
    out = Path(out_dir)
    tags = {**_cell_tags(cell), "rule": "tuning_variant", "variant": kind, "source_dataset": entry["source"],
            "budget_kind": budget_kind(budget, zeroth)}
    with stage(tracking_json, f"{kind}/{d}/{m}/{o}/{s}", f"{kind}-{d}-{m}-{o}-s{s}", tags,
               parent_key=f"workload/{entry['source']}/{m}") as tr:
        before = _test_rel_l2(pretrained, dataset_path) if pretrained else None
        with _train_source(train, dataset_path, s) as source:
            result = train_cell(dataset_path, out, model_name=spec["model"]["name"],
                                model_kwargs={k: v for k, v in spec["model"].items() if k != "name"},
                                optimizer_name=name, optimizer_kwargs=opt, seed=s, train_cfg=train, tracker=tr,
                                progress=False, init_from=pretrained, train_source=source)
            _log_online(tr, source, out)
        after = _test_rel_l2(out / "model.pt", dataset_path) if result["status"] == "finished" else float("nan")
        metrics = {**dict(cell), "variant": kind, "source": entry["source"], "test_rel_l2": after,
                   "budget_kind": tags["budget_kind"],
                   **{k: result[k] for k in ("status", "steps", "train_seconds", "grad_evals")},
                   "best_val_rel_l2": trial_record(out)["best_val_rel_l2"]}
        if before is not None:
            metrics["before_test_rel_l2"] = before
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        tr.log_metrics({k: v for k, v in (("before_test_rel_l2", before), ("test_rel_l2", after)) if v is not None})
        tr.finish(result["status"], result.get("reason"))
    return metrics


def run_tuning_report(reference: str, seeds: Sequence[int], budgets: Sequence[Pathish], selections: Sequence[Pathish],
                      trial_root: Pathish, runs_root: Pathish, out_json: Pathish, tracking_json: Pathish,
                      finetune: Sequence[Pathish] = (), heldout: Sequence[Pathish] = ()) -> dict:
    """The comparison's report (``results/tuning/report.json``): times to target, profiles,
    scores, speed-ups, test errors with intervals; the scores are logged to a report run."""
    from kryflow.tuning import build_report

    with stage(tracking_json, "tuning/report", "tuning-report", {"rule": "tuning_report"}) as tr:
        report = build_report(reference, budgets, selections, trial_root, runs_root, seeds, finetune, heldout)
        Path(out_json).write_text(json.dumps(report, indent=2, default=float))
        for unit, scores in report["scores"].items():
            tr.log_metrics({f"score_{unit}.{o}": v for o, v in scores.items()})
        tr.log_artifact(out_json, "tuning")
    return report


def run_evaluate(cell: Mapping, evaluation: Mapping, device: str, dataset_path: Pathish, run_dir: Pathish,
                 tracking_json: Pathish, transfer_path: Pathish | None = None) -> dict:
    """Evaluate one trained cell (its ``run.json``, ``train.json``, ``model.pt``, ``history.csv``)
    into its training run; an exception marks that run FAILED."""
    from kryflow.data import dataset_digest
    from kryflow.evaluation import evaluate_cell

    run_dir = Path(run_dir)
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    with stage(tracking_json, "", "", {}, run_id=run_id) as tracker:
        metrics = evaluate_cell(dataset_path, run_dir, cell={**dict(cell), "run_id": run_id},
                                transfer_path=transfer_path, targets=evaluation.get("targets", [0.5, 0.2]),
                                num_predictions=int(evaluation.get("num_predictions", 4)), device=device,
                                tracker=tracker)
        # MLflow keeps one input per (name, digest) and run, so the test split gets its own name
        tracker.log_dataset(f"{cell['dataset']}/test", dataset_path, dataset_digest(dataset_path),
                            context="evaluation")
        if transfer_path is not None:
            tracker.log_dataset(Path(transfer_path).stem, transfer_path, dataset_digest(transfer_path),
                                context="evaluation")
        tracker.log_job_log()
    return metrics


def run_aggregate(metrics_files: Sequence[Pathish], summary_csv: Pathish, aggregate_csv: Pathish) -> None:
    """All metrics.json -> summary.csv (one row per cell and seed) + across-seed aggregates."""
    import pandas as pd

    from kryflow.evaluation import summary_columns
    from kryflow.figures import aggregate

    columns = summary_columns()
    rows = [{c: m.get(c) for c in columns} for m in (json.loads(Path(f).read_text()) for f in metrics_files)]
    df = pd.DataFrame(rows, columns=columns).sort_values(["dataset", "model", "optimizer", "seed"])
    Path(summary_csv).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(summary_csv, index=False)
    aggregate(df).to_csv(aggregate_csv, index=False)


def run_figures(summary_csv: Pathish, runs_root: Pathish, solver_jsons: Sequence[Pathish], fig_dir: Pathish,
                table_dir: Pathish, tracking_json: Pathish | None = None, datasets: Sequence[str] | None = None,
                models: Sequence[str] | None = None, tuning_report: Pathish | None = None,
                rollout_datasets: Sequence[str] | None = None) -> list[Path]:
    """Paper figures and tables; each is logged to the report run, and every training cell's run
    gets the figures whose scope is its dataset and model (from the figure registry).
    ``rollout_datasets``: those judged by rollout (next-step tasks), which get the rollout figures."""
    from kryflow.figures import make_figures, make_tables

    reports = [tuning_report] if tuning_report else []

    def draw() -> tuple[list, list]:
        figs = make_figures(summary_csv, runs_root, list(solver_jsons), fig_dir, datasets=datasets, models=models,
                            tuning_reports=reports, rollout_datasets=rollout_datasets)
        return figs, make_tables(summary_csv, table_dir, solver_benchmarks=list(solver_jsons), tuning_report=tuning_report)

    if tracking_json is None:
        figs, tables = draw()
    else:
        with stage(tracking_json, "report", "report", {"rule": "figures"}) as report:
            figs, tables = draw()
            for p in figs:
                report.log_artifact(p, "figures")
            for p in tables:
                report.log_artifact(p, "tables")
            report.log_artifact(summary_csv)
            _attach_cell_figures(report.uri, summary_csv, fig_dir, list(solver_jsons), datasets, models,
                                 rollout_datasets)
    return [Path(p) for p in list(figs) + list(tables)]


def _attach_cell_figures(uri: str, summary_csv: Pathish, fig_dir: Pathish, solver_jsons: list,
                         datasets: Sequence[str] | None, models: Sequence[str] | None,
                         rollout_datasets: Sequence[str] | None = None) -> None:
    """Every training cell's run gets the figures whose scope is its dataset (and model)."""
    import pandas as pd

    from kryflow.figures import figure_instances
    from kryflow.tracking import Tracker

    summary = pd.read_csv(summary_csv)
    datasets = sorted(set(summary["dataset"].astype(str))) if datasets is None else datasets
    models = sorted(set(summary["model"].astype(str))) if models is None else models
    if rollout_datasets is None:  # those with rollout results
        rollout_datasets = sorted(set(summary.loc[summary["onestep_rel_l2"].notna(), "dataset"].astype(str)))
    instances = figure_instances(datasets, models, solver_jsons, rollout_datasets=rollout_datasets)
    for row in summary.itertuples(index=False):
        if not isinstance(row.run_id, str):
            continue
        cell_run = Tracker.reopen(uri, row.run_id)
        for inst in instances:
            if inst.concerns(dataset=row.dataset, model=row.model):
                for ext in ("png", "pdf"):
                    cell_run.log_artifact(Path(fig_dir) / f"{inst.stem}.{ext}", "figures")
