"""The comparison's report: every workload's target and budget, every optimizer's time to target
(the median over studies of its best trial's, as AlgoPerf scores external tuning), its reruns'
test errors with bootstrap intervals, its dependence on the tuning budget, and across workloads
the performance profiles, their scores and the speed-up over the reference."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._select import reference_target
from ._report import (bootstrap_interval, expected_best_of_k, geometric_mean_speedup, performance_profile,
                      profile_score, time_to_target)

__all__ = ["TAUS", "UNITS", "build_report"]

#: Time is measured in these units; profiles and scores are given for each.
UNITS = ("seconds", "steps", "grad_evals")
TAUS = np.linspace(1.0, 4.0, 301)


def _history(run_dir: Path):
    import pandas as pd

    path = run_dir / "history.csv"
    return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _times(run_dir: Path, target: float, status: str) -> dict[str, float]:
    hit = time_to_target(_history(run_dir), target) if status == "finished" else None
    key = {"seconds": "seconds", "steps": "step", "grad_evals": "grad_evals"}
    return {u: (float(hit[key[u]]) if hit else math.inf) for u in UNITS}


def stopped_by(train: Mapping, budget: Mapping) -> str:
    """What ended a run: ``diverged`` or ``failed``, else the budget it spent first (``steps``,
    ``seconds``, ``grad_evals``), from its ``train.json`` and its training budget."""
    status = train.get("status", "failed")
    if status != "finished":
        return status
    if budget.get("max_grad_evals") and (train.get("grad_evals") or 0) >= budget["max_grad_evals"]:
        return "grad_evals"
    if budget.get("max_seconds") and (train.get("train_seconds") or 0) >= budget["max_seconds"] \
            and (train.get("steps") or 0) < int(budget.get("max_steps") or 0):
        return "seconds"
    return "steps"


def _why_not_reached(runs: Sequence[Mapping], trials: Sequence[Mapping], reached: bool) -> str | None:
    """Why an optimizer did not reach the target in its studies (the median time to target the
    table shows): every trial diverged or failed, its steps were too slow for the wall budget, or
    it spent its whole step (gradient-evaluation) budget short of the target, as its reruns ended;
    with how many reruns reached it nonetheless (a selected setting near the target)."""
    if reached:
        return None
    if trials and all(t["status"] != "finished" for t in trials):
        return "every trial diverged or failed"
    ends = [r["stopped_by"] for r in runs] or ["steps"]
    top = max(set(ends), key=ends.count)
    why = {"seconds": "wall-clock budget spent before its step budget (slow steps)",
           "steps": "whole step budget spent above the target",
           "grad_evals": "whole gradient-evaluation budget spent above the target",
           "diverged": "its reruns diverged", "failed": "its reruns failed"}[top]
    hit = sum(r["time_to_target"]["steps"] is not None for r in runs)
    return why + (f" (in its studies; {hit} of {len(runs)} reruns reached it)" if hit else "")


def _optimizer(selected: Mapping, trial_dirs: Sequence[Path], reruns: Sequence[Path], target: float) -> dict:
    trials = selected["trials"]
    per_trial = [_times(trial_dirs[t["trial"]], target, t["status"]) for t in trials]
    studies = [{**s, "time_to_target": {u: _finite(per_trial[s["trial"]][u]) for u in UNITS}} for s in selected["studies"]]
    median = {u: float(np.median([per_trial[s["trial"]][u] for s in selected["studies"]])) for u in UNITS}
    runs = []
    for r in reruns:
        metrics = json.loads((r / "metrics.json").read_text()) if (r / "metrics.json").exists() else {}
        train = json.loads((r / "train.json").read_text()) if (r / "train.json").exists() else {}
        cfg = json.loads((r / "effective_config.json").read_text()) if (r / "effective_config.json").exists() else {}
        runs.append({"run": str(r), "status": train.get("status", "failed"),
                     "test_rel_l2": metrics.get("test_rel_l2_mean"),
                     "time_to_target": {u: _finite(v) for u, v in _times(r, target, train.get("status")).items()},
                     "seconds_per_step": train.get("seconds_per_step"), "peak_memory_mb": train.get("peak_memory_mb"),
                     "steps": train.get("steps"), "stopped_by": stopped_by(train, cfg.get("training") or {})})
    errs = [x["test_rel_l2"] for x in runs if x["status"] == "finished" and x["test_rel_l2"] is not None]
    return {"time_to_target": {u: _finite(v) for u, v in median.items()}, "studies": studies,
            "seconds_per_step": _median_of(runs, "seconds_per_step"), "peak_memory_mb": _median_of(runs, "peak_memory_mb"),
            "selected_trial": selected["selected"], "setting": selected["setting"], "reruns": runs,
            "test_rel_l2_mean": float(np.mean(errs)) if errs else None,
            "test_rel_l2_ci95": list(bootstrap_interval(errs)) if errs else None,
            "best_of_k_val_rel_l2": [_finite(v) for v in expected_best_of_k([t["best_val_rel_l2"] for t in trials])],
            "diverged_or_failed_trials": sum(t["status"] != "finished" for t in trials),
            "not_reached_because": _why_not_reached(runs, trials, math.isfinite(median["steps"]))}


def _median_of(runs: Sequence[Mapping], key: str) -> float | None:
    values = [r[key] for r in runs if r["status"] == "finished" and r.get(key) is not None]
    return float(np.median(values)) if values else None


def build_report(reference: str, budgets: Sequence[str | Path], selections: Sequence[str | Path],
                 trial_root: str | Path, runs_root: str | Path, seeds: Sequence[int],
                 finetune: Sequence[str | Path] = (), heldout: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The report from the protocol's files.

    **Arguments:**
        reference: the reference optimizer's label.
        budgets: every workload's ``budget.json``. selections: every ``selected.json``.
        trial_root, runs_root: ``results/tuning`` and ``results/runs``.
        seeds: the reruns' seeds.
        finetune: every fine-tuning run's ``metrics.json``.
        heldout: every held-out variant run's ``metrics.json`` (its ``history.csv`` beside it).

    An optimizer whose runs on a held-out variant of a workload miss the variant's target (the
    median over its seeds never reaches it within the workload's budget) is scored on that
    workload as never reaching the target, as AlgoPerf scores held-out workloads; its
    unpenalised times stay in ``time_to_target_unpenalised``.

    **Returns:** a JSON-ready dict (``workloads``, ``profiles``, ``scores``, ``speedup``,
    ``finetune``, ``heldout``).
    """
    from kryflow import layout

    budget = {(b["dataset"], b["model"]): b for b in (json.loads(Path(p).read_text()) for p in budgets)}
    workloads: dict[str, dict] = {}
    for p in selections:
        sel = json.loads(Path(p).read_text())
        d, m, o = sel["dataset"], sel["model"], sel["optimizer"]
        b = budget[(d, m)]
        trial_dirs = [layout.trial_dir(d, m, o, t, tuning_root=trial_root) for t in range(len(sel["trials"]))]
        reruns = [layout.run_dir(d, m, o, s, runs_root=runs_root) for s in seeds]
        w = workloads.setdefault(f"{d}/{m}", {"dataset": d, "model": m, "target_val_rel_l2": b["target_val_rel_l2"],
                                              "budget": {k: b[k] for k in ("max_steps", "max_seconds", "kind")},
                                              "optimizers": {}})
        w["optimizers"][o] = _optimizer(sel, trial_dirs, reruns, b["target_val_rel_l2"])
    held = _heldout([Path(p) for p in heldout], reference)
    _penalise(workloads, held)
    _versus_reference(workloads, reference)
    return {"reference": reference, "taus": TAUS.tolist(), "workloads": workloads, **_across(workloads, reference),
            "finetune": _finetune([json.loads(Path(p).read_text()) for p in finetune], reference), "heldout": held}


