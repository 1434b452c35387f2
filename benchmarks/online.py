"""Online against offline training: the same model and optimizer setting, at equal total wall-clock
with generation counted, and at equal gradient steps, over seeds, on Darcy and heat at 64².

Offline spends part of its wall-clock budget making its stored training set (N samples, generated
in two shard processes at once on the two cores, merged: the workflow's fastest way) and trains
for the rest on it (torch on both cores); it is given every N of ``--sizes`` (the shipped configs'
96 and 1200 included) and judged at its best N. Online trains for the whole budget from one
generator process (``training.data: online``, reservoir buffer, free mode), the trainer on the
other core. Both validate and are tested on one shared evaluation store (another seed of the same
family; its train split gives every arm the same normalisation statistics, as a stored train
split gives an online cell its own); the stream draws indices after the evaluation store's.

A wall budget becomes a step budget: each kind of arm's wall-clock rate (steps a second,
validation, start-up and teardown included) is measured on a short probe and then on one
calibration run as long as an arm, and every arm trains ``floor(rate x (budget - its
generation))`` steps under a cosine schedule (so that every schedule completes); the measured
walls are reported beside. At equal gradient steps the online arm trains
the best offline arm's steps.

Also measured (``keeps_up``): one generator alone (samples a second on one core), the trainer alone
on stored data (samples it consumes a second, batch 8, one thread), and both in the online runs
(what the generator made and the trainer consumed a second while sharing the two cores).

Reported per family and arm: test rel. L2 (mean, std, 95% t-interval over seeds), steps, samples
seen (unique) and reuse, and where the time went (generation, training steps, waiting, the rest).
Writes ``results/benchmarks/online.json`` and the figure ``results/benchmarks/online.png`` (error
against wall time, both arms).

Usage:
    nice -n 10 python benchmarks/online.py --budget 120 --seeds 0 1 2
    nice -n 10 python benchmarks/online.py --families darcy --budget 30 --seeds 0 --sizes 96 384   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import interval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FAMILIES = {
    # the shipped config's darcy2d and heat2d at 64²
    "darcy": {"family": "darcy", "params": {"n": 64, "coefficient": "binary"}, "seed": 0},
    "heat": {"family": "heat", "params": {"n": 64, "scheme": "crank_nicolson", "dt": 2.5e-4, "num_steps": 8,
                                          "save_every": 2}, "seed": 1},
}
MODEL = {"width": 16, "modes": 8, "layers": 3}
OPTIMIZER = {"lr": 3e-3, "weight_decay": 1e-4}
BATCH = 8
ONLINE = {"generators": 1, "buffer": 512, "watermark": 64, "policy": "reservoir", "queue": 16, "block": 64}


# ------------------------------------------------------------------------------ data
def _shard(args) -> None:
    from kryflow.generation import generate_dataset

    path, spec, n, shards, k = args
    generate_dataset(path, family=spec["family"], params=spec["params"], num_samples=n, seed=spec["seed"],
                     chunk_samples=16, splits=(1.0, 0.0, 0.0), progress=False, shards=shards, shard=k)


def offline_store(spec: dict, n: int, out: Path) -> tuple[Path, float]:
    """N samples of the family, all train, made as the workflow makes them fastest here: two shard
    processes at once (one per core), then merged. Returns the store and the wall seconds, process
    start-up included (a workflow job pays it too)."""
    import multiprocessing as mp

    from kryflow.data import merge_dataset

    path = out / f"{spec['family']}_offline_{n}.zarr"
    shards = 2 if n >= 32 else 1
    parts = [out / f"{path.stem}.part{k}.zarr" for k in range(shards)]
    t0 = time.perf_counter()
    if shards == 1:
        _shard((path, spec, n, 1, 0))
    else:
        with ProcessPoolExecutor(shards, mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_shard, [(parts[k], spec, n, shards, k) for k in range(shards)]))
        merge_dataset(parts, path)
    seconds = time.perf_counter() - t0
    for p in parts:
        shutil.rmtree(p, ignore_errors=True)
    return path, seconds


def evaluation_store(spec: dict, num: int, out: Path) -> Path:
    """The shared validation and test samples (another seed of the family): half train (for the
    normalisation statistics only), a quarter validation, a quarter test."""
    from kryflow.generation import generate_dataset

    path = out / f"{spec['family']}_eval.zarr"
    generate_dataset(path, family=spec["family"], params=spec["params"], num_samples=num, seed=spec["seed"] + 1000,
                     chunk_samples=16, splits=(0.5, 0.25, 0.25), progress=False)
    return path


# --------------------------------------------------------------------------- training
class _Recorder:
    """A tracker stand-in for train_cell: the wall time of every validation row."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.points: list[tuple[float, int, float]] = []

    def log_metrics(self, row, step=None):
        if "val_rel_l2" in row:
            self.points.append((time.perf_counter() - self.t0, int(step or 0), float(row["val_rel_l2"])))

    def flush(self):
        pass


