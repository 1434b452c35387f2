"""Workflow stages as plain functions: what each Snakemake rule (and the matching ``kryflow``
subcommand) runs. Rules stay thin: ``scripts/*.py`` unpack the ``snakemake`` object and call
these; nothing scientific lives here either, only wiring between the library packages,
the files the workflow exchanges and MLflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger("kryflow")

__all__ = [
    "setup_logging",
    "init_tracking",
    "run_generate",
    "run_import",
    "run_solver_benchmark",
    "run_train",
    "run_evaluate",
    "run_aggregate",
    "run_figures",
    "dataset_spec",
]


@contextlib.contextmanager
def setup_logging(log_path: str | os.PathLike | None):
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


def _tracking(tracking_json: str | os.PathLike) -> dict:
    return json.loads(Path(tracking_json).read_text())


def init_tracking(config: Mapping, out_json: str | os.PathLike, workdir: str | os.PathLike = ".") -> dict:
    """Create the experiment once, before jobs fan out (sqlite creation races otherwise)."""
    from kryflow.tracking import (
        artifact_root_uri, check_tracking_reachable, ensure_experiment, resolve_tracking_uri, ui_command,
    )

    tcfg = config.get("tracking") or {}
    uri = resolve_tracking_uri(tcfg, workdir)
    check_tracking_reachable(uri)
    exp_id = ensure_experiment(uri, config["experiment"], artifact_root_uri(tcfg, workdir))
    info = {"uri": uri, "experiment": config["experiment"], "experiment_id": exp_id,
            "ui": ui_command(uri)}
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).touch(mode=0o600)  # the URI may carry credentials the jobs need
    Path(out_json).write_text(json.dumps(info, indent=2))
    return info


def dataset_spec(config: Mapping, name: str) -> dict:
    """The generation spec of a configured dataset or of a derived transfer dataset."""
    from kryflow.config import transfer_name

    if name in config["datasets"]:
        return dict(config["datasets"][name])
    for base, ds in config["datasets"].items():
        tr = ds.get("transfer")
        if tr and transfer_name(base, tr["n"]) == name:
            spec = dict(ds)
            spec["params"] = {**(ds.get("params") or {}), "n": tr["n"]}
            spec["num_samples"] = tr.get("num_samples", 8)
            spec["seed"] = int(ds.get("seed", 0)) + 10_000  # unseen samples
            spec["splits"] = "test"
            spec["transfer_of"] = base
            spec.pop("transfer", None)
            return spec
    raise KeyError(f"dataset '{name}' is neither configured nor a transfer set")


def _provenance(config: Mapping, name: str, spec: Mapping) -> dict:
    from kryflow.tracking import git_commit

    return {"dataset": name, "generating_config": json.dumps(spec, sort_keys=True, default=str),
            "workflow_experiment": config["experiment"], "git_commit": git_commit()}


def run_generate(config: Mapping, name: str, out_path: str | os.PathLike,
                 tracking_json: str | os.PathLike) -> dict:
    """Generate one dataset (a dataset-generation MLflow run records it)."""
    from kryflow.data.generate import generate_dataset
    from kryflow.tracking import Tracker

    spec = dataset_spec(config, name)
    tr = _tracking(tracking_json)
    tracker = Tracker(tr["uri"], tr["experiment"], key=f"generate/{name}", run_name=f"generate-{name}",
                      tags={"dataset": name, "rule": "generate_dataset", "pde_family": spec["family"]})
    tracker.log_params({"dataset": name, "family": spec["family"], "num_samples": spec["num_samples"],
                        "seed": spec.get("seed", 0), "params": spec.get("params") or {},
                        "solver": spec.get("solver") or {}})
    offset = [0]

    def on_sample(index: int, records: list) -> None:
        base = offset[0]
        tracker.log_metric_series("solve_iterations", [r.iterations for r in records], base)
        tracker.log_metric_series("solve_rel_residual", [r.rel_residual for r in records], base)
        tracker.log_metric_series("solve_seconds", [r.seconds for r in records], base)
        tracker.log_metric_series("solve_matvecs", [r.matvecs for r in records], base)
        offset[0] += len(records)

    try:
        totals = generate_dataset(
            out_path, family=spec["family"], params=spec.get("params"), num_samples=spec["num_samples"],
            seed=int(spec.get("seed", 0)), chunk_samples=int(spec.get("chunk_samples", 16)),
            splits=spec.get("splits", (0.75, 0.125, 0.125)), split_block=int(spec.get("split_block", 1)),
            solver=spec.get("solver"),
            provenance=_provenance(config, name, spec), on_sample=on_sample,
        )
    except Exception as exc:
        tracker.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    tracker.log_metrics({f"total_{k}": v for k, v in totals.items() if k != "digest"})
    tracker.log_dataset(name, out_path, totals["digest"], context="generation")
    tracker.finish("finished" if not totals["flagged"] else "finished_with_flagged_solves")
    log.info("generated %s: %s", out_path, {k: v for k, v in totals.items()})
    return totals


def run_import(config: Mapping, name: str, out_path: str | os.PathLike,
               tracking_json: str | os.PathLike, transfer_out: str | os.PathLike | None = None) -> Path:
    """Import an external dataset (neuraloperator's Darcy sets) into kryflow's schema."""
    from kryflow.data import dataset_digest, import_neuraloperator_darcy
    from kryflow.tracking import Tracker

    src = config["datasets"][name]["source"]
    tr = _tracking(tracking_json)
    tracker = Tracker(tr["uri"], tr["experiment"], key=f"generate/{name}", run_name=f"import-{name}",
                      tags={"dataset": name, "rule": "import_dataset", "source": src["kind"]})
    tracker.log_params({"source": src})
    out_path = Path(out_path)
    path = Path(import_neuraloperator_darcy(src["train"], src["test"], out_path,
                                            test_hi_pt=src.get("test_hi"), overwrite=True))
    tracker.log_dataset(name, path, dataset_digest(path), context="generation")
    if src.get("test_hi"):
        # the importer names the fine-grid store by its grid size; the workflow by role
        written = sorted(p for p in out_path.parent.glob(f"{out_path.stem}_*.zarr") if p.is_dir())
        if transfer_out is not None and written:
            os.replace(written[-1], transfer_out)
            tracker.log_dataset(Path(transfer_out).stem, transfer_out, dataset_digest(transfer_out),
                                context="generation")
    tracker.finish("finished")
    return path


def run_solver_benchmark(config: Mapping, name: str, out_json: str | os.PathLike,
                         tracking_json: str | os.PathLike) -> list[dict]:
    """Compare solver strategies on the dataset's own sequence; table to JSON and MLflow."""
    from kryflow.pdes import build_family
    from kryflow.solvers import benchmark_sequence
    from kryflow.tracking import Tracker

    spec = dataset_spec(config, name)
    bcfg = config.get("solver_benchmark") or {}
    tr = _tracking(tracking_json)
    tracker = Tracker(tr["uri"], tr["experiment"], key=f"solver_benchmark/{name}",
                      run_name=f"solver-benchmark-{name}",
                      tags={"dataset": name, "rule": "solver_benchmark", "pde_family": spec["family"]})
    fam = build_family(spec["family"], **(spec.get("params") or {}))
    records = benchmark_sequence(fam, int(bcfg.get("num_samples", 12)), int(spec.get("seed", 0)),
                                 repeats=int(bcfg.get("repeats", 3)))
    for r in records:
        r.setdefault("sequence", name)
        r["dataset"] = name
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(records, indent=2, default=float))
    tracker.log_params({"num_samples": bcfg.get("num_samples", 12), "family": spec["family"],
                        "params": spec.get("params") or {}})
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
    tracker.finish("finished")
    return records