def _versus_reference(workloads: Mapping[str, dict], reference: str) -> None:
    """Per workload and optimizer, what the 95% intervals of the reruns' test errors say against
    the reference's: ``lower`` or ``higher`` where the intervals are apart, ``not resolved`` where
    they overlap (in place, ``test_vs_reference``)."""
    for w in workloads.values():
        ref = (w["optimizers"].get(reference) or {}).get("test_rel_l2_ci95")
        for o, r in w["optimizers"].items():
            ci = r.get("test_rel_l2_ci95")
            if o == reference or ref is None or ci is None:
                r["test_vs_reference"] = None
            elif ci[1] < ref[0]:
                r["test_vs_reference"] = "lower"
            elif ci[0] > ref[1]:
                r["test_vs_reference"] = "higher"
            else:
                r["test_vs_reference"] = "not resolved"


def _heldout(paths: Sequence[Path], reference: str) -> dict[str, Any]:
    """Per held-out variant workload: its target (the reference's median best validation error
    there) and, per optimizer, the median time to it over seeds and whether that is finite."""
    out: dict[str, Any] = {}
    for p in paths:
        r = json.loads(p.read_text())
        out.setdefault(f"{r['dataset']}/{r['model']}", []).append((r, p.parent))
    report: dict[str, Any] = {}
    for name, runs in sorted(out.items()):
        first = runs[0][0]
        ref = [r["best_val_rel_l2"] for r, _ in runs if r["optimizer"] == reference]
        target = reference_target(ref) if ref else None
        w = report[name] = {"source": f"{first['source']}/{first['model']}", "target_val_rel_l2": _finite(target),
                            "optimizers": {}}
        by_opt: dict[str, list] = {}
        for r, d in runs:
            by_opt.setdefault(r["optimizer"], []).append((r, d))
        for o, rs in by_opt.items():
            times = [_times(d, target, r["status"]) if target is not None else {u: math.inf for u in UNITS}
                     for r, d in rs]
            median = {u: float(np.median([t[u] for t in times])) for u in UNITS}
            errs = [r["test_rel_l2"] for r, _ in rs if r["status"] == "finished" and math.isfinite(r["test_rel_l2"])]
            w["optimizers"][o] = {"time_to_target": {u: _finite(v) for u, v in median.items()},
                                  "reached": bool(target is not None and math.isfinite(median["steps"])),
                                  "test_rel_l2_mean": float(np.mean(errs)) if errs else None,
                                  "test_rel_l2_ci95": list(bootstrap_interval(errs)) if errs else None,
                                  "statuses": [r["status"] for r, _ in rs], "budget_kind": rs[0][0]["budget_kind"]}
    return report