def test_rel_l2(model_pt: Path, eval_path: Path) -> float:
    """Mean relative L2 of a saved model on the evaluation store's test split (as the workflow's
    held-out and fine-tuning variants score theirs)."""
    from kryflow.pipeline import _test_rel_l2

    return _test_rel_l2(model_pt, eval_path)


def train_arm(kind: str, eval_path: Path, seed: int, steps: int, eval_every: int, work: Path,
              train_store: Path | None = None, threads: int = 2) -> dict:
    """One run: ``offline`` on ``train_store``'s samples, or ``online`` from a stream; validated and
    tested on the evaluation store. Returns steps, walls, the validation curve, the test error and
    (online) the stream's record."""
    import torch

    from kryflow.data import make_loader
    from kryflow.generation import OnlineStream
    from kryflow.training import train_cell

    torch.set_num_threads(threads)
    out = Path(tempfile.mkdtemp(dir=work))
    cfg = {"batch_size": BATCH, "max_steps": int(steps), "eval_every": int(eval_every), "checkpoint_every": 10**9,
           "loss": "rel_l2", "scheduler": {"kind": "cosine"}, "device": "cpu", "divergence_factor": 1000.0}
    rec = _Recorder()
    record = None
    if kind == "online":
        cfg.update(data="online", online=dict(ONLINE))
        with OnlineStream(eval_path, cfg, seed) as source:
            result = train_cell(eval_path, out, model_name="fno", model_kwargs=MODEL, optimizer_name="adamw",
                                optimizer_kwargs=OPTIMIZER, seed=seed, train_cfg=cfg, tracker=rec, progress=False,
                                train_source=source)
            record = source.summary()
    else:
        source = make_loader(train_store, "train", batch_size=BATCH, shuffle=True, seed=seed, in_memory=True)
        result = train_cell(eval_path, out, model_name="fno", model_kwargs=MODEL, optimizer_name="adamw",
                            optimizer_kwargs=OPTIMIZER, seed=seed, train_cfg=cfg, tracker=rec, progress=False,
                            train_source=source)
    wall = time.perf_counter() - rec.t0
    test = test_rel_l2(out / "model.pt", eval_path)
    shutil.rmtree(out, ignore_errors=True)
    run = {"status": result["status"], "steps": result["steps"], "wall_seconds": wall,
           "train_step_seconds": result["train_seconds"], "seconds_per_step": result["seconds_per_step"],
           "curve": rec.points, "test_rel_l2": test}
    if record is not None:
        run["stream"] = {k: v for k, v in record.items() if k not in ("fill", "wait", "rejected_indices")}
        run["trainer_wait_seconds"] = record["trainer_wait_seconds"]
        run["unique_samples_seen"] = record["unique_samples_seen"]
        run["reuse_factor"] = record["reuse_factor"]
    return run


def wall_rate(run: dict) -> tuple[float, float]:
    """Steps a wall second between the first and the last validation row (validation included), and
    the wall seconds before the first step (start-up: spawning and warming up generators, filling
    the watermark) estimated from it."""
    (t1, s1, _), (t2, s2, _) = run["curve"][0], run["curve"][-1]
    rate = (s2 - s1) / max(t2 - t1, 1e-9)
    return rate, max(0.0, t1 - s1 / rate)


# ------------------------------------------------------------------- keeping up
def generator_alone(spec: dict, first: int, num: int) -> dict:
    """One generator on one core: samples a second (draw + solve), after its warm-up."""
    from kryflow.generation import SampleGenerator

    gen = SampleGenerator(spec["family"], spec["params"], spec["seed"] + 1000, {"blas_threads": 1})
    gen.warm_up()
    list(gen.solve_all(gen.draw(first, first + 4)))  # first solves: one-time set-ups
    t0 = time.perf_counter()
    solved = list(gen.solve_all(gen.draw(first + 4, first + 4 + num)))
    seconds = time.perf_counter() - t0
    return {"samples": len(solved), "seconds": seconds, "samples_per_second": len(solved) / seconds,
            "solver": gen.solver_config}


def trainer_alone(eval_path: Path, train_store: Path, steps: int = 60) -> dict:
    """The trainer on stored data, one thread: samples it consumes a second (steps, no validation)."""
    run = train_arm("offline", eval_path, 0, steps, steps, Path(tempfile.gettempdir()), train_store, threads=1)
    return {"steps": run["steps"], "seconds_per_step": run["seconds_per_step"],
            "samples_per_second": BATCH / run["seconds_per_step"]}