def _cell_tags(cell: Mapping) -> dict:
    return {"dataset": cell["dataset"], "model": cell["model"], "optimizer": cell["optimizer"],
            "seed": cell["seed"]}


def run_train(config: Mapping, cell: Mapping, dataset_path: str | os.PathLike, out_dir: str | os.PathLike,
              tracking_json: str | os.PathLike, progress: bool = True) -> dict:
    """Train one grid cell; writes run.json with the MLflow run id and the status."""
    import torch

    from kryflow.data import dataset_digest
    from kryflow.optim import OPTIMIZERS
    from kryflow.tracking import Tracker, redact
    from kryflow.training import load_surrogate, train_cell

    d, m, o, s = cell["dataset"], cell["model"], cell["optimizer"], int(cell["seed"])
    model_cfg = dict(config["models"][m])
    model_name = model_cfg.pop("name", m)
    opt_cfg = dict(config["optimizers"][o])
    opt_name = opt_cfg.pop("name", o)
    tr = _tracking(tracking_json)
    # fails here, before any training, when the store is unreachable
    tracker = Tracker(tr["uri"], tr["experiment"], key=f"train/{d}/{m}/{o}/{s}", run_name=f"{d}-{m}-{o}-s{s}",
                      tags={**_cell_tags(cell), "rule": "train", "model_name": model_name,
                            "optimizer_name": opt_name,
                            "optimizer_family": OPTIMIZERS[opt_name].family})
    tracker.log_params({"dataset": d, "model": {"name": model_name, **model_cfg},
                        "optimizer": {"name": opt_name, **opt_cfg}, "seed": s,
                        "training": config["training"]})
    tracker.log_dataset(d, dataset_path, dataset_digest(dataset_path), context="training")
    out = Path(out_dir)
    sysmetrics = bool((config.get("tracking") or {}).get("system_metrics"))
    try:
        with tracker.system_metrics(sysmetrics):
            result = train_cell(dataset_path, out, model_name=model_name, model_kwargs=model_cfg,
                                optimizer_name=opt_name, optimizer_kwargs=opt_cfg, seed=s,
                                train_cfg=config["training"], tracker=tracker, progress=progress)
    except Exception as exc:
        tracker.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    tracker.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))})
    tracker.log_artifact(out / "checkpoint.pt", "checkpoint")
    tracker.log_artifact(out / "history.csv")
    cfg_path = out / "effective_config.json"
    cfg_path.write_text(json.dumps({"cell": dict(cell), "model": {"name": model_name, **model_cfg},
                                    "optimizer": {"name": opt_name, **opt_cfg},
                                    "training": config["training"]}, indent=2, default=str))
    tracker.log_artifact(cfg_path)
    if result["status"] == "finished":
        surrogate = load_surrogate(out / "model.pt").eval()
        from kryflow.data import make_loader

        x, _ = next(iter(make_loader(dataset_path, "test", batch_size=1, shuffle=False)))
        tracker.log_model(surrogate, input_example=x.numpy())
    tracker.finish(result["status"], result.get("reason"))
    info = {"run_id": tracker.run_id, "tracking_uri": redact(tr["uri"]), **dict(cell), **result,
            "torch": torch.__version__}
    (out / "run.json").write_text(json.dumps(info, indent=2, default=float))
    return info


