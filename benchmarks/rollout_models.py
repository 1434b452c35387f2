"""Next-step models on a Navier-Stokes dataset, judged by rollout: SineNet against the U-Net at a
matched parameter count (and FNO beside), over several seeds, in one run.

Every model trains through kryflow's own trainer on the same dataset, task, optimizer, schedule and
step budget (the config's), one after another per seed (interleaved, so the loaded machine's drift
hits each alike), and is scored by :func:`kryflow.evaluation.evaluate_cell`: the teacher-forced
one-step error and the autoregressive rollout from the first k states of every test trajectory
(rel. L2 per rolled-out step, the correlation time). The U-Net's width is
``matched_width(parameter_count("sinenet", ...), "unet", ...)`` at the dataset's channels, checked
against the config's (``--match`` replaces it). Reported per model: mean, standard deviation and a
95% t-interval over seeds, and the paired SineNet − U-Net differences per seed with theirs; the
persistence forecast (the last given state held) beside. Writes
``results/benchmarks/rollout_models.json``.

Usage:
    nice -n 10 python benchmarks/rollout_models.py --seeds 0 1 2
    nice -n 10 python benchmarks/rollout_models.py --num-samples 48 --max-steps 600 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import interval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("onestep_rel_l2", "rollout_rel_l2_step1", "rollout_rel_l2_step4", "rollout_rel_l2_step8",
           "rollout_rel_l2_last", "rollout_corr_time", "test_rel_l2_mean", "seconds_per_step")


def dataset(config: dict, name: str, num_samples: int | None, data_dir: Path) -> Path:
    """The config's dataset (with ``num_samples`` replaced), generated once into ``data_dir``."""
    from kryflow.config import dataset_spec
    from kryflow.data import DatasetError, dataset_digest
    from kryflow.generation import generate_dataset

    spec = copy.deepcopy(dataset_spec(config, name))
    if num_samples:
        spec["num_samples"] = int(num_samples)
    path = data_dir / f"{name}_{spec['num_samples']}.zarr"
    try:
        dataset_digest(path)
        return path
    except DatasetError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    generate_dataset(path, family=spec["family"], params=spec.get("params"), num_samples=spec["num_samples"],
                     seed=int(spec.get("seed", 0)), chunk_samples=int(spec.get("chunk_samples", 16)),
                     splits=spec.get("splits", (0.75, 0.125, 0.125)), solver=spec.get("solver"), overwrite=True,
                     progress=False)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "navier_stokes.yaml"))
    p.add_argument("--dataset", default="ns2d")
    p.add_argument("--num-samples", type=int, default=None, help="replace the dataset's num_samples")
    p.add_argument("--models", nargs="+", default=["sinenet", "unet", "fno"], help="model labels of the config")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-steps", type=int, default=None, help="replace the training budget (steps)")
    p.add_argument("--task", default=None, help='replace the task, JSON, e.g. \'{"kind": "next_step", "history": 2}\'')
    p.add_argument("--match", action="store_true", help="use the matched U-Net width instead of the config's")
    p.add_argument("--data-dir", default=str(ROOT / "results" / "benchmarks" / "rollout_data"))
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "rollout_models.json"))
    args = p.parse_args(argv)

    import torch

    from kryflow.config import cell_spec, cell_training, load_config
    from kryflow.data import trajectory_layout
    from kryflow.evaluation import evaluate_cell
    from kryflow.models import matched_width, parameter_count
    from kryflow.training import train_cell

    torch.set_num_threads(1)
    config = load_config(args.config)
    if args.task:
        config["datasets"][args.dataset]["task"] = json.loads(args.task)
    path = dataset(config, args.dataset, args.num_samples, Path(args.data_dir))
    training = cell_training(config, args.dataset)
    if args.max_steps:
        training["max_steps"] = args.max_steps
    training.update(device="cpu", checkpoint_every=10**9)
    layout = trajectory_layout(path, training.get("task"))
    cin, cout = layout.in_channels, layout.out_channels
    specs = {m: cell_spec(config, m, "adamw")["model"] for m in args.models}
    counts = {}
    for label, spec in specs.items():
        kw = {k: v for k, v in spec.items() if k != "name"}
        counts[label] = parameter_count(spec["name"], in_channels=cin, out_channels=cout, dim=2, **kw)
    match = None
    if "sinenet" in specs and "unet" in specs:
        depth = specs["unet"].get("depth", 3)
        width, n = matched_width(counts["sinenet"], "unet", in_channels=cin, out_channels=cout, dim=2, depth=depth)
        match = {"sinenet_parameters": counts["sinenet"], "matched_unet_width": width, "matched_unet_parameters": n,
                 "config_unet_width": specs["unet"].get("width")}
        if args.match:
            specs["unet"] = {**specs["unet"], "width": width}
            counts["unet"] = n
        elif specs["unet"].get("width") != width:
            print(f"note: the config's U-Net width {specs['unet'].get('width')} is not the matched {width} "
                  f"({n} parameters against SineNet's {counts['sinenet']}); --match uses it", file=sys.stderr)
    opt = {k: v for k, v in cell_spec(config, args.models[0], "adamw")["optimizer"].items() if k != "name"}

    work = Path(args.data_dir) / "runs"
    runs = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        for label in (args.models if seed % 2 == 0 else list(reversed(args.models))):
            spec = specs[label]
            out = work / f"{label}_s{seed}"
            for f in out.glob("*"):  # afresh: no checkpoint of an earlier run
                f.unlink()
            kw = {k: v for k, v in spec.items() if k != "name"}
            result = train_cell(path, out, model_name=spec["name"], model_kwargs=kw, optimizer_name="adamw",
                                optimizer_kwargs=opt, seed=seed, train_cfg=training, progress=False)
            metrics = evaluate_cell(path, out, cell={"dataset": args.dataset, "model": label, "optimizer": "adamw",
                                                     "seed": seed}, device="cpu")
            runs.append({"model": label, "seed": seed, "parameters": counts[label], "status": result["status"],
                         **{c: metrics.get(c) for c in COLUMNS},
                         "rollout_rel_l2": metrics.get("rollout_rel_l2"), "rollout_corr": metrics.get("rollout_corr")})
            print(f"{label:>8} seed {seed}: one step {metrics['onestep_rel_l2']:.4f}, rollout last "
                  f"{metrics['rollout_rel_l2_last']:.4f}, corr time {metrics['rollout_corr_time']:.4g}, "
                  f"{result['seconds_per_step']:.3f} s/step", flush=True)
            persistence = metrics.get("rollout_persistence_rel_l2")

    summary = {label: {c: interval([r[c] for r in runs if r["model"] == label]) for c in COLUMNS}
               for label in args.models}
    paired = None
    if "sinenet" in specs and "unet" in specs:
        by = {(r["model"], r["seed"]): r for r in runs}
        paired = {c: interval([by[("sinenet", s)][c] - by[("unet", s)][c] for s in args.seeds]) for c in COLUMNS}
    record = {
        "date": time.strftime("%Y-%m-%d"), "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": platform.platform(), "threads": 1, "seconds": time.perf_counter() - t0,
        "dataset": {"name": args.dataset, "path": str(path), "params": config["datasets"][args.dataset].get("params"),
                    "num_samples": args.num_samples or config["datasets"][args.dataset]["num_samples"],
                    "states": layout.num_states, "task": training.get("task")},
        "training": training, "optimizer": opt, "models": specs, "parameters": counts, "match": match,
        "persistence_rel_l2": persistence, "runs": runs, "summary": summary, "sinenet_minus_unet": paired,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2, default=float))
    print(f"\n{'model':>8} {'params':>8} " + " ".join(f"{c[:22]:>24}" for c in COLUMNS[:6]))
    for label in args.models:
        s = summary[label]
        print(f"{label:>8} {counts[label]:>8} " + " ".join(
            f"{s[c]['mean']:>10.4g} ±{(s[c]['ci95'][1] - s[c]['mean']):<11.2g}" for c in COLUMNS[:6]))
    if paired:
        print(f"{'S - U':>8} {'':>8} " + " ".join(
            f"{paired[c]['mean']:>10.4g} ±{(paired[c]['ci95'][1] - paired[c]['mean']):<11.2g}" for c in COLUMNS[:6]))
    print(f"persistence: {persistence}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