# --------------------------------------------------------------------------- report
def summarise(runs: list[dict]) -> dict:
    out = {"test_rel_l2": interval([r["test_rel_l2"] for r in runs]),
           "wall_seconds": interval([r["wall_seconds"] for r in runs]),
           "steps": interval([r["steps"] for r in runs]),
           "train_step_seconds": interval([r["train_step_seconds"] for r in runs])}
    for r in runs:  # where the wall time went besides generation, training steps and waiting for samples
        r["other_seconds"] = r["wall_seconds"] - r["train_step_seconds"] - r.get("trainer_wait_seconds", 0.0)
    out["other_seconds"] = interval([r["other_seconds"] for r in runs])
    for key in ("generation_seconds", "trainer_wait_seconds", "unique_samples_seen", "reuse_factor", "epochs"):
        if key in runs[0]:
            out[key] = interval([r[key] for r in runs])
    return out


def figure(results: dict, path: Path) -> None:
    """Validation error against wall time (offline curves start after their generation), one panel
    per family; markers: each run's test error at its end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(results["families"])
    fig, axes = plt.subplots(1, len(fams), figsize=(5.5 * len(fams), 4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        arms = results["families"][fam]["wall"]
        for i, (label, arm) in enumerate(arms.items()):
            online = label == "online"
            color = "black" if online else f"C{i}"
            for j, run in enumerate(arm["runs"]):
                offset = run.get("generation_seconds", 0.0)
                ax.plot([offset + t for t, _, _ in run["curve"]], [v for _, _, v in run["curve"]], color=color,
                        lw=2 if online else 1, alpha=0.8, label=label if j == 0 else None)
                ax.plot([run["total_wall_seconds"]], [run["test_rel_l2"]], marker="*" if online else "o",
                        ms=10 if online else 5, color=color, ls="none")
        ax.set_yscale("log")
        ax.set_xlabel("wall seconds (offline: its generation first)")
        ax.set_ylabel("validation rel. L2 (markers: test at the end)")
        ax.set_title(f"{fam} 64², budget {results['budget_seconds']:g} s")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--budget", type=float, default=120.0, help="wall seconds per arm, generation included")
    p.add_argument("--sizes", nargs="+", type=int, default=[96, 384, 1200, 4800], help="offline num_samples")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--eval-samples", type=int, default=256)
    p.add_argument("--work", default=str(ROOT / "results" / "benchmarks" / "online_data"))
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "online.json"))
    args = p.parse_args(argv)

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t_start = time.perf_counter()
    results = {"date": time.strftime("%Y-%m-%d"), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
               "host": platform.node(), "cpus": __import__("os").cpu_count(), "budget_seconds": args.budget,
               "model": {"name": "fno", **MODEL}, "optimizer": {"name": "adamw", **OPTIMIZER}, "batch_size": BATCH,
               "online": ONLINE, "sizes": args.sizes, "seeds": args.seeds, "families": {}}
    for fam in args.families:
        spec = FAMILIES[fam]
        print(f"[{fam}] evaluation store, offline stores", flush=True)
        eval_path = evaluation_store(spec, args.eval_samples, work)
        stores = {n: offline_store(spec, n, work) for n in args.sizes}
        gen_seconds = {n: s for n, (_, s) in stores.items()}
        print(f"[{fam}] generation seconds {gen_seconds}", flush=True)
        # wall-clock rates of the two kinds of arm (short probes), turning the wall budget into steps
        probe_off = train_arm("offline", eval_path, 99, 60, 10, work, stores[args.sizes[-1]][0])
        probe_on = train_arm("online", eval_path, 99, 60, 10, work)
        rate_off, _ = wall_rate(probe_off)
        rate_on, start_on = wall_rate(probe_on)
        print(f"[{fam}] probe steps/s offline {rate_off:.2f}, online {rate_on:.2f} (start-up {start_on:.1f} s)",
              flush=True)
        # the probes validate every 10 steps, an arm every tenth of its steps: calibrate each kind
        # with one run as long as an arm (its validation cadence, start-up and teardown included)
        # and scale the steps to the wall it took
        left_off = args.budget - gen_seconds[args.sizes[0]]
        steps = max(10, int(rate_off * left_off))
        cal = train_arm("offline", eval_path, 98, steps, max(1, steps // 10), work, stores[args.sizes[0]][0])
        rate_off = steps / cal["wall_seconds"]
        steps = max(10, int(rate_on * (args.budget - start_on)))
        cal = train_arm("online", eval_path, 98, steps, max(1, steps // 10), work, threads=1)
        rate_on, start_on = steps / cal["wall_seconds"], 0.0
        print(f"[{fam}] calibrated steps/s offline {rate_off:.2f}, online {rate_on:.2f} (wall per step, all in)",
              flush=True)
        res = {"generation_seconds": gen_seconds, "offline_steps_per_second": rate_off,
               "online_steps_per_second": rate_on, "online_start_seconds": start_on,
               "keeps_up": {"generator_alone": generator_alone(spec, args.eval_samples + 10_000, 64),
                            "trainer_alone": trainer_alone(eval_path, stores[args.sizes[-1]][0]) if fam == "darcy"
                            else None},
               "wall": {}, "steps": {}}
        arms: dict[str, list] = {f"offline N={n}": [] for n in args.sizes}
        arms["online"] = []
        for seed in args.seeds:  # interleaved: the loaded machine's drift hits every arm alike
            for n in args.sizes:
                left = args.budget - gen_seconds[n]
                if left <= 5:
                    continue  # generation alone spends the budget
                steps = max(1, int(rate_off * left))
                run = train_arm("offline", eval_path, seed, steps, max(1, steps // 10), work, stores[n][0])
                run["generation_seconds"] = gen_seconds[n]
                run["train_samples"] = n
                run["epochs"] = run["steps"] * BATCH / n
                run["total_wall_seconds"] = run["wall_seconds"] + gen_seconds[n]
                arms[f"offline N={n}"].append(run)
                print(f"[{fam}] seed {seed} offline N={n}: {run['steps']} steps, wall {run['total_wall_seconds']:.1f}"
                      f" s, test {run['test_rel_l2']:.4f}", flush=True)
            steps = max(1, int(rate_on * (args.budget - start_on)))
            run = train_arm("online", eval_path, seed, steps, max(1, steps // 10), work, threads=1)
            run["total_wall_seconds"] = run["wall_seconds"]
            arms["online"].append(run)
            print(f"[{fam}] seed {seed} online: {run['steps']} steps, wall {run['wall_seconds']:.1f} s, test "
                  f"{run['test_rel_l2']:.4f}, unique {run['unique_samples_seen']}", flush=True)
        res["wall"] = {k: {"runs": v, **summarise(v)} for k, v in arms.items() if v}
        best = min((k for k in res["wall"] if k != "online"), key=lambda k: res["wall"][k]["test_rel_l2"]["mean"])
        res["best_offline"] = best
        # equal gradient steps: online trains the best offline arm's steps
        steps_runs = []
        for seed, off in zip(args.seeds, res["wall"][best]["runs"]):
            run = train_arm("online", eval_path, seed, off["steps"], max(1, off["steps"] // 10), work, threads=1)
            steps_runs.append(run)
        res["steps"] = {"steps": [r["steps"] for r in steps_runs], "online": {"runs": steps_runs,
                                                                              **summarise(steps_runs)},
                        best: {k: v for k, v in res["wall"][best].items() if k != "runs"}}
        off, on = res["wall"][best]["test_rel_l2"]["mean"], res["wall"]["online"]["test_rel_l2"]["mean"]
        res["online_vs_best_offline_at_equal_wall"] = {"offline": off, "online": on,
                                                        "reduction": 1.0 - on / off}
        on_steps = res["steps"]["online"]["test_rel_l2"]["mean"]
        res["online_vs_best_offline_at_equal_steps"] = {"offline": off, "online": on_steps,
                                                         "reduction": 1.0 - on_steps / off}
        online_runs = res["wall"]["online"]["runs"]
        res["keeps_up"]["during_online_runs"] = {
            "generator_samples_per_second_busy": interval([r["stream"]["generator_samples_per_second"]
                                                           for r in online_runs]),
            "stream_samples_per_second": interval([r["stream"]["stream_samples_per_second"] for r in online_runs]),
            "trainer_samples_per_second": interval([r["steps"] * BATCH / r["wall_seconds"] for r in online_runs]),
            "trainer_wait_fraction": interval([r["trainer_wait_seconds"] / r["wall_seconds"] for r in online_runs]),
            "generator_backpressure_seconds": interval([r["stream"]["generator_backpressure_seconds"]
                                                        for r in online_runs])}
        results["families"][fam] = res
        print(f"[{fam}] best offline {best}: {off:.4f}; online {on:.4f} ({100 * (1 - on / off):+.1f}% lower)",
              flush=True)
    results["seconds"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    figure(results, out.with_suffix(".png"))
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