def run_evaluate(config: Mapping, cell: Mapping, dataset_path, run_dir, tracking_json,
                 transfer_path=None) -> dict:
    """Evaluate one cell into its training run."""
    from kryflow.data import dataset_digest
    from kryflow.evaluation.evaluate import evaluate_cell
    from kryflow.tracking import Tracker

    run_dir = Path(run_dir)
    run_info = json.loads((run_dir / "run.json").read_text())
    tr = _tracking(tracking_json)
    tracker = Tracker.reopen(tr["uri"], run_info["run_id"])
    ecfg = config.get("evaluation") or {}
    metrics = evaluate_cell(dataset_path, run_dir, cell={**dict(cell), "run_id": run_info["run_id"]},
                            transfer_path=transfer_path, targets=ecfg.get("targets", [0.5, 0.2]),
                            num_predictions=int(ecfg.get("num_predictions", 4)),
                            device=config["training"].get("device", "auto"), tracker=tracker)
    # MLflow keeps one input per (name, digest) and run, so the test split gets its own name
    tracker.log_dataset(f"{cell['dataset']}/test", dataset_path, dataset_digest(dataset_path),
                        context="evaluation")
    if transfer_path is not None:
        tracker.log_dataset(Path(transfer_path).stem, transfer_path, dataset_digest(transfer_path),
                            context="evaluation")
    tracker.log_job_log()
    return metrics


def run_aggregate(metrics_files: Sequence[str | os.PathLike], summary_csv, aggregate_csv) -> None:
    """All metrics.json -> summary.csv (one row per cell and seed) + across-seed aggregates."""
    import pandas as pd

    from kryflow.evaluation.evaluate import SUMMARY_COLUMNS
    from kryflow.figures import aggregate

    rows = []
    for f in metrics_files:
        m = json.loads(Path(f).read_text())
        rows.append({c: m.get(c) for c in SUMMARY_COLUMNS})
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS).sort_values(["dataset", "model", "optimizer", "seed"])
    Path(summary_csv).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(summary_csv, index=False)
    aggregate(df).to_csv(aggregate_csv, index=False)


def run_figures(summary_csv, runs_root, solver_jsons: Sequence, fig_dir, table_dir,
                tracking_json=None, datasets: Sequence[str] | None = None,
                models: Sequence[str] | None = None) -> list[Path]:
    """Paper figures and tables; each is also logged to MLflow."""
    from kryflow.figures import make_figures, make_tables

    figs = make_figures(summary_csv, runs_root, list(solver_jsons), fig_dir, datasets=datasets, models=models)
    tables = make_tables(summary_csv, table_dir, solver_benchmarks=list(solver_jsons))
    if tracking_json is not None:
        import pandas as pd

        from kryflow.tracking import Tracker

        tr = _tracking(tracking_json)
        rep = Tracker(tr["uri"], tr["experiment"], key="report", run_name="report",
                      tags={"rule": "figures"})
        for p in list(figs) + list(tables):
            rep.log_artifact(p, "figures" if Path(p) in set(map(Path, figs)) else "tables")
        rep.log_artifact(summary_csv)
        rep.finish("finished")
        # each training cell's run gets the figures of its dataset and model
        summary = pd.read_csv(summary_csv)
        for _, row in summary.iterrows():
            if not isinstance(row.get("run_id"), str):
                continue
            cell_run = Tracker.reopen(tr["uri"], row["run_id"])
            tag = f"{row['dataset']}_{row['model']}"
            for p in figs:
                if tag in Path(p).name:
                    cell_run.log_artifact(p, "figures")
    return [Path(p) for p in list(figs) + list(tables)]
