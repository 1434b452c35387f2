"""PDE families: parametric PDEs that produce seeded sequences of related sparse systems."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from kryflow._registry import ParameterError, Registry, unknown_names

from ._grf import GaussianRandomField
from ._operators import advection_operator, check_field, diffusion_operator, on_grid

__all__ = [
    "PDEFamily",
    "Sample",
    "DarcyFamily",
    "HeatFamily",
    "AdvectionDiffusionFamily",
    "PDE_FAMILIES",
    "build_family",
    "family_parameters",
]

LinearSolve = Callable[..., np.ndarray]  # x = linear_solve(A, b, matrix_changed=bool)

_COMMON = {
    "n": 32,  # cells per side
    "dim": 2,
    "relation": "iid",  # "iid": independent samples; "drift": a correlated path (an explicit choice)
    "drift_angle": 0.2,  # drift only: radians per sample of the white-noise rotation
    "alpha": 2.0,  # GRF smoothness
    "tau": 3.0,  # GRF inverse length scale
}
_COEFFICIENT = {
    "coefficient": "binary",  # "binary" (thresholded GRF) or "lognormal"
    "contrast_high": 12.0,
    "contrast_low": 3.0,
    "sigma": 1.0,  # lognormal: a = exp(sigma * GRF)
}


_TIME = {
    "scheme": "backward_euler",  # or "crank_nicolson"
    "dt": 0.002,
    "num_steps": 20,
    "save_every": 5,
    "rannacher_steps": 2,  # Crank–Nicolson only: start-up steps done as two backward-Euler half steps
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def _positive_finite(p: dict[str, Any], key: str) -> None:
    if not (_is_number(p[key]) and 0 < p[key] < math.inf):
        raise ParameterError(f"{key} must be a finite number > 0, got {p[key]!r}", key)


class Sample:
    """One sample of a family: its input fields and how to run its linear systems.

    **Attributes:**
        index: position in the sequence (0-based).
        fields: input variables, name -> grid-shaped float64 array.
    """

    def __init__(self, index: int, fields: dict[str, np.ndarray], run: Callable[[LinearSolve], dict[str, np.ndarray]]):
        self.index = index
        self.fields = fields
        self._run = run

    def solve(self, linear_solve: LinearSolve) -> dict[str, np.ndarray]:
        """Run this sample's systems through ``linear_solve(A, b, matrix_changed=bool) -> x``.

        **Returns:**
            Every output variable, grid-shaped (time-major where it has a "time" dimension).
        """
        return self._run(linear_solve)

    def __repr__(self) -> str:
        return f"Sample(index={self.index}, fields={sorted(self.fields)})"


#: The PDE families by name; a family registers itself by subclassing :class:`PDEFamily` with a ``name``.
PDE_FAMILIES: Registry[type[PDEFamily]] = Registry("PDE family", plural="families", package="kryflow.pdes")


class PDEFamily(abc.ABC):
    """A parametric PDE discretised on an ``n^dim`` cell-centred grid of the unit square/cube.

    A subclass with a ``name`` is registered in :data:`PDE_FAMILIES`; it declares its parameters
    in ``DEFAULTS`` and checks them in ``_validate``, raising :class:`ParameterError` naming one.
    """

    name: str = ""
    matrix_kind: str = "spd"
    solves_per_sample: int = 1
    inputs: list[str] = []
    targets: list[str] = []
    DEFAULTS: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.name:
            PDE_FAMILIES.register(cls.name, cls)

    def __init__(self, **params: Any):
        unknown_names(params, self.DEFAULTS, f"PDE family {self.name!r}", "parameter")
        p = {**self.DEFAULTS, **params}
        n, dim = p["n"], p["dim"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 4:
            raise ParameterError(f"n must be an integer >= 4 (cells per side), got {n!r}", "n")
        if dim not in (2, 3):
            raise ParameterError(f"dim must be 2 or 3, got {dim!r}", "dim")
        if p["relation"] not in ("drift", "iid"):
            raise ParameterError(f"relation must be 'drift' or 'iid', got {p['relation']!r}", "relation")
        for key in ("alpha", "tau"):
            _positive_finite(p, key)
        if not np.isfinite(p["drift_angle"]):
            raise ParameterError(f"drift_angle must be a finite angle in radians, got {p['drift_angle']!r}",
                                 "drift_angle")
        self.params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in p.items()}
        self.dim = int(dim)
        self.shape = (int(n),) * self.dim
        self._validate(p)

    # -- subclass hooks -------------------------------------------------------------------
    def _validate(self, p: dict[str, Any]) -> None:
        """Check family-specific parameters; raise :class:`ParameterError` naming the bad one."""

    #: independent white-noise streams a sample draws from (one per random input field)
    noise_streams: int = 1
    #: time-dependent families: state variable -> (its initial-state input, its trajectory output)
    states: dict[str, tuple[str, str]] = {}

    @property
    def stream_ids(self) -> list[int]:
        """The stream numbers of the ``noise_streams`` GRF draws, in the order ``_sample`` gets them."""
        return list(range(self.noise_streams))

    def samples(self, num_samples: int, seed: int, start: int = 0, stop: int | None = None) -> Iterator[Sample]:
        """Samples ``start .. stop-1`` (default all) of the dataset ``(seed, num_samples)``, in index order.

        Every random draw of sample k comes from ``(seed, stream, k)`` alone (through
        :meth:`GaussianRandomField.draws`), so a sample is the same whichever block of the
        dataset is asked for, in whatever order its systems are then solved: ``relation="iid"``
        (the default) gives independent samples; ``relation="drift"`` a correlated path
        (neighbours correlate at cos(drift_angle)), an explicit choice for studying recycling.
        """
        self._check_count(num_samples, seed)
        stop = num_samples if stop is None else stop
        if not 0 <= start <= stop <= num_samples:
            raise ValueError(f"sample range [{start}, {stop}) is not inside [0, {num_samples})")
        p, grf = self.params, self._grf()
        streams = [grf.draws(seed, j, range(start, stop), p["relation"], p["drift_angle"])
                   for j in self.stream_ids]
        for draws in zip(*streams):
            yield self._sample(draws[0][0], seed, [field for _, field in draws])

    @abc.abstractmethod
    def _sample(self, index: int, seed: int, xis: list[np.ndarray]) -> Sample:
        """Sample ``index`` from its unit-variance GRF draws ``xis`` (one per noise stream)."""

    @abc.abstractmethod
    def variables(self) -> dict[str, dict]:
        """name -> {"dims", "long_name", "units", "role": "input" | "output"}."""

    # -- shared ---------------------------------------------------------------------------
    @property
    def n_unknowns(self) -> int:
        return int(np.prod(self.shape))

    @property
    def _axes(self) -> tuple[str, ...]:
        return ("x", "y", "z")[: self.dim]

    def coords(self) -> dict[str, np.ndarray]:
        """Cell centres per axis, each shape ``(n,)``, in (0, 1)."""
        n = self.shape[0]
        c = (np.arange(n) + 0.5) / n
        return {ax: c.copy() for ax in self._axes}

    def extra_coords(self) -> dict[str, tuple[tuple[str, ...], np.ndarray, dict]]:
        """Non-spatial coordinates, e.g. heat's ``{"time": (("time",), t, {"units": "s"})}``."""
        return {}

    def _check_count(self, num_samples: int, seed: int) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
            raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    def _grf(self) -> GaussianRandomField:
        return GaussianRandomField(self.shape, self.params["alpha"], self.params["tau"])

    def _coefficient(self, xi: np.ndarray) -> np.ndarray:
        p = self.params
        if p["coefficient"] == "binary":
            return np.where(xi >= 0.0, float(p["contrast_high"]), float(p["contrast_low"]))
        return np.exp(float(p["sigma"]) * xi)

    def _validate_coefficient(self, p: dict[str, Any]) -> None:
        if p["coefficient"] not in ("binary", "lognormal"):
            raise ParameterError(f"coefficient must be 'binary' or 'lognormal', got {p['coefficient']!r}",
                                 "coefficient")
        for key in ("contrast_high", "contrast_low"):
            if not (_is_number(p[key]) and 0 < p[key] < math.inf):
                raise ParameterError(
                    f"contrast_high and contrast_low must be > 0 (got {p['contrast_high']}, {p['contrast_low']}); "
                    "the coefficient must stay positive", key)
        if not np.isfinite(p["sigma"]) or p["sigma"] < 0:
            raise ParameterError(f"sigma must be finite and >= 0, got {p['sigma']!r}", "sigma")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


