"""Figures of the tuning protocol, from ``results/tuning/report.json``: performance profiles (the
fraction of workloads on which an optimizer reaches the target within a factor tau of the
fastest), and how good each optimizer gets with a tuning budget of k trials."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kryflow.figures._plots import FigureInputs, _finish, _log_if_positive, _note_figure, register_figure
from kryflow.figures._style import new_figure, optimizer_style, order_optimizers

_UNIT_LABEL = {"seconds": "wall-clock seconds", "steps": "steps", "grad_evals": "gradient evaluations"}


def _report(path: str) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@register_figure("tuning_profiles", "tuning")
def _profiles_figure(inp: FigureInputs, tuning: str) -> Figure:
    """Performance profiles of time to target, one panel per unit, scores in the legend."""
    report = _report(tuning)
    if not report or not report.get("profiles"):
        return _note_figure("performance profiles", "no tuning report")
    units = [u for u in ("seconds", "steps", "grad_evals") if u in report["profiles"]]
    taus = np.asarray(report["taus"])
    fig = new_figure(3.2 * len(units) + 1.8, 3.2)
    axes = fig.subplots(1, len(units), squeeze=False, sharey=True)[0]
    opts = order_optimizers(report["profiles"][units[0]])
    for ax, unit in zip(axes, units):
        for opt in opts:
            style = optimizer_style(opt)
            ax.step(taus, report["profiles"][unit][opt], where="post", color=style["color"],
                    linestyle=style["linestyle"])
        ax.set_xlabel(f"tau (time to target in {_UNIT_LABEL[unit]} / fastest)")
        ax.set_xlim(1.0, float(taus[-1]))
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"time in {_UNIT_LABEL[unit]}")
    axes[0].set_ylabel("fraction of workloads within tau")
    scores = report["scores"][units[0]]
    handles = [Line2D([], [], color=optimizer_style(o)["color"], linestyle=optimizer_style(o)["linestyle"],
                      label=f"{optimizer_style(o)['label']} (score {scores[o]:.2f})") for o in opts]
    _finish(fig, handles, [f"{len(report['workloads'])} workloads; reference {report['reference']}; "
                           f"score: area under the {units[0]} profile on [1, 4] / 3"])
    return fig


@register_figure("tuning_best_of_k", "tuning")
def _best_of_k_figure(inp: FigureInputs, tuning: str) -> Figure:
    """Expected best validation error after k trials, per workload and optimizer."""
    report = _report(tuning)
    if not report or not report.get("workloads"):
        return _note_figure("expected best of k trials", "no tuning report")
    names = sorted(report["workloads"])
    fig = new_figure(3.0 * len(names) + 1.8, 3.2)
    axes = fig.subplots(1, len(names), squeeze=False, sharey=True)[0]
    opts = order_optimizers({o for w in report["workloads"].values() for o in w["optimizers"]})
    notes = []
    for ax, name in zip(axes, names):
        w = report["workloads"][name]
        values: list[float] = []
        for opt in (o for o in opts if o in w["optimizers"]):
            curve = np.array([math.inf if v is None else v for v in w["optimizers"][opt]["best_of_k_val_rel_l2"]])
            k = np.arange(1, curve.size + 1)
            ok = np.isfinite(curve)
            style = optimizer_style(opt)
            if ok.any():
                ax.plot(k[ok], curve[ok], color=style["color"], marker=style["marker"], linestyle=style["linestyle"])
                values += list(curve[ok])
            if not ok.all():
                notes.append(f"{name}, {style['label']}: a diverged/failed trial makes small k infinite")
        ax.axhline(w["target_val_rel_l2"], color="0.4", linewidth=0.8, linestyle=":")
        _log_if_positive(ax, values + [w["target_val_rel_l2"]])
        ax.set_xlabel("trials k")
        ax.set_title(name)
    axes[0].set_ylabel("E[best validation rel. L2 of k trials]")
    handles = [Line2D([], [], color=optimizer_style(o)["color"], marker=optimizer_style(o)["marker"],
                      linestyle=optimizer_style(o)["linestyle"], label=optimizer_style(o)["label"]) for o in opts]
    handles.append(Line2D([], [], color="0.4", linestyle=":", label="workload target"))
    _finish(fig, handles, notes)
    return fig