def _penalise(workloads: Mapping[str, dict], heldout: Mapping[str, Mapping]) -> None:
    """AlgoPerf's held-out rule: a workload's time to target becomes 'never' for an optimizer
    that misses the target of one of its held-out variants (none when the variant has no
    target: the reference itself never finished there)."""
    for name, h in heldout.items():
        w = workloads.get(h["source"])
        if w is None or h["target_val_rel_l2"] is None:
            continue
        for o, r in h["optimizers"].items():
            if o in w["optimizers"] and not r["reached"]:
                opt = w["optimizers"][o]
                opt.setdefault("time_to_target_unpenalised", dict(opt["time_to_target"]))
                opt["time_to_target"] = {u: None for u in UNITS}
                opt.setdefault("heldout_missed", []).append(name)


def _finetune(runs: Sequence[Mapping], reference: str) -> dict[str, Any]:
    """Per shifted workload: the pretrained model's test error there, and each optimizer's after
    fine-tuning (mean and bootstrap interval over seeds), against the reference's."""
    out: dict[str, Any] = {}
    for r in runs:
        w = out.setdefault(f"{r['dataset']}/{r['model']}", {"runs": []})
        w["runs"].append(r)
    for w in out.values():
        runs_w = w.pop("runs")
        w["before_test_rel_l2"] = float(np.mean([r["before_test_rel_l2"] for r in runs_w]))
        opts: dict[str, Any] = {}
        for r in runs_w:
            opts.setdefault(r["optimizer"], []).append(r)
        w["optimizers"] = {}
        for o, rs in opts.items():
            errs = [r["test_rel_l2"] for r in rs if r["status"] == "finished" and math.isfinite(r["test_rel_l2"])]
            w["optimizers"][o] = {"test_rel_l2_mean": float(np.mean(errs)) if errs else None,
                                  "test_rel_l2_ci95": list(bootstrap_interval(errs)) if errs else None,
                                  "statuses": [r["status"] for r in rs], "budget_kind": rs[0]["budget_kind"],
                                  "grad_evals": float(np.mean([r["grad_evals"] for r in rs]))}
        ref = w["optimizers"].get(reference, {}).get("test_rel_l2_mean")
        w["target_test_rel_l2"] = ref
        for o in w["optimizers"].values():
            o["reached_reference"] = bool(ref is not None and o["test_rel_l2_mean"] is not None
                                          and o["test_rel_l2_mean"] <= ref * (1 + 1e-9))
            o["improved"] = bool(o["test_rel_l2_mean"] is not None and o["test_rel_l2_mean"] < w["before_test_rel_l2"])
    return out


def _across(workloads: Mapping[str, Mapping], reference: str) -> dict[str, Any]:
    opts = sorted({o for w in workloads.values() for o in w["optimizers"]})
    out: dict[str, Any] = {"profiles": {}, "scores": {}, "speedup": {}}
    for u in UNITS:
        times = {o: {k: (w["optimizers"][o]["time_to_target"][u] if o in w["optimizers"] else None) or math.inf
                     for k, w in workloads.items()} for o in opts}
        rho = performance_profile(times, TAUS)
        out["profiles"][u] = {o: r.tolist() for o, r in rho.items()}
        out["scores"][u] = {o: profile_score(r, TAUS) for o, r in rho.items()}
        if reference in times:
            out["speedup"][u] = {o: {"geometric_mean": _finite(g), "workloads": n}
                                 for o, (g, n) in geometric_mean_speedup(times, reference).items()}
    return out
