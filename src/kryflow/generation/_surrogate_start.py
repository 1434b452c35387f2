"""Surrogate warm start (``solver.initial_guess: surrogate``): a trained surrogate predicts each
sample's solution, and the solver starts from that prediction instead of zero.

What the model must be: trained on the same PDE family, grid and input variables as the dataset
being generated (its ``model.pt`` records them as ``trained_on``; older files are matched through
the training store they name). :func:`load_start_model` checks that before any solve and raises
:class:`SurrogateStartError` naming the model and the mismatch. Other parameters of the family
(coefficient contrast, time step, ...) are not compared: a model trained on others still gives
a correct start, only a poorer one.

Which solve a prediction is for: a family's grid-shaped target is the unknown of the sample's
last solve (Darcy and advection–diffusion: the one solve; heat: the final time step, the other
steps start as the solver would, from the previous solution along the trajectory). The solver's
stopping test is unchanged (``||b - A x|| <= rtol ||b||``), so what is stored meets the tolerance
whatever the start. :class:`SurrogateStart` can instead choose, per solve, whichever of zero, the
previous solution and the prediction has the smallest residual (``candidates``); the benchmark
(``benchmarks/surrogate_start.py``) measures both. A surrogate's error is rough (grid-scale), so
its residual is often larger than ``||b||`` even at a few percent L2 error: the residual is a poor
judge of a start for Krylov methods, and generation takes the prediction as it is.

Costs: the prediction (one sample, batch 1, on CPU) and the choice of start are added to the
``seconds`` of the solve they serve; loading the model and the first inference are one-time
costs, reported apart (``surrogate_load_seconds``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kryflow._registry import ParameterError

if TYPE_CHECKING:  # kryflow.data imports torch: loaded where a model is, not in every generator process
    from kryflow.data import TrainedOn

__all__ = [
    "INITIAL_GUESSES", "START_CANDIDATES", "START_KEYS", "SurrogateStartError", "check_start_method",
    "initial_guess_options", "StartModel", "SurrogateStart", "is_model_uri", "load_start_model", "resolve_surrogate",
]

#: ``solver.initial_guess`` values: zero (a cold start), the previous solution, the surrogate's prediction.
INITIAL_GUESSES = ("zero", "previous", "surrogate")
#: the starts a surrogate-started solve chooses among (by the smallest residual).
START_CANDIDATES = ("zero", "previous", "surrogate")
_URI_SCHEMES = ("runs:/", "models:/")


class SurrogateStartError(ParameterError):
    """A surrogate for the initial guess that is missing, unreadable or does not fit the dataset
    (a :class:`ParameterError` of ``surrogate``, so a config check names ``solver.surrogate``)."""

    def __init__(self, message: str):
        super().__init__(message, "surrogate")


def is_model_uri(ref: Any) -> bool:
    """Whether ``ref`` is an MLflow model URI (``runs:/<run id>/model``, ``models:/<name>/<version>``)."""
    return isinstance(ref, str) and ref.startswith(_URI_SCHEMES)


def resolve_surrogate(ref: Any, runs_root: str | os.PathLike | None = None) -> str:
    """``solver.surrogate`` as a path or URI: a workflow cell ``{dataset, model, optimizer, seed}``
    becomes its ``model.pt`` under ``runs_root`` (default ``results/runs``); a string stays as it is."""
    from kryflow import layout

    if isinstance(ref, Mapping):
        cell = (ref["dataset"], ref["model"], ref["optimizer"], int(ref.get("seed", 0)))
        return str(layout.run_file(cell, "model.pt", runs_root=runs_root or layout.RUNS_DIR))
    if isinstance(ref, (str, os.PathLike)) and str(ref):
        return str(ref)
    raise SurrogateStartError(f"solver.surrogate must be a run folder, a model.pt file, an MLflow model URI "
                              f"(runs:/..., models:/...) or a training cell {{dataset, model, optimizer, seed}}, "
                              f"got {ref!r}")


class StartModel:
    """A trained surrogate loaded for initial guesses (final; made by :func:`load_start_model`).

    **Attributes:**
        label: where it came from (the path or URI), as error messages name it.
        trained_on: :class:`TrainedOn`.
        load_seconds: loading it and its first (warm-up) inference, a one-time cost.
    """

    def __init__(self, surrogate: Any, trained_on: TrainedOn, label: str, threads: int | None = 1):
        import torch

        if threads is not None and torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))  # one generation job per core, as the solver's blas_threads
        self.surrogate = surrogate.eval().to("cpu")
        self.trained_on = trained_on
        self.label = label
        self.load_seconds = 0.0
        self._target = 0  # the output channel of the last solve's unknown (set by check)

    def check(self, fam: Any) -> None:
        """Raise :class:`SurrogateStartError` unless the model fits family ``fam``'s samples."""
        t = self.trained_on
        where = f"solver.surrogate {self.label}"
        if t.family is None:
            raise SurrogateStartError(f"{where}: its training data names no PDE family, so it cannot be checked "
                                      f"against '{fam.name}'; use a model trained on a generated dataset")
        if t.family != fam.name:
            raise SurrogateStartError(f"{where} was trained on family '{t.family}', not '{fam.name}' (the dataset "
                                      "being generated); use a model of the same family")
        if tuple(t.grid) != tuple(fam.shape):
            raise SurrogateStartError(f"{where} was trained on a {'x'.join(map(str, t.grid))} grid, the dataset is "
                                      f"{'x'.join(map(str, fam.shape))}; use a model trained at the dataset's grid")
        if list(t.inputs) != list(fam.inputs) or list(t.targets) != list(fam.targets):
            raise SurrogateStartError(f"{where} maps inputs {list(t.inputs)} to {list(t.targets)}, the dataset's "
                                      f"samples have inputs {list(fam.inputs)} and targets {list(fam.targets)}")
        axes = fam.variables()
        grid_targets = [v for v in fam.targets if len(axes[v]["dims"]) == fam.dim]
        if len(grid_targets) != 1:
            raise SurrogateStartError(f"family '{fam.name}' has grid-shaped targets {grid_targets}; a surrogate start "
                                      "needs exactly one, the unknown of a sample's last solve")
        self._target = fam.targets.index(grid_targets[0])
        t0 = time.perf_counter()
        self.predict({name: np.zeros(fam.shape) for name in fam.inputs})  # warm-up: first-call costs
        self.load_seconds += time.perf_counter() - t0

    def predict(self, fields: Mapping[str, np.ndarray]) -> np.ndarray:
        """The predicted unknown of a sample's last solve, ``(N,)`` float64 in the solver's ordering
        (the grid raveled in C order), from its input ``fields`` (name -> grid-shaped array)."""
        import torch

        x = np.stack([np.asarray(fields[name], dtype=np.float32) for name in self.trained_on.inputs])[None]
        with torch.inference_mode():
            y = self.surrogate(torch.from_numpy(x))
        return y[0, self._target].numpy().astype(np.float64).ravel()


