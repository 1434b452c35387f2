"""Surrogate warm start against a zero start and the previous solution, side by side in one process.

For each trained surrogate given (a Darcy and a heat run folder of the default grid, e.g.
``results/runs/darcy2d/fno/adamw/0``), fresh samples of the family it was trained on (its
training store's parameters, a seed not used for training) are solved by the same iterative
strategy with four starts:

* ``zero``: every solve from x0 = 0;
* ``previous``: from the previous solution (Darcy: the previous i.i.d. sample's; heat: the
  previous time step's, the previous sample's final state for a sample's first step);
* ``surrogate``: the model's prediction for the solve it predicts (the sample's last solve),
  the others as ``previous`` (what ``solver.initial_guess: surrogate`` does);
* ``surrogate_min_residual``: per solve whichever of zero, previous and prediction has the
  smallest residual ||b - A x0||.

At rtol 1e-8 and 1e-6, with Jacobi-PCG and GMG-PCG. Reported per start: Krylov iterations
(all solves, and the predicted solves alone), wall time of the whole sequence (median over
repeats, the strategies interleaved; inference and the choice of start included), inference
seconds, the largest true relative residual and the largest relative difference of the outputs
from a direct (cold, exact to rounding) solve and from the zero start. The warm-up pass of every
strategy (compiled kernels, multigrid set-up, the model's first call) is not timed.

    taskset -c 1 python benchmarks/surrogate_start.py \\
        --model darcy=/path/results/runs/darcy2d/fno/adamw/0 --model heat=/path/results/runs/heat2d/fno/adamw/0

Writes ``results/benchmarks/surrogate_start.json`` and ``surrogate_start.png``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from kryflow.generation import SurrogateStart, load_start_model  # noqa: E402
from kryflow.pdes import build_family  # noqa: E402
from kryflow.solvers import SequenceSolver  # noqa: E402

STARTS = ("zero", "previous", "surrogate", "surrogate_min_residual")
PRECONDITIONERS = ("jacobi", "gmg")
RTOLS = (1e-8, 1e-6)


def _solver(start: str, preconditioner: str, rtol: float, model):
    seq = SequenceSolver(method="cg", preconditioner=preconditioner, rtol=rtol, maxiter=5000,
                         warm_start=start != "zero")
    if start == "surrogate":
        return seq, SurrogateStart(seq, model)
    if start == "surrogate_min_residual":
        return seq, SurrogateStart(seq, model, candidates=("zero", "previous", "surrogate"))
    return seq, None


def _run(fam, samples, start: str, preconditioner: str, rtol: float, model) -> dict:
    """One pass over ``samples``: outputs (sample, N) of the last solve, records, wall seconds."""
    seq, wrapped = _solver(start, preconditioner, rtol, model)
    nsolve = int(fam.solves_per_sample)
    outputs = []
    t0 = time.perf_counter()
    for sample in samples:
        linear_solve = wrapped.for_sample(sample, nsolve) if wrapped is not None else seq
        outputs.append(np.asarray(sample.solve(linear_solve)["u"], dtype=np.float64).ravel())
    wall = time.perf_counter() - t0
    return {"outputs": np.stack(outputs), "records": list(seq.records), "wall": wall,
            "starts": dict(wrapped.starts) if wrapped is not None else None}


def _direct(fam, samples) -> tuple[np.ndarray, list, np.ndarray]:
    """Exact (direct) outputs ``(sample, N)``, each sample's last matrix, and the solution of the
    solve before the last one (heat: one step back; one-solve families: the previous sample's)."""
    seq = SequenceSolver(method="direct")
    outputs, matrices, before = [], [], []
    for s in samples:
        seen = []

        def linear_solve(A, b, *, matrix_changed, seen=seen):
            x = seq(A, b, matrix_changed=matrix_changed)
            seen.append((A, x))
            return x

        outputs.append(np.asarray(s.solve(linear_solve)["u"], dtype=np.float64).ravel())
        matrices.append(seen[-1][0])
        if len(seen) > 1:
            before.append(seen[-2][1])
        else:
            before.append(outputs[-2] if len(outputs) > 1 else np.zeros_like(outputs[-1]))
    return np.stack(outputs), matrices, np.stack(before)


def _energy_error(A, x0: np.ndarray, u: np.ndarray) -> float:
    """``||u - x0||_A / ||u||_A``: what a CG start's quality is measured in."""
    e = u - x0
    return float(np.sqrt(e @ (A @ e) / (u @ (A @ u))))


def _max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def _inference(model, samples) -> dict:
    """Seconds per sample of the model's prediction: batch 1 (as generation uses it), and one
    batch of every sample (the floor a batched prediction would reach)."""
    import torch

    t0 = time.perf_counter()
    for s in samples:
        model.predict(s.fields)
    single = (time.perf_counter() - t0) / len(samples)
    x = np.stack([np.stack([s.fields[n] for n in model.trained_on.inputs]) for s in samples]).astype(np.float32)
    with torch.inference_mode():
        model.surrogate(torch.from_numpy(x))  # warm-up at this batch size
        t0 = time.perf_counter()
        model.surrogate(torch.from_numpy(x))
    batched = (time.perf_counter() - t0) / len(samples)
    return {"batch1_seconds_per_sample": single, "batched_seconds_per_sample": batched}


def _start_errors(model, samples, reference: np.ndarray, matrices: list, before: np.ndarray) -> dict:
    """Median errors of the starts of each sample's last solve against its exact solution: the
    prediction and the previous solution, relative L2 (what the model was trained on), energy
    norm (what CG's iterations depend on) and relative residual ||b - A x0|| / ||b|| (A u = b)."""
    preds = np.stack([model.predict(s.fields) for s in samples])
    out = {}
    for name, x0 in (("prediction", preds), ("previous", before)):
        out[f"{name}_rel_l2_median"] = float(np.median(np.linalg.norm(x0 - reference, axis=1)
                                                       / np.linalg.norm(reference, axis=1)))
        out[f"{name}_energy_error_median"] = float(np.median([_energy_error(A, x, u) for A, x, u in
                                                              zip(matrices, x0, reference)]))
        out[f"{name}_rel_residual_median"] = float(np.median([np.linalg.norm(A @ (u - x)) / np.linalg.norm(A @ u)
                                                              for A, x, u in zip(matrices, x0, reference)]))
    return out


def benchmark_family(name: str, ref: str, num_samples: int, seed: int, repeats: int) -> dict:
    fam = _family_of(ref)
    model = load_start_model(ref, fam, threads=1)
    train_seed = _training_seed(ref)
    if train_seed is not None and train_seed == seed:
        raise SystemExit(f"--seed {seed} is the seed {ref} was trained on; pick fresh samples")
    samples = list(fam.samples(num_samples, seed))
    reference, matrices, before = _direct(fam, samples)
    out = {"family": fam.name, "model": ref, "params": fam.params, "grid": list(fam.shape), "num_samples": num_samples,
           "seed": seed, "training_seed": train_seed, "solves_per_sample": int(fam.solves_per_sample),
           "start_errors": _start_errors(model, samples, reference, matrices, before),
           "inference": _inference(model, samples), "load_seconds": model.load_seconds, "cases": []}
    for preconditioner in PRECONDITIONERS:
        for rtol in RTOLS:
            for start in STARTS:  # warm-up pass, not timed
                _run(fam, samples[:4], start, preconditioner, rtol, model)
            runs = {s: [] for s in STARTS}
            for r in range(repeats):
                order = STARTS[r % len(STARTS):] + STARTS[:r % len(STARTS)]  # interleaved, rotated
                for start in order:
                    runs[start].append(_run(fam, samples, start, preconditioner, rtol, model))
            out["cases"].append(_case(fam, preconditioner, rtol, runs, reference))
            print(_line(name, out["cases"][-1]), flush=True)
    return out


def _case(fam, preconditioner: str, rtol: float, runs: dict, reference: np.ndarray) -> dict:
    nsolve = int(fam.solves_per_sample)
    zero_out = runs["zero"][0]["outputs"]
    case = {"preconditioner": preconditioner, "rtol": rtol, "starts": {}}
    for start, reps in runs.items():
        first = reps[0]
        recs = first["records"]
        iters = np.array([r.iterations for r in recs]).reshape(-1, nsolve)
        walls = [r["wall"] for r in reps]
        case["starts"][start] = {
            "iterations": int(iters.sum()),
            "iterations_per_sample": float(iters.sum(axis=1).mean()),
            "iterations_predicted_solve": float(iters[:, -1].mean()),
            "wall_seconds": statistics.median(walls),
            "wall_seconds_all": walls,
            "wall_ms_per_sample": 1e3 * statistics.median(walls) / iters.shape[0],
            "solve_seconds_recorded": float(sum(r.seconds for r in recs)),
            "max_rel_residual": float(max(r.rel_residual for r in recs)),
            "meets_tolerance": bool(all(r.converged and r.rel_residual <= rtol for r in recs)),
            "max_rel_diff_vs_direct": _max_rel_diff(first["outputs"], reference),
            "max_rel_diff_vs_zero_start": _max_rel_diff(first["outputs"], zero_out),
            "starts_taken": first["starts"],
        }
    zero = case["starts"]["zero"]
    for s in case["starts"].values():
        s["iterations_ratio_vs_zero"] = s["iterations"] / zero["iterations"]
        s["wall_ratio_vs_zero"] = s["wall_seconds"] / zero["wall_seconds"]
        s["wall_ratio_vs_previous"] = s["wall_seconds"] / case["starts"]["previous"]["wall_seconds"]
    return case


def _line(name: str, case: dict) -> str:
    cells = "  ".join(f"{s}: {v['iterations_per_sample']:.1f} it {v['wall_ms_per_sample']:.2f} ms"
                      for s, v in case["starts"].items())
    return f"{name:6s} {case['preconditioner']:6s} rtol {case['rtol']:.0e}  {cells}"


def _family_of(ref: str):
    """The family of a model's training data, built at its grid (a first load reads it)."""
    from kryflow.generation._surrogate_start import _load_file, _load_uri, is_model_uri

    _, trained_on = _load_uri(ref, None) if is_model_uri(ref) else _load_file(ref)
    return build_family(trained_on.family, **trained_on.params)


def _training_seed(ref: str) -> int | None:
    """The seed of the store a run folder's model was trained on, where it can be read."""
    import torch

    from kryflow.data._schema import read_group_attrs
    from kryflow.generation._surrogate_start import _run_root_of

    path = Path(ref)
    file = path / "model.pt" if path.is_dir() else path
    if not file.is_file():
        return None
    recorded = torch.load(file, map_location="cpu", weights_only=False).get("dataset")
    root = _run_root_of(file.resolve())
    for store in ([root / recorded] if recorded and root else []) + ([Path(recorded)] if recorded else []):
        if store.is_dir():
            return int(read_group_attrs(store).get("seed"))
    return None


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(results["families"])
    fig, axes = plt.subplots(len(fams), 2, figsize=(11, 3.4 * len(fams)), squeeze=False)
    colors = {"zero": "#888888", "previous": "#1f77b4", "surrogate": "#d62728", "surrogate_min_residual": "#ff9896"}
    for row, name in enumerate(fams):
        cases = results["families"][name]["cases"]
        labels = [f"{c['preconditioner']}\nrtol {c['rtol']:.0e}" for c in cases]
        x = np.arange(len(cases))
        width = 0.8 / len(STARTS)
        for col, (key, ylabel) in enumerate((("iterations_per_sample", "CG iterations per sample"),
                                             ("wall_ms_per_sample", "wall ms per sample (inference incl.)"))):
            ax = axes[row][col]
            for j, start in enumerate(STARTS):
                ax.bar(x + (j - 1.5) * width, [c["starts"][start][key] for c in cases], width, label=start,
                       color=colors[start])
            ax.set_xticks(x, labels)
            ax.set_ylabel(ylabel)
            fam = results["families"][name]
            ax.set_title(f"{name} {'x'.join(map(str, fam['grid']))}, {fam['num_samples']} fresh samples "
                         f"(prediction error: L2 {fam['start_errors']['prediction_rel_l2_median']:.1%}, "
                         f"energy {fam['start_errors']['prediction_energy_error_median']:.0%})", fontsize=9)
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=REF",
                   help="a trained surrogate: run folder, model.pt or MLflow model URI (repeat per family)")
    p.add_argument("--num-samples", type=int, default=48)
    p.add_argument("--seed", type=int, default=12345, help="fresh samples: not a seed the models were trained on")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/surrogate_start.json"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
               "cpu_affinity": sorted(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
               "method": "cg", "families": {}}
    for item in args.model:
        name, _, ref = item.partition("=")
        results["families"][name] = benchmark_family(name, ref, args.num_samples, args.seed, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float))
    figure(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return results


if __name__ == "__main__":
    main()
