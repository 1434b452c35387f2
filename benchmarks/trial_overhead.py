"""Overhead per tuning trial of a finished workflow run, from its own rule benchmarks: the wall
seconds of the jobs that trained trials (Snakemake's ``benchmark:`` files) minus the seconds the
trials spent in training steps (their ``train.json``), per trial.

Reads both layouts: one job per trial (rule ``tune_trial``, before trials were batched) and one
job per batch (rule ``tune_batch``). Pass several working directories to compare runs side by side:

    .venv/bin/python benchmarks/trial_overhead.py /path/to/run-before /path/to/run-after \\
        --out results/benchmarks/trial_overhead.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def _wall(tsv: Path) -> float:
    with open(tsv) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return float(rows[-1]["s"])


def overhead(workdir: Path) -> dict:
    """Per-trial overhead of the tuning jobs of one run (its working directory)."""
    rules = workdir / "results" / "benchmarks" / "rules"
    tuning = workdir / "results" / "tuning"
    jobs = []
    for tsv in sorted((rules / "tune_batch").rglob("*.tsv")):
        rel = tsv.relative_to(rules / "tune_batch")
        if not (tuning / rel.parent / f"{tsv.stem}.json").exists():
            continue  # a batch being rerun: its benchmark is the old job's, its trials are not back yet
        batch = json.loads((tuning / rel.parent / f"{tsv.stem}.json").read_text())
        trials = [t for t in batch["trials"] if not t.get("kept")]
        dirs = [tuning / rel.parent / f"trial{t['trial']}" for t in trials]
        jobs.append({"job": str(rel.with_suffix("")), "trials": len(dirs), "wall": _wall(tsv), "dirs": dirs})
    for tsv in sorted((rules / "tune_trial").rglob("*.tsv")):
        rel = tsv.relative_to(rules / "tune_trial")
        jobs.append({"job": str(rel.with_suffix("")), "trials": 1, "wall": _wall(tsv),
                     "dirs": [tuning / rel.parent / f"trial{tsv.stem}"]})
    out = []
    for j in jobs:
        train = sum(json.loads((d / "train.json").read_text()).get("train_seconds") or 0.0 for d in j.pop("dirs"))
        out.append({**j, "train_seconds": train, "overhead_per_trial": (j["wall"] - train) / max(1, j["trials"])})
    trials = sum(j["trials"] for j in out)
    wall = sum(j["wall"] for j in out)
    train = sum(j["train_seconds"] for j in out)
    return {"workdir": str(workdir), "jobs": len(out), "trials": trials, "wall_seconds": wall,
            "train_seconds": train, "overhead_per_trial": (wall - train) / max(1, trials), "per_job": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    results = [overhead(w) for w in args.workdirs]
    for r in results:
        print(f"{r['workdir']}: {r['jobs']} jobs, {r['trials']} trials, {r['wall_seconds']:.1f} s in jobs, "
              f"{r['train_seconds']:.1f} s training: {r['overhead_per_trial']:.2f} s overhead per trial")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