class DarcyFamily(PDEFamily):
    """Steady Darcy flow ``-div(a grad u) = f`` on [0,1]^dim, ``u = 0`` on the boundary.

    Input ``a`` (dimensionless permeability), output ``u``; one SPD solve per sample.
    """

    name = "darcy"
    matrix_kind = "spd"
    solves_per_sample = 1
    inputs = ["a"]
    targets = ["u"]
    DEFAULTS = {**_COMMON, **_COEFFICIENT, "forcing": 1.0}

    def _validate(self, p):
        self._validate_coefficient(p)
        if not np.isfinite(p["forcing"]):
            raise ParameterError(f"forcing must be finite, got {p['forcing']!r}", "forcing")

    def variables(self):
        d = self._axes
        return {
            "a": {"dims": d, "long_name": "diffusion coefficient", "units": "1", "role": "input"},
            "u": {"dims": d, "long_name": "solution of -div(a grad u) = f", "units": "1", "role": "output"},
        }

    def system(self, a: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
        """Assemble ``(A, b)`` for coefficient ``a`` (grid-shaped, positive): A is N x N, b is (N,)."""
        a = check_field("a", a, self.shape, positive=True)
        return diffusion_operator(a), np.full(a.size, float(self.params["forcing"]))

    def _sample(self, index, seed, xis):
        a = self._coefficient(xis[0])

        def run(linear_solve, a=a):
            A, b = self.system(a)
            return {"u": np.asarray(linear_solve(A, b, matrix_changed=True)).reshape(self.shape)}

        return Sample(index, {"a": a}, run)


def _validate_time(p: dict[str, Any]) -> None:
    """Check the implicit time-stepping parameters (``_TIME``), naming the bad one."""
    rs = p["rannacher_steps"]
    if not isinstance(rs, (int, np.integer)) or not 0 <= rs <= p["num_steps"]:
        raise ParameterError(f"rannacher_steps must be an integer in [0, num_steps={p['num_steps']}], got {rs!r}",
                             "rannacher_steps")
    if p["scheme"] not in ("backward_euler", "crank_nicolson"):
        raise ParameterError(f"scheme must be 'backward_euler' or 'crank_nicolson', got {p['scheme']!r}", "scheme")
    _positive_finite(p, "dt")
    ns, se = p["num_steps"], p["save_every"]
    if not isinstance(ns, (int, np.integer)) or ns < 1:
        raise ParameterError(f"num_steps must be an integer >= 1, got {ns!r}", "num_steps")
    if not isinstance(se, (int, np.integer)) or se < 1 or ns % se:
        raise ParameterError(f"save_every must be a positive divisor of num_steps={ns}, got {se!r}", "save_every")


def _time_coords(p: dict[str, Any]) -> dict[str, tuple]:
    t = p["dt"] * p["save_every"] * np.arange(1, p["num_steps"] // p["save_every"] + 1)
    return {"time": (("time",), t, {"units": "s", "long_name": "time after the initial state"})}


def _rannacher(p: dict[str, Any]) -> int:
    return int(p["rannacher_steps"]) if p["scheme"] == "crank_nicolson" else 0


def _theta_steps(L: sp.csr_matrix, f: float | np.ndarray, u0: np.ndarray, shape: tuple[int, ...],
                 p: dict[str, Any], linear_solve: LinearSolve) -> dict[str, np.ndarray]:
    """``u_t + L u = f`` from ``u0`` (flat ``(N,)``) by backward Euler or Crank–Nicolson (with
    Rannacher's start-up), ``num_steps`` steps of ``dt``: one matrix ``I + θ dt L``, one solve per
    step (two per start-up step). Returns ``u`` (final, grid-shaped) and ``trajectory``
    ``(num_steps / save_every, *shape)``."""
    u = u0
    dt = float(p["dt"])
    eye = sp.identity(L.shape[0], format="csr")
    theta = 1.0 if p["scheme"] == "backward_euler" else 0.5
    A = on_grid((eye + theta * dt * L).tocsr(), shape)
    B = (eye - (1.0 - theta) * dt * L).tocsr() if theta < 1.0 else None
    saved = []
    first = True
    for step in range(1, p["num_steps"] + 1):
        if step <= _rannacher(p):
            # two backward-Euler half steps: (I + dt/2 L) u' = u + dt/2 f, the same matrix A
            for _ in range(2):
                u = np.asarray(linear_solve(A, u + 0.5 * dt * f, matrix_changed=first), dtype=np.float64)
                first = False
        else:
            rhs = (B @ u if B is not None else u) + dt * f
            # the same A object every step: recycled solvers keep A·W, direct keeps its factors
            u = np.asarray(linear_solve(A, rhs, matrix_changed=first), dtype=np.float64)
            first = False
        if step % p["save_every"] == 0:
            saved.append(u.reshape(shape))
    return {"u": u.reshape(shape), "trajectory": np.stack(saved)}


class HeatFamily(PDEFamily):
    """Implicit heat equation ``u_t = div(a grad u) + f``, ``u = 0`` on the boundary, ``u(0) = u0``.

    Each sample runs ``num_steps`` steps of size ``dt`` (seconds, nondimensional) with backward
    Euler or Crank–Nicolson: one matrix per sample, one right-hand side per solve.
    Inputs ``a``, ``u0``; outputs ``u`` (final state) and ``trajectory`` (every ``save_every`` steps).

    Crank–Nicolson is not L-stable: once ``dt·a/h²`` is large its amplification factor tends to
    −1 on the stiffest grid modes, so grid-scale content of ``u0`` survives as an undamped
    oscillation the true solution does not have (measured on 32², dt = 0.002: the final state kept
    47% of the initial high-frequency energy, against 1e-5 with backward Euler). Rannacher's
    start-up removes it: the first ``rannacher_steps`` Crank–Nicolson steps are each replaced by
    two backward-Euler half steps, whose matrix ``I + dt/2·L`` is the Crank–Nicolson matrix, so a
    sample still has one matrix (``num_steps + rannacher_steps`` solves) and second order in time.
    """

    name = "heat"
    matrix_kind = "spd"
    inputs = ["a", "u0"]
    targets = ["u"]
    DEFAULTS = {**_COMMON, **_COEFFICIENT, "forcing": 1.0, **_TIME}
    states = {"u": ("u0", "trajectory")}

    def _validate(self, p):
        self._validate_coefficient(p)
        _validate_time(p)

    @property
    def solves_per_sample(self) -> int:  # type: ignore[override]
        return int(self.params["num_steps"]) + _rannacher(self.params)

    def extra_coords(self):
        return _time_coords(self.params)

    def variables(self):
        d = self._axes
        return {
            "a": {"dims": d, "long_name": "diffusion coefficient", "units": "1", "role": "input"},
            "u0": {"dims": d, "long_name": "initial state", "units": "1", "role": "input"},
            "u": {"dims": d, "long_name": "state at the final time", "units": "1", "role": "output"},
            "trajectory": {"dims": ("time",) + d, "long_name": "saved states", "units": "1", "role": "output"},
        }

    noise_streams = 2  # coefficient, initial state

    def _sample(self, index, seed, xis):
        a, u0 = self._coefficient(xis[0]), xis[1]

        def run(linear_solve, a=a, u0=u0):
            return self.integrate(a, u0, linear_solve)

        return Sample(index, {"a": a, "u0": u0}, run)

    def integrate(self, a: np.ndarray, u0: np.ndarray, linear_solve: LinearSolve) -> dict[str, np.ndarray]:
        """Time-step from ``u0`` (grid-shaped) with coefficient ``a``; returns ``u`` and ``trajectory``."""
        a = check_field("a", a, self.shape, positive=True)
        u = check_field("u0", u0, self.shape).ravel().copy()
        return _theta_steps(diffusion_operator(a), float(self.params["forcing"]), u, self.shape, self.params,
                            linear_solve)


class AdvectionDiffusionFamily(PDEFamily):
    """Advection–diffusion ``-eps lap u + v·grad u = f``, ``u = 0`` on the boundary: steady, or
    in time from ``u0`` (``num_steps > 0``).

    ``eps = 1/peclet`` with ``max|v| = 1``. The velocity is a uniform unit vector, in a random
    direction (``relation: iid``) or one that turns by ``rotation`` radians per sample (``drift``),
    plus a divergence-free GRF swirl of relative size ``swirl``. Forcing ``f`` is a GRF. Nonsymmetric.

    ``num_steps: 0`` (the default) solves the steady problem, one solve per sample. ``num_steps > 0``
    solves ``u_t - eps lap u + v·grad u = f`` from a GRF ``u0`` with heat's implicit steps
    (``scheme``, ``dt``, ``save_every``, ``rannacher_steps``: one matrix per sample, one solve per
    step) and stores trajectories as heat does: input ``u0``, outputs ``u`` (final) and
    ``trajectory`` (every ``save_every`` steps, time-major). The steady variables ``f`` and ``v``
    of a seed are the same in both variants (``u0`` has a stream of its own).
    """

    name = "advection_diffusion"
    matrix_kind = "nonsymmetric"
    targets = ["u"]
    DEFAULTS = {**_COMMON, "peclet": 50.0, "rotation": 0.05, "swirl": 0.5, **_TIME, "dt": 0.01, "num_steps": 0,
                "save_every": 1}

    @property
    def time_dependent(self) -> bool:
        return int(self.params["num_steps"]) > 0

    @property
    def solves_per_sample(self) -> int:  # type: ignore[override]
        return int(self.params["num_steps"]) + _rannacher(self.params) if self.time_dependent else 1

    @property
    def states(self) -> dict[str, tuple[str, str]]:  # type: ignore[override]
        return {"u": ("u0", "trajectory")} if self.time_dependent else {}

    @property
    def inputs(self) -> list[str]:  # type: ignore[override]
        return ["f"] + [f"v{ax}" for ax in self._axes] + (["u0"] if self.time_dependent else [])

    def _validate(self, p):
        _positive_finite(p, "peclet")
        if not np.isfinite(p["rotation"]):
            raise ParameterError(f"rotation must be finite (radians per sample), got {p['rotation']!r}", "rotation")
        if not (0.0 <= float(p["swirl"]) < 10.0):
            raise ParameterError(f"swirl must be in [0, 10), got {p['swirl']!r}", "swirl")
        ns = p["num_steps"]
        if isinstance(ns, bool) or not isinstance(ns, (int, np.integer)) or ns < 0:
            raise ParameterError(f"num_steps must be an integer >= 0 (0: the steady problem), got {ns!r}",
                                 "num_steps")
        if ns > 0:
            _validate_time(p)

    def extra_coords(self):
        return _time_coords(self.params) if self.time_dependent else {}

    def variables(self):
        d = self._axes
        out = {"f": {"dims": d, "long_name": "source term", "units": "1", "role": "input"}}
        for ax in d:
            out[f"v{ax}"] = {"dims": d, "long_name": f"velocity component {ax}", "units": "1", "role": "input"}
        if not self.time_dependent:
            out["u"] = {"dims": d, "long_name": "solution of -eps lap u + v.grad u = f", "units": "1",
                        "role": "output"}
            return out
        out["u0"] = {"dims": d, "long_name": "initial state", "units": "1", "role": "input"}
        out["u"] = {"dims": d, "long_name": "state at the final time", "units": "1", "role": "output"}
        out["trajectory"] = {"dims": ("time",) + d, "long_name": "saved states", "units": "1", "role": "output"}
        return out

    def operator(self, velocity: tuple[np.ndarray, ...]) -> sp.csr_matrix:
        """``L u = -eps lap u + v·grad u`` for velocity components (grid-shaped): ``(N, N)``, tagged."""
        if len(velocity) != self.dim:
            raise ValueError(f"velocity needs {self.dim} components, got {len(velocity)}")
        vel = tuple(check_field(f"v{ax}", v, self.shape) for ax, v in zip(self._axes, velocity))
        eps = 1.0 / float(self.params["peclet"])
        return on_grid((eps * diffusion_operator(np.ones(self.shape)) + advection_operator(vel)).tocsr(), self.shape)

    def system(self, f: np.ndarray, velocity: tuple[np.ndarray, ...]) -> tuple[sp.csr_matrix, np.ndarray]:
        """Assemble ``(A, b)`` of the steady problem from forcing ``f`` and velocity components (grid-shaped)."""
        f = check_field("f", f, self.shape)
        return self.operator(velocity), f.ravel().copy()

    def integrate(self, f: np.ndarray, velocity: tuple[np.ndarray, ...], u0: np.ndarray,
                  linear_solve: LinearSolve) -> dict[str, np.ndarray]:
        """Time-step from ``u0`` (grid-shaped) with forcing ``f`` and velocity; returns ``u`` and ``trajectory``."""
        f = check_field("f", f, self.shape)
        u = check_field("u0", u0, self.shape).ravel().copy()
        return _theta_steps(self.operator(velocity), f.ravel(), u, self.shape, self.params, linear_solve)

    @property
    def _direction_stream(self) -> int:
        """The stream number of the mean direction's draw (after the GRF streams of the steady problem)."""
        return 1 + (1 if self.dim == 2 else 3)

    def _mean_direction(self, k: int, seed: int) -> tuple[float, ...]:
        """The unit mean velocity of sample k: uniformly random from ``(seed, k)`` (iid), or
        turning by ``rotation`` radians per sample (drift)."""
        if self.params["relation"] != "drift":
            d = np.random.default_rng([int(seed), self._direction_stream, int(k)]).standard_normal(self.dim)
            return tuple(d / np.linalg.norm(d))
        phi = self.params["rotation"] * k
        if self.dim == 2:
            return (np.cos(phi), np.sin(phi))
        return (np.cos(phi), np.sin(phi) * np.cos(0.5 * phi), np.sin(phi) * np.sin(0.5 * phi))

    def _velocity(self, k: int, seed: int, psi: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        p = self.params
        mean = self._mean_direction(k, seed)
        if self.dim == 2:
            gy, gx = np.gradient(psi[0], axis=1), np.gradient(psi[0], axis=0)
            swirl = (gy, -gx)  # curl of a stream function: divergence-free
        else:
            d = [[np.gradient(q, axis=ax) for ax in range(3)] for q in psi]
            swirl = (d[2][1] - d[1][2], d[0][2] - d[2][0], d[1][0] - d[0][1])
        smax = max(np.abs(s).max() for s in swirl) or 1.0
        v = [m + p["swirl"] * s / smax for m, s in zip(mean, swirl)]
        vmax = np.sqrt(sum(c**2 for c in v)).max()
        return tuple(c / vmax for c in v)

    @property
    def noise_streams(self) -> int:  # type: ignore[override]
        # forcing, stream function(s) of the swirl, and the initial state in time
        return self._direction_stream + (1 if self.time_dependent else 0)

    @property
    def stream_ids(self) -> list[int]:
        # u0 comes after the direction's stream, so that f and v are those of the steady variant
        return list(range(self._direction_stream)) + ([self._direction_stream + 1] if self.time_dependent else [])

    def _sample(self, index, seed, xis):
        f, psi = xis[0], xis[1:self._direction_stream]
        vel = self._velocity(index, seed, psi)
        fields = {"f": f, **{f"v{ax}": v for ax, v in zip(self._axes, vel)}}
        if self.time_dependent:
            fields["u0"] = xis[self._direction_stream]

            def run(linear_solve, f=f, vel=vel, u0=fields["u0"]):
                return self.integrate(f, vel, u0, linear_solve)

            return Sample(index, fields, run)

        def run(linear_solve, f=f, vel=vel):
            A, b = self.system(f, vel)
            return {"u": np.asarray(linear_solve(A, b, matrix_changed=True)).reshape(self.shape)}

        return Sample(index, fields, run)


def build_family(name: str, **params: Any) -> PDEFamily:
    """Construct the family registered as ``name``; unknown names/params raise ValueError listing valid ones."""
    return PDE_FAMILIES[name](**params)


def family_parameters(name: str) -> dict[str, Any]:
    """Accepted parameters of family ``name`` and their defaults (a fresh dict)."""
    return dict(PDE_FAMILIES[name].DEFAULTS)