def _run_root_of(model_file: Path) -> Path | None:
    """The workflow folder of a model.pt inside ``results/runs/<cell>/`` (None elsewhere)."""
    from kryflow import layout

    try:
        runs_root = layout.runs_root_of(model_file)
    except IndexError:
        return None
    return runs_root.parent.parent if runs_root.as_posix().endswith(layout.RUNS_DIR) else None


def _trained_on_from_store_path(recorded: Any, model_file: Path | None, label: str) -> TrainedOn:
    """A model's :class:`TrainedOn` from the training store it names (files written before
    ``trained_on`` was recorded): as given, or relative to the workflow folder of its run."""
    from kryflow.data import trained_on_of_store

    if not recorded:
        raise SurrogateStartError(f"solver.surrogate {label}: the model records neither what it was trained on nor "
                                  "its training dataset, so its family and grid cannot be checked")
    tried = [Path(recorded)]
    if not tried[0].is_absolute() and model_file is not None and (root := _run_root_of(model_file)) is not None:
        tried.insert(0, root / recorded)
    for path in tried:
        if path.is_dir():
            return trained_on_of_store(path)
    raise SurrogateStartError(f"solver.surrogate {label}: its training dataset {recorded} (recorded in the model) is "
                              f"not found (tried {', '.join(map(str, tried))}), so its family and grid cannot be "
                              "checked")


def _load_file(ref: str) -> tuple[Any, TrainedOn]:
    import torch

    from kryflow.data import TrainedOn
    from kryflow.models import model_from_config
    from kryflow.training.surrogate import Surrogate

    path = Path(ref).expanduser()
    file = path / "model.pt" if path.is_dir() else path
    if not file.is_file():
        raise SurrogateStartError(f"solver.surrogate {ref}: no such model file ({file} does not exist); give a "
                                  "training run's folder, its model.pt or an MLflow model URI")
    try:
        blob = torch.load(file, map_location="cpu", weights_only=False)
        net = model_from_config(blob["model_config"])
        net.load_state_dict(blob["state_dict"])
        surrogate = Surrogate(net, blob["stats"], blob["dim"])
    except Exception as exc:  # noqa: BLE001 - any failure here means the same: not a model we can use
        raise SurrogateStartError(f"solver.surrogate {ref}: {file} is not a readable kryflow model "
                                  f"({type(exc).__name__}: {exc})") from None
    if blob.get("status") not in (None, "finished"):
        raise SurrogateStartError(f"solver.surrogate {ref}: its training ended '{blob['status']}', not 'finished'")
    if blob.get("trained_on"):
        return surrogate, TrainedOn.from_dict(blob["trained_on"])
    return surrogate, _trained_on_from_store_path(blob.get("dataset"), file.resolve(), ref)


