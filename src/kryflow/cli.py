"""``kryflow`` command line: the workflow's stages one at a time, dataset tools, locations.

Every workflow stage the Snakefile runs can be run (and debugged) alone from here with the
same config, e.g. ``kryflow train config/config.yaml darcy2d fno adam 0``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import kryflow
from kryflow import layout


def _config(path):
    from kryflow.config import load_config

    return load_config(path)


def _tracking_json(config) -> Path:
    from kryflow.pipeline import init_tracking

    path = Path(layout.TRACKING_JSON)
    init_tracking(config["experiment"], config.get("tracking"), path)
    return path


def cmd_validate(args) -> int:
    cfg = _config(args.config)
    from kryflow.config import dataset_names, training_cells

    print(f"{args.config}: valid. {len(dataset_names(cfg))} datasets, "
          f"{len(training_cells(cfg))} training cells.")
    return 0


def cmd_plan(args) -> int:
    from kryflow.planning import CostTable, format_plan, plan_workflow

    cfg = _config(args.config)
    print(f"planning {args.config}: Snakemake's dry run, then the costs ...", flush=True)
    plan = plan_workflow(cfg, args.config, table=CostTable(args.costs), measure=not args.no_measure,
                         device=args.device, gpu=args.gpu, exact_channels=args.exact_channels)
    print(format_plan(plan))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(plan, indent=2, default=float))
        print(f"  written       {args.json}")
    return 0


def cmd_run(args) -> int:
    snakemake = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    cmd = [snakemake, "--cores", str(args.cores), "--configfile", args.config, *args.extra]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def cmd_where(args) -> int:
    workdir = Path(args.workdir).resolve()
    print("kryflow outputs:")
    print(f"  datasets      {workdir / layout.DATA_DIR}/*.zarr")
    for p in sorted((workdir / layout.DATA_DIR).glob("*.zarr")):
        print(f"                {p.name}")
    print(f"  summary table {workdir / layout.SUMMARY_CSV}")
    print(f"  figures       {workdir / layout.FIGURES_DIR}")
    print(f"  tables        {workdir / layout.TABLES_DIR}")
    tj = workdir / layout.TRACKING_JSON
    if tj.exists():
        info = json.loads(tj.read_text())
        print(f"  MLflow store  {info['uri']} (experiment '{info['experiment']}')")
        print(f"  open the UI:  {info['ui']}")
        if "ui_page" in info:
            print(f"  then browse:  {info['ui_page']}")
    else:
        print("  MLflow store  (not created yet: run the workflow first)")
    return 0


def cmd_data_inspect(args) -> int:
    from kryflow.data import inspect_dataset

    print(inspect_dataset(args.path))
    return 0


def cmd_data_verify(args) -> int:
    from kryflow.data import verify_dataset

    problems = verify_dataset(args.path)
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"{args.path}: all checksums match")
    return 0


def cmd_data_merge(args) -> int:
    from kryflow.data import merge_dataset

    totals = merge_dataset(args.parts, args.out, overwrite=args.overwrite)
    print(f"merged {len(args.parts)} parts into {args.out} (digest {totals['digest'][:16]})")
    return 0


def cmd_data_import(args) -> int:
    from kryflow.data import import_neuraloperator_darcy

    out = import_neuraloperator_darcy(args.train, args.test, args.out, test_hi_pt=args.test_hi,
                                      overwrite=args.overwrite)
    print(f"imported into {out}")
    return 0


def cmd_data_import_pdebench(args) -> int:
    from kryflow.data import import_pdebench_darcy

    out = import_pdebench_darcy(args.file, args.out, num_samples=args.num_samples, stride=args.stride,
                                val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                                overwrite=args.overwrite)
    print(f"imported into {out}")
    return 0


def cmd_data_export_well(args) -> int:
    from kryflow.data import export_well

    out = export_well(args.store, args.out, split=args.split, dataset_name=args.name, overwrite=args.overwrite)
    print(f"exported {args.store} to {out} (The Well's HDF5 layout)")
    return 0


def cmd_generate(args) -> int:
    """One dataset; a sharded one shard by shard (``--shard K``: that part only), then merged."""
    from kryflow.config import dataset_shards, dataset_spec
    from kryflow.pipeline import run_generate, run_merge, setup_logging

    cfg = _config(args.config)
    spec = dataset_spec(cfg, args.dataset)
    shards = dataset_shards(spec)
    out = Path(args.out or layout.dataset_path(args.dataset))
    with setup_logging(None):
        tracking = _tracking_json(cfg)
        if shards == 1:
            totals = run_generate(args.dataset, spec, cfg["experiment"], out, tracking)
        else:
            todo = range(shards) if args.shard is None else [args.shard]
            parts = [layout.dataset_part_path(args.dataset, k) for k in range(shards)]
            for k in todo:
                totals = run_generate(args.dataset, spec, cfg["experiment"], parts[k], tracking, shard=k)
            if args.shard is None:
                totals = run_merge(args.dataset, spec, parts, out, tracking)
    print(json.dumps(totals, indent=2, default=float))
    return 0


def cmd_benchmark_solvers(args) -> int:
    from kryflow.config import dataset_spec
    from kryflow.pipeline import run_solver_benchmark, setup_logging

    cfg = _config(args.config)
    out = Path(args.out or layout.solver_benchmark_path(args.dataset))
    with setup_logging(None):
        run_solver_benchmark(args.dataset, dataset_spec(cfg, args.dataset), cfg.get("solver_benchmark") or {}, out,
                             _tracking_json(cfg))
    print(f"wrote {out}")
    return 0


def _cell(args) -> dict:
    return {"dataset": args.dataset, "model": args.model, "optimizer": args.optimizer, "seed": args.seed}


def cmd_train(args) -> int:
    from kryflow.config import cell_spec, cell_training
    from kryflow.pipeline import run_train, setup_logging

    cfg = _config(args.config)
    out = layout.run_dir(args.dataset, args.model, args.optimizer, args.seed)
    with setup_logging(None):
        info = run_train(_cell(args), cell_spec(cfg, args.model, args.optimizer), cell_training(cfg, args.dataset),
                         layout.dataset_path(args.dataset), out, _tracking_json(cfg),
                         system_metrics=bool((cfg.get("tracking") or {}).get("system_metrics")))
    print(json.dumps(info, indent=2, default=float))
    return 0


def cmd_evaluate(args) -> int:
    from kryflow.config import transfer_dataset
    from kryflow.pipeline import run_evaluate, setup_logging

    cfg = _config(args.config)
    transfer = transfer_dataset(cfg, args.dataset)
    with setup_logging(None):
        metrics = run_evaluate(_cell(args), cfg.get("evaluation") or {}, cfg["training"].get("device", "auto"),
                               layout.dataset_path(args.dataset),
                               layout.run_dir(args.dataset, args.model, args.optimizer, args.seed),
                               _tracking_json(cfg), transfer_path=layout.dataset_path(transfer) if transfer else None)
    print(json.dumps(metrics, indent=2, default=float))
    return 0


def cmd_tracking_init(args) -> int:
    cfg = _config(args.config)
    info = json.loads(_tracking_json(cfg).read_text())
    print(json.dumps(info, indent=2))
    return 0


def cmd_server_start(args) -> int:
    from kryflow.tracking import start_server

    info = start_server(args.dir, host=args.host, port=args.port, allowed_hosts=args.allowed_hosts)
    print(f"MLflow server on {info['uri']} (PostgreSQL on 127.0.0.1:{info['pg_port']}); "
          f"pids mlflow={info['mlflow_pid']} postgres={info['postgres_pid']}")
    print(f"point jobs at it:  export MLFLOW_TRACKING_URI={info['uri']}")
    print(f"stop it:           kryflow tracking server stop --dir {args.dir}")
    return 0


def cmd_server_stop(args) -> int:
    from kryflow.tracking import stop_server

    stop_server(args.dir)
    print("stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kryflow",
        description="Recycled-Krylov PDE data, zarr datasets, neural surrogates across optimizers, "
                    "MLflow tracking. Run the whole workflow with `kryflow run` (Snakemake) or one "
                    "stage at a time with the subcommands below.",
    )
    p.add_argument("--version", action="version", version=f"kryflow {kryflow.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="check a workflow config against the schema and registries")
    s.add_argument("config")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("plan", help="jobs, trials, training steps and CPU/GPU-hours of a config, before it runs")
    s.add_argument("config")
    s.add_argument("--costs", default=f"{layout.RESULTS_DIR}/benchmarks/step_costs.json",
                   help="measured costs, read and extended (default: %(default)s)")
    s.add_argument("--no-measure", action="store_true", help="use recorded costs only; report what is missing")
    s.add_argument("--device", default="cpu", help="where to measure steps: cpu, or cuda on a GPU node")
    s.add_argument("--gpu", default="h100", choices=["h100", "a100"],
                   help="GPU the GPU-hours are modelled on when --device is not a GPU (default: %(default)s)")
    s.add_argument("--json", help="write the plan here too")
    s.add_argument("--exact-channels", action="store_true",
                   help="measure every channel count (default: a step recorded at other input/output channels, "
                        "all else equal, prices it)")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("run", help="run the Snakemake workflow (extra args go to snakemake)")
    s.add_argument("--config", default="config/config.yaml")
    s.add_argument("--cores", default="all")
    s.add_argument("extra", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("where", help="print where datasets, figures, summary and MLflow store are")
    s.add_argument("--workdir", default=".")
    s.set_defaults(func=cmd_where)

    _add_data_commands(sub)

    s = sub.add_parser("generate", help="generate one configured dataset (every shard, then the merge)")
    s.add_argument("config")
    s.add_argument("dataset")
    s.add_argument("--out", default=None)
    s.add_argument("--shard", type=int, default=None, help="only this shard's part (data/<dataset>.parts/<k>.zarr)")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("benchmark-solvers", help="solver benchmark on one dataset's sequence")
    s.add_argument("config")
    s.add_argument("dataset")
    s.add_argument("--out", default=None)
    s.set_defaults(func=cmd_benchmark_solvers)

    for name, func, helptext in (("train", cmd_train, "train one grid cell"),
                                 ("evaluate", cmd_evaluate, "evaluate one trained grid cell")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("config")
        s.add_argument("dataset")
        s.add_argument("model")
        s.add_argument("optimizer")
        s.add_argument("seed", type=int)
        s.set_defaults(func=func)

    _add_tracking_commands(sub)
    return p


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("inspect", help="dims, variables, splits, solver statistics, provenance")
    s.add_argument("path")
    s.set_defaults(func=cmd_data_inspect)
    s = data.add_parser("verify", help="recompute checksums; exit 1 naming any corrupted variable")
    s.add_argument("path")
    s.set_defaults(func=cmd_data_verify)
    s = data.add_parser("merge", help="join the shard parts of a dataset into one store")
    s.add_argument("--out", required=True)
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("parts", nargs="+")
    s.set_defaults(func=cmd_data_merge)
    s = data.add_parser("import-neuraloperator", help="import neuraloperator's Darcy .pt files")
    s.add_argument("--train", required=True)
    s.add_argument("--test", required=True)
    s.add_argument("--test-hi", default=None)
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("out")
    s.set_defaults(func=cmd_data_import)
    s = data.add_parser("import-pdebench", help="import a PDEBench 2D Darcy .hdf5 file (nu, tensor, beta)")
    s.add_argument("file")
    s.add_argument("out")
    s.add_argument("--num-samples", type=int, default=None, help="the first N samples only (default: all)")
    s.add_argument("--stride", type=int, default=1, help="every stride-th grid point (128² with 2: 64²)")
    s.add_argument("--val-fraction", type=float, default=0.1)
    s.add_argument("--test-fraction", type=float, default=0.1, help="the file's last samples, as PDEBench tests")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_data_import_pdebench)
    s = data.add_parser("export-well", help="write a store as one HDF5 file in The Well's layout")
    s.add_argument("store")
    s.add_argument("out")
    s.add_argument("--split", choices=["train", "val", "test"], default=None, help="that split only (default: all)")
    s.add_argument("--name", default=None, help="dataset_name attribute (default: the store's name)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_data_export_well)


def _add_tracking_commands(sub) -> None:
    tr = sub.add_parser("tracking", help="MLflow store").add_subparsers(dest="tracking_command", required=True)
    s = tr.add_parser("init", help="create the config's experiment once")
    s.add_argument("config")
    s.set_defaults(func=cmd_tracking_init)
    srv = tr.add_parser("server", help="MLflow server on PostgreSQL").add_subparsers(
        dest="server_command", required=True)
    s = srv.add_parser("start", help="start PostgreSQL + mlflow server (127.0.0.1 unless --host)")
    s.add_argument("--dir", default=".mlflow-server", help="state folder (database, artifacts, logs)")
    s.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 to serve cluster nodes")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--allowed-hosts", default=None,
                   help="host names clients use, e.g. 'login01:*' when binding beyond loopback")
    s.set_defaults(func=cmd_server_start)
    s = srv.add_parser("stop", help="stop the server and PostgreSQL started with --dir")
    s.add_argument("--dir", default=".mlflow-server")
    s.set_defaults(func=cmd_server_stop)


def main(argv=None) -> int:
    from kryflow.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"kryflow: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a clear one-line error for the expected failure kinds
        from kryflow.tracking import TrackingUnavailable
        from kryflow.tracking import ServerError

        data_error = None
        try:
            from kryflow.data import DatasetError as data_error
        except ImportError:
            pass
        if isinstance(exc, (TrackingUnavailable, ServerError)) or (data_error and isinstance(exc, data_error)):
            print(f"kryflow: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