def _load_uri(ref: str, tracking_uri: str | None) -> tuple[Any, TrainedOn]:
    from kryflow.data import TrainedOn
    from kryflow.tracking import quiet_mlflow_environment, scoped_tracking_uri

    quiet_mlflow_environment()
    import mlflow.pytorch

    try:
        with scoped_tracking_uri(tracking_uri):
            surrogate = mlflow.pytorch.load_model(ref, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - mlflow raises many kinds for a missing or broken model
        raise SurrogateStartError(f"solver.surrogate {ref}: the MLflow model cannot be loaded "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                  "check the URI and MLFLOW_TRACKING_URI") from None
    recorded = getattr(surrogate, "trained_on", None)
    if recorded:
        return surrogate, TrainedOn.from_dict(recorded)
    return surrogate, _trained_on_from_store_path(_mlflow_training_store(ref, tracking_uri), None, ref)


def _mlflow_training_store(ref: str, tracking_uri: str | None) -> str | None:
    """The training dataset logged on the run behind an MLflow model URI (its source path)."""
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        if ref.startswith("runs:/"):
            run_id = ref[len("runs:/"):].split("/")[0]
        else:
            name, version = ref[len("models:/"):].split("/")[:2]
            run_id = client.get_model_version(name, version).run_id
        for inp in client.get_run(run_id).inputs.dataset_inputs:
            if any(t.key == "mlflow.data.context" and t.value == "training" for t in inp.tags):
                source = json.loads(inp.dataset.source)
                return source.get("uri") or source.get("path")
    except Exception:  # noqa: BLE001 - no record: the caller says what cannot be checked
        return None
    return None


def load_start_model(ref: Any, fam: Any, *, threads: int | None = 1, tracking_uri: str | None = None,
                     runs_root: str | os.PathLike | None = None) -> StartModel:
    """Load the surrogate ``ref`` (a run folder, its ``model.pt``, an MLflow model URI or a training
    cell, see :func:`resolve_surrogate`) and check it against family ``fam``.

    **Returns:** a :class:`StartModel` whose ``predict`` is ready (warmed up). Raises
    :class:`SurrogateStartError` naming the model when it is missing, unreadable or trained on
    another family, grid or set of variables.
    """
    t0 = time.perf_counter()
    label = resolve_surrogate(ref, runs_root)
    surrogate, trained_on = _load_uri(label, tracking_uri) if is_model_uri(label) else _load_file(label)
    model = StartModel(surrogate, trained_on, label, threads=threads)
    model.check(fam)
    model.load_seconds = time.perf_counter() - t0
    return model


#: the ``solver`` keys of a dataset that say how solves start (not ``SequenceSolver`` options)
START_KEYS = ("initial_guess", "surrogate")


def initial_guess_options(solver: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``SequenceSolver`` options that ``solver.initial_guess`` implies (``zero``:
    ``warm_start=False``; ``previous`` and ``surrogate``: ``warm_start=True``, a surrogate start
    keeping the previous solution for the solves the model does not predict); ``{}`` without one.
    Raises :class:`ParameterError` naming the key for a bad value, a contradicting ``warm_start``, or a
    missing or stray ``surrogate``."""
    solver = dict(solver or {})
    guess = solver.get("initial_guess")
    if guess is None:
        if solver.get("surrogate") is not None:
            raise ParameterError("solver.surrogate is given but solver.initial_guess is not 'surrogate'; set "
                                 "initial_guess: surrogate or drop the surrogate", "surrogate")
        return {}
    if guess not in INITIAL_GUESSES:
        raise ParameterError(f"solver.initial_guess must be one of {list(INITIAL_GUESSES)}, got {guess!r}",
                             "initial_guess")
    if guess == "surrogate" and not solver.get("surrogate"):
        raise ParameterError("solver.initial_guess is 'surrogate' but no solver.surrogate names the model (a run "
                             "folder, its model.pt, an MLflow model URI or a training cell)", "surrogate")
    if guess != "surrogate" and solver.get("surrogate") is not None:
        raise ParameterError(f"solver.surrogate is given but solver.initial_guess is {guess!r}, not 'surrogate'",
                             "surrogate")
    warm = guess != "zero"
    if "warm_start" in solver and bool(solver["warm_start"]) != warm:
        raise ParameterError(f"solver.warm_start: {solver['warm_start']} contradicts solver.initial_guess: "
                             f"{guess}; give one of them", "warm_start")
    return {"warm_start": warm}


def check_start_method(method: str) -> None:
    """Raise :class:`ParameterError` (``method``) when ``method`` ignores a start (a direct solver): a surrogate start
    needs an iterative one (``auto`` picks a direct solver on small 2D grids)."""
    from kryflow.solvers import SOLVER_METHODS

    if not SOLVER_METHODS[method].uses_preconditioner:
        raise ParameterError(f"solver.initial_guess 'surrogate' needs an iterative solver.method (cg, rcg, gmres, "
                             f"...); method {method!r} is a direct solve, which ignores any start", "method")


class SurrogateStart:
    """A ``SequenceSolver`` whose solves start from a surrogate's prediction where it is the best
    start (final).

    **Arguments:**
        solver: the ``SequenceSolver`` (an iterative method: a direct one ignores any start).
        model: a checked :class:`StartModel`.
        candidates: the starts (:data:`START_CANDIDATES`) to choose among by the smallest residual
            ``||b - A x0||``. The default ``("surrogate",)`` takes the prediction for the solve it
            is for and the solver's own start (``warm_start``) for the others.

    Use ``sample.solve(start.for_sample(sample, fam.solves_per_sample))``; records
    are the solver's (``records``, ``pop_records``), their ``seconds`` including the prediction
    and the choice of start. ``starts`` counts the starts taken by name.
    """

    def __init__(self, solver: Any, model: StartModel, candidates: Sequence[str] = ("surrogate",)):
        bad = [c for c in candidates if c not in START_CANDIDATES]
        if bad or not candidates:
            raise ValueError(f"candidates must be a non-empty subset of {START_CANDIDATES}, got {list(candidates)}")
        self.solver = solver
        self.model = model
        self.candidates = tuple(candidates)
        self.starts = {c: 0 for c in START_CANDIDATES}
        self._previous: np.ndarray | None = None

    @property
    def records(self) -> list:
        return self.solver.records

    def pop_records(self) -> list:
        return self.solver.pop_records()

    def for_sample(self, sample: Any, num_solves: int):
        """The ``linear_solve`` for one sample of ``num_solves`` solves (the family's
        ``solves_per_sample``): the prediction from ``sample.fields``, made now, is a candidate
        start of the last solve, whose seconds include the prediction's."""
        t0 = time.perf_counter()
        guess = self.model.predict(sample.fields)
        inference = time.perf_counter() - t0
        count = [0]

        def linear_solve(A, b, *, matrix_changed: bool) -> np.ndarray:
            count[0] += 1
            last = count[0] == num_solves
            return self._solve(A, b, matrix_changed, guess if last else None, inference if last else 0.0)

        return linear_solve

    def _solve(self, A, b, matrix_changed: bool, guess: np.ndarray | None, extra: float) -> np.ndarray:
        t0 = time.perf_counter()
        b = np.asarray(b, dtype=np.float64).ravel()
        if guess is not None and guess.shape != b.shape:
            raise SurrogateStartError(f"solver.surrogate {self.model.label}: predicted {guess.size} unknowns, the "
                                      f"system has {b.size}")
        previous = self._previous if self._previous is not None and self._previous.shape == b.shape else None
        options = {"zero": None, "previous": previous, "surrogate": guess}
        names = [c for c in self.candidates if c != "surrogate" or guess is not None]
        if not names:  # a solve the model does not predict, and only the prediction allowed: the solver's own start
            names = ["previous" if self.solver.warm_start else "zero"]
        names = [c for c in names if c == "zero" or options[c] is not None] or ["zero"]
        name = names[0] if len(names) == 1 else self._best(A, b, {c: options[c] for c in names})
        choose = time.perf_counter() - t0
        start = options[name]  # None: zeros, also where the solver would warm-start
        x = self.solver(A, b, matrix_changed=matrix_changed, x0="zero" if start is None else start)
        self.solver.records[-1].seconds += extra + choose
        self.starts[name] += 1
        self._previous = np.asarray(x, dtype=np.float64).copy()
        return x

    @staticmethod
    def _best(A, b: np.ndarray, options: Mapping[str, np.ndarray | None]) -> str:
        """The option with the smallest residual ``||b - A x0||`` (zero: ``||b||``, no matvec)."""
        best, best_norm = "zero", np.inf
        for name, x0 in options.items():
            norm = float(np.linalg.norm(b if x0 is None else b - A @ x0))
            if norm < best_norm:
                best, best_norm = name, norm
        return best
