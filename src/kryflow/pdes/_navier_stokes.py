"""Incompressible Navier–Stokes in a closed 2D cavity with random solid obstacles: ``navier_stokes``.

``u_t + (u·∇)u = -∇p + ν Δu + f``, ``∇·u = 0`` on the unit square, no slip on every wall and
obstacle, the top wall (the lid) sliding at ``lid_speed``; ``ν = 1/reynolds`` (velocity scale 1,
length 1). With no obstacles and the fluid at rest this is the lid-driven cavity.

**Why a staggered (MAC) grid with an incremental pressure correction.** Velocities live on cell
faces (u on x-faces, v on y-faces) and the pressure at cell centres (Harlow & Welch). Then

* the discrete divergence of the discrete gradient is exactly the 5-point graph Laplacian of the
  fluid cells, so one SPD Poisson solve makes the velocity divergence-free to the solver's
  tolerance (nothing else: no interpolation between grids, no checkerboard pressure modes);
* obstacles are whole cells: a face touching a solid cell carries no flow, which is no slip on
  the obstacle for the normal component and, through a mirrored ghost value, for the tangential
  one. Each sample's geometry gives its own pressure matrix (a Neumann Laplacian on an irregular
  set of cells: no fast Poisson transform applies) that stays fixed over its time steps;
* every solve is SPD with a 5-point stencil on a cell grid, so the solver registry applies as it
  is (``auto``, CHOLMOD, PARDISO, pyamg, the geometric multigrid, the window start).

A vorticity–stream-function form would need one Poisson solve too, but every obstacle not
touching a wall is an island whose stream-function value is unknown (one more condition per
island), and its wall vorticity is only first-order accurate; the MAC form has neither problem.

**The step** (second order in space and time; Kim & Moin's CNAB2 with a pressure increment):

1. momentum, per component: ``(I + dt ν/2 K) u* = u^n + dt (-(3/2 N^n - 1/2 N^{n-1}) - G p^n + f)
   - dt ν/2 K u^n + dt ν g``: advection ``N`` explicit (Adams–Bashforth 2, Euler on the first
   step), diffusion implicit (Crank–Nicolson; ``K`` = minus the face Laplacian, ``g`` the lid);
2. pressure increment: ``K_p φ = -(1/dt) D u*`` (``K_p = -D G``, pinned at one fluid cell: the
   Neumann problem's constant is fixed there, and since the right-hand side sums to zero over
   the fluid the pinned equation holds by itself);
3. ``u^{n+1} = u* - dt G φ``, ``p^{n+1} = p^n + φ``.

At a steady state ``φ = 0`` and ``u* = u``, so the steady discrete equations hold exactly (no
splitting error at steady state, unlike Chorin's non-incremental projection). Three solves per
step, each with a matrix of its own that is fixed per sample; each matrix is tagged with its
``sequence_key`` (``"momentum_x"``, ``"momentum_y"``, ``"pressure"``) so that a
:class:`~kryflow.solvers.SequenceSolver` keeps one state per key (factorization, multigrid set-up,
window of earlier solutions) instead of starting over at every switch between them.

**Advection** is the divergence form with central averages on the staggered grid (conservative;
energy-neutral in space for a divergence-free field), explicit in time. Its stability needs the
CFL number ``dt · max(|u| + |v|) / h`` below :data:`CFL_LIMIT`: checked when the family is built
(from ``speed_bound = lid_speed + initial_speed + forcing · T``, with ``|u| + |v| <= √2 |u|``),
measured at every step, reported per sample (``cfl_max``), and a step beyond the limit stops the
run with an error naming ``dt``.

**Random inputs** (i.i.d. per sample: from ``(seed, stream, index)`` alone): the initial
velocity is the curl of a stream function ``ψ`` drawn from the GRF sampler with smoothness
``alpha + 2`` (so its vorticity ``-Δψ`` has the GRF(alpha, tau) spectrum), tapered smoothly to
zero at the walls and obstacles (exactly divergence-free on the grid; no normal flow through any
wall) and scaled to the maximum speed ``initial_speed``; a body force (``forcing > 0``) is the
curl of another such field; obstacles are ``obstacles`` discs of radius in
``[obstacle_radius/2, obstacle_radius]`` drawn uniformly away from the walls, with any fluid
pocket they enclose filled (every fluid cell connected: the pressure is fixed by one pin).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from kryflow._registry import ParameterError

from ._families import _COMMON, LinearSolve, PDEFamily, Sample, _is_number, _positive_finite
from ._grf import GaussianRandomField
from ._operators import on_grid

__all__ = ["NavierStokesFamily", "StaggeredFlow", "CFL_LIMIT", "sequence_key"]

#: largest CFL number ``dt · max(|u| + |v|) / h`` a step may have: the explicit Adams–Bashforth 2
#: step of central advection is stable well inside it (its amplification on the imaginary axis
#: grows like CFL^4 / 4 per step, damped by the implicit viscous term)
CFL_LIMIT = 0.5
#: coefficient of the solid cells in the pressure operator (fluid: 1); see :func:`_pressure_operator`
SOLID_COUPLING = 1e-12


def sequence_key(A: sp.csr_matrix, key: str) -> sp.csr_matrix:
    """``A`` tagged as one of several matrices a time step solves with in turn (``A.sequence_key``):
    a :class:`~kryflow.solvers.SequenceSolver` keeps a separate state per key; returns ``A``."""
    A.sequence_key = str(key)
    return A


def _shift(a: np.ndarray, axis: int, side: int, fill) -> np.ndarray:
    """``a`` moved so that entry ``k`` holds ``a[k + side]`` along ``axis``; ``fill`` outside."""
    out = np.full_like(a, fill)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    if side > 0:
        src[axis], dst[axis] = slice(1, None), slice(None, -1)
    else:
        src[axis], dst[axis] = slice(None, -1), slice(1, None)
    out[tuple(dst)] = a[tuple(src)]
    return out


def _face_operator(open_: np.ndarray, inside: np.ndarray, normal_axis: int, wall_speed: tuple[float, float],
                   h: float) -> tuple[sp.csr_matrix, np.ndarray]:
    """Minus the Laplacian of one velocity component on its interior faces, and the lid term.

    **Arguments:**
        open_: ``(m0, m1)`` faces that carry flow (the unknowns; the others are 0).
        inside: ``(m0, m1)`` closed faces between two solid cells (inside an obstacle).
        normal_axis: the axis the component points along: there every neighbour face sits on the
            grid (a closed one is a wall face with value 0, exactly).
        wall_speed: the tangential wall speed at the low and high end of the other axis (the lid).
        h: cell size.

    **Returns:** ``K`` ``(m, m)`` (``m = m0·m1``; rows of closed faces are 0) and ``g`` ``(m0, m1)``,
    such that the Laplacian is ``-K u + g``. Along the tangential axis a wall lies half a cell
    beyond the last face: the ghost value ``2 U_wall - u`` there, and ``-u`` behind a face inside
    an obstacle; a face on an obstacle's side (one solid neighbour cell) is a wall face, 0 at
    distance h.
    """
    shape = open_.shape
    idx = np.arange(open_.size).reshape(shape)
    diag = np.zeros(shape)
    g = np.zeros(shape)
    rows, cols = [], []
    for axis in (0, 1):
        for end, side in enumerate((-1, 1)):
            outside = _shift(np.zeros(shape, bool), axis, side, True)
            nb_open = _shift(open_, axis, side, False)
            if axis == normal_axis:
                weight = np.ones(shape)
            else:
                nb_inside = _shift(inside, axis, side, False)
                weight = np.where(outside | nb_inside, 2.0, 1.0)
                g += np.where(outside, 2.0 * wall_speed[end], 0.0)
            diag += weight
            pair = open_ & nb_open
            rows.append(idx[pair])
            cols.append(_shift(idx, axis, side, -1)[pair])
    diag = np.where(open_, diag, 0.0).ravel()
    r, c = np.concatenate(rows), np.concatenate(cols)
    n = open_.size
    K = sp.csr_matrix((np.concatenate([diag, -np.ones(r.size)]) / h**2,
                       (np.concatenate([np.arange(n), r]), np.concatenate([np.arange(n), c]))), shape=(n, n))
    return K, np.where(open_, g, 0.0) / h**2


def _pressure_operator(fluid: np.ndarray, pin: tuple[int, int], h: float) -> sp.csr_matrix:
    """``K_p = -D G``: the Neumann Laplacian of the fluid cells (coupled across open faces), ``(n², n²)``.

    Solid cells are coupled to their neighbours by the negligible coefficient
    :data:`SOLID_COUPLING` (harmonic means across the obstacle wall, as ``diffusion_operator``
    takes them), not cut out: the multigrid's operator-dependent interpolation then sees one
    connected grid, where identity rows in the solid left fluid cells next to an obstacle without
    a coarse correction (GMG-PCG from zero at 256² with three discs: 9 iterations against 14). The
    flux this lets through an obstacle wall is ``2 ε / h²`` times a pressure difference, far below
    any solver tolerance; velocities are corrected on the open faces only. The pinned fluid cell
    gets a decoupled diagonal ``4/h²`` (its right-hand side is 0, so is its value); its neighbours
    keep it in their diagonal, which makes the matrix SPD.
    """
    shape = fluid.shape
    idx = np.arange(fluid.size).reshape(shape)
    a = np.where(fluid, 1.0, SOLID_COUPLING)
    free = np.ones(shape, dtype=bool)
    free[pin] = False
    diag = np.zeros(shape)
    rows, cols, vals = [], [], []
    for axis in (0, 1):
        for side in (-1, 1):
            inside = ~_shift(np.zeros(shape, bool), axis, side, True)
            nb_a = _shift(a, axis, side, 1.0)
            t = np.where(inside, 2.0 * a * nb_a / (a + nb_a), 0.0)  # no flux through the outer walls
            diag += t
            pair = inside & free & _shift(free, axis, side, False)
            rows.append(idx[pair])
            cols.append(_shift(idx, axis, side, -1)[pair])
            vals.append(-t[pair])
    diag = np.where(free, diag, 4.0).ravel()
    n = fluid.size
    return sp.csr_matrix((np.concatenate([diag, *vals]) / h**2,
                          (np.concatenate([np.arange(n), *rows]), np.concatenate([np.arange(n), *cols]))),
                         shape=(n, n))


def _pin_cell(fluid: np.ndarray) -> tuple[int, int]:
    """The fluid cell where the pressure is fixed: one that stays a coarse point through the most
    multigrid levels (index ``2^k - 1`` per axis with k largest; nearest the centre among equals).
    Where the pin sits moves GMG-PCG by an iteration at most (8-9 from zero at 256², measured)."""
    n0, n1 = fluid.shape
    cand = np.argwhere(fluid)
    centre = np.array([(n0 - 1) / 2.0, (n1 - 1) / 2.0])
    depth = np.minimum(*(np.log2((cand[:, e] + 1) & -(cand[:, e] + 1)) for e in (0, 1)))
    score = -depth * 1e6 + np.sum((cand - centre) ** 2, axis=1)
    return tuple(int(v) for v in cand[int(np.argmin(score))])


class StaggeredFlow:
    """The MAC discretisation of one sample: geometry, matrices, state and the time step.

    **Arguments:**
        solid: ``(n, n)`` bool, cells inside an obstacle (every fluid cell must be connected).
        U0: ``(n+1, n)`` x-velocity on the x-faces (rows 0 and n: the side walls), ``V0``
            ``(n, n+1)`` y-velocity on the y-faces; 0 on every closed face, divergence-free.
        reynolds, lid_speed, dt: ``ν = 1/reynolds``; the top wall's speed; the time step.
        force: ``(Fx, Fy)`` body force on the faces (shapes of U0, V0), or None.

    Axis 0 is x, axis 1 is y (C order, as every family's fields); cell ``(i, j)`` has its centre
    at ``((i + 1/2) h, (j + 1/2) h)``. :meth:`step` advances one step with three solves.
    """

    def __init__(self, solid: np.ndarray, U0: np.ndarray, V0: np.ndarray, *, reynolds: float, lid_speed: float,
                 dt: float, force: tuple[np.ndarray, np.ndarray] | None = None):
        self.solid = np.asarray(solid, dtype=bool)
        n = self.solid.shape[0]
        if self.solid.shape != (n, n):
            raise ValueError(f"solid must be square (n, n), got {self.solid.shape}")
        self.n, self.h = n, 1.0 / n
        self.nu, self.lid_speed, self.dt = 1.0 / float(reynolds), float(lid_speed), float(dt)
        fluid = ~self.solid
        self.fluid = fluid
        self.open_u = fluid[:-1, :] & fluid[1:, :]  # interior x-faces i = 1..n-1: (n-1, n)
        self.open_v = fluid[:, :-1] & fluid[:, 1:]  # interior y-faces j = 1..n-1: (n, n-1)
        Ku, self.g_u = _face_operator(self.open_u, self.solid[:-1, :] & self.solid[1:, :], 0, (0.0, self.lid_speed),
                                      self.h)
        Kv, self.g_v = _face_operator(self.open_v, self.solid[:, :-1] & self.solid[:, 1:], 1, (0.0, 0.0), self.h)
        self.K_u, self.K_v = Ku, Kv
        c = 0.5 * self.dt * self.nu
        eye_u, eye_v = sp.identity(Ku.shape[0], format="csr"), sp.identity(Kv.shape[0], format="csr")
        keys = NavierStokesFamily.sequence_keys
        self.A_u = sequence_key(on_grid((eye_u + c * Ku).tocsr(), self.open_u.shape), keys[0])
        self.A_v = sequence_key(on_grid((eye_v + c * Kv).tocsr(), self.open_v.shape), keys[1])
        self.pin = _pin_cell(fluid)
        self.A_p = sequence_key(on_grid(_pressure_operator(fluid, self.pin, self.h), (n, n)), keys[2])
        self.U = np.array(U0, dtype=np.float64)
        self.V = np.array(V0, dtype=np.float64)
        if self.U.shape != (n + 1, n) or self.V.shape != (n, n + 1):
            raise ValueError(f"U0 must be ({n + 1}, {n}) and V0 ({n}, {n + 1}), got {self.U.shape}, {self.V.shape}")
        self.U[0], self.U[-1] = 0.0, 0.0
        self.U[1:-1] *= self.open_u
        self.V[:, 0], self.V[:, -1] = 0.0, 0.0
        self.V[:, 1:-1] *= self.open_v
        if force is None:
            self.f_u, self.f_v = np.zeros(self.open_u.shape), np.zeros(self.open_v.shape)
        else:
            self.f_u, self.f_v = force[0][1:-1] * self.open_u, force[1][:, 1:-1] * self.open_v
        self.p = np.zeros((n, n))
        self._previous_advection: tuple[np.ndarray, np.ndarray] | None = None
        self.steps = 0
        self._solves = 0

    # -- operators on the state ---------------------------------------------------------------
    def advection(self, U: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``((u·∇)u, (u·∇)v)`` in divergence form on the interior faces, ``(n-1, n)`` and ``(n, n-1)``."""
        h = self.h
        uc = 0.5 * (U[:-1] + U[1:])  # cell centres (n, n)
        vc = 0.5 * (V[:, :-1] + V[:, 1:])
        n = self.n
        # corners (n+1, n+1): u averaged along y, v along x; on the walls v (resp. u) is 0 there
        uk = np.zeros((n + 1, n + 1))
        vk = np.zeros((n + 1, n + 1))
        uk[:, 1:-1] = 0.5 * (U[:, :-1] + U[:, 1:])
        vk[1:-1, :] = 0.5 * (V[:-1, :] + V[1:, :])
        uv = uk * vk
        Nu = (uc[1:] ** 2 - uc[:-1] ** 2 + uv[1:-1, 1:] - uv[1:-1, :-1]) / h
        Nv = (uv[1:, 1:-1] - uv[:-1, 1:-1] + vc[:, 1:] ** 2 - vc[:, :-1] ** 2) / h
        return Nu * self.open_u, Nv * self.open_v

    def divergence(self, U: np.ndarray | None = None, V: np.ndarray | None = None) -> np.ndarray:
        """``D u`` per cell ``(n, n)`` (0 in solid cells: all their faces are closed)."""
        U = self.U if U is None else U
        V = self.V if V is None else V
        return (U[1:] - U[:-1] + V[:, 1:] - V[:, :-1]) / self.h

    def cell_velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """Velocity at the cell centres, ``(n, n)`` each (face averages)."""
        return 0.5 * (self.U[:-1] + self.U[1:]), 0.5 * (self.V[:, :-1] + self.V[:, 1:])

    def pressure(self) -> np.ndarray:
        """Pressure ``(n, n)`` with zero mean over the fluid (0 in solid cells)."""
        return np.where(self.fluid, self.p - self.p[self.fluid].mean(), 0.0)

    def kinetic_energy(self) -> float:
        """``1/2 ∫ |u|²``: the face values' squares times the cell area."""
        return 0.5 * self.h**2 * float(np.sum(self.U**2) + np.sum(self.V**2))

    def cfl(self) -> float:
        """``dt · max(|u| + |v|) / h`` over the cell centres."""
        uc, vc = self.cell_velocity()
        return self.dt * float(np.max(np.abs(uc) + np.abs(vc))) / self.h

    # -- the time step --------------------------------------------------------------------------
    def step(self, linear_solve: LinearSolve) -> None:
        """Advance one step ``dt``: momentum (two solves), pressure increment (one solve), correction."""
        dt, h, nu = self.dt, self.h, self.nu
        first = self.steps == 0
        Nu, Nv = self.advection(self.U, self.V)
        if self._previous_advection is None:
            Au, Av = Nu, Nv
        else:
            Au, Av = 1.5 * Nu - 0.5 * self._previous_advection[0], 1.5 * Nv - 0.5 * self._previous_advection[1]
        self._previous_advection = (Nu, Nv)
        u, v, p = self.U[1:-1], self.V[:, 1:-1], self.p
        gx, gy = (p[1:] - p[:-1]) / h, (p[:, 1:] - p[:, :-1]) / h
        rhs_u = u + dt * (self.f_u - Au - gx) - 0.5 * dt * nu * (self.K_u @ u.ravel()).reshape(u.shape) \
            + dt * nu * self.g_u
        rhs_v = v + dt * (self.f_v - Av - gy) - 0.5 * dt * nu * (self.K_v @ v.ravel()).reshape(v.shape) \
            + dt * nu * self.g_v
        u_star = np.zeros_like(self.U)
        v_star = np.zeros_like(self.V)
        u_star[1:-1] = self._solve(linear_solve, self.A_u, (rhs_u * self.open_u).ravel(), first).reshape(u.shape)
        v_star[:, 1:-1] = self._solve(linear_solve, self.A_v, (rhs_v * self.open_v).ravel(), first).reshape(v.shape)
        rhs_p = -self.divergence(u_star, v_star) / dt
        rhs_p[self.pin] = 0.0
        rhs_p[self.solid] = 0.0
        phi = self._solve(linear_solve, self.A_p, rhs_p.ravel(), first).reshape(self.p.shape)
        u_star[1:-1] -= dt * self.open_u * (phi[1:] - phi[:-1]) / h
        v_star[:, 1:-1] -= dt * self.open_v * (phi[:, 1:] - phi[:, :-1]) / h
        self.U, self.V = u_star, v_star
        self.p = p + phi
        self.steps += 1

    def _solve(self, linear_solve: LinearSolve, A: sp.csr_matrix, b: np.ndarray, changed: bool) -> np.ndarray:
        x = np.asarray(linear_solve(A, b, matrix_changed=changed), dtype=np.float64)
        self._solves += 1
        return x


def _disc_obstacles(n: int, rng: np.random.Generator, count: int, radius: float) -> np.ndarray:
    """``(n, n)`` bool: ``count`` discs of radius in [radius/2, radius], centres uniform at least
    ``radius + 2h`` from every wall, staircased to the cells whose centre they contain."""
    c = (np.arange(n) + 0.5) / n
    X, Y = np.meshgrid(c, c, indexing="ij")
    solid = np.zeros((n, n), dtype=bool)
    radii = radius * (0.5 + 0.5 * rng.random(count))
    margin = radius + 2.0 / n
    centres = margin + (1.0 - 2.0 * margin) * rng.random((count, 2))
    for (cx, cy), r in zip(centres, radii):
        solid |= (X - cx) ** 2 + (Y - cy) ** 2 <= r**2
    return solid


def _fill_pockets(solid: np.ndarray) -> np.ndarray:
    """``solid`` with every fluid region but the largest filled (4-connected, as the faces couple)."""
    labels, count = ndi.label(~solid)
    if count <= 1:
        return solid
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels != int(np.argmax(sizes))


def _wall_nodes(solid: np.ndarray) -> np.ndarray:
    """``(n+1, n+1)`` bool: cell corners on the outer walls or touching a solid cell."""
    pad = np.pad(solid, 1, constant_values=True)
    return pad[:-1, :-1] | pad[1:, :-1] | pad[:-1, 1:] | pad[1:, 1:]


def _taper(n: int, solid: np.ndarray, width: float) -> np.ndarray:
    """``(n+1, n+1)`` weights on the cell corners: 0 on every wall node, rising smoothly
    (``1 - exp(-(d/width)²)`` in the distance d to each wall) to 1 away from the walls."""
    x = np.arange(n + 1) / n
    s = lambda d: 1.0 - np.exp(-((np.maximum(d, 0.0) / width) ** 2))  # noqa: E731
    X, Y = np.meshgrid(x, x, indexing="ij")
    w = s(X) * s(1.0 - X) * s(Y) * s(1.0 - Y)
    if solid.any():
        d = ndi.distance_transform_edt(~_wall_nodes(solid)) / n
        w *= s(d)
    return np.where(_wall_nodes(solid), 0.0, w)


def _curl(psi: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Face velocities ``(∂ψ/∂y, -∂ψ/∂x)`` from a stream function on the corners ``(n+1, n+1)``:
    exactly divergence-free on the grid, shapes ``(n+1, n)`` and ``(n, n+1)``."""
    return (psi[:, 1:] - psi[:, :-1]) / h, -(psi[1:, :] - psi[:-1, :]) / h


class NavierStokesFamily(PDEFamily):
    """Incompressible 2D Navier–Stokes in a lid-driven cavity with random obstacles (trajectories).

    Parameters (besides ``n``, ``relation``, ``alpha``, ``tau``; ``dim`` must be 2): ``reynolds``
    (ν = 1/reynolds), ``lid_speed`` (0: a closed box), ``obstacles`` (discs per sample, 0: none)
    and ``obstacle_radius``, ``initial_speed`` (max speed of the random initial flow; 0: at rest),
    ``forcing`` (max of a random steady divergence-free body force; 0: none), ``dt``,
    ``num_steps``, ``save_every``. Module docstring: the discretisation and why. ``relation:
    drift`` correlates the GRF fields of neighbouring samples; the obstacles stay drawn from
    ``(seed, index)`` alone.

    A sample's ``make_flow()`` gives its :class:`StaggeredFlow` at the initial state (the face
    velocities the stored cell-centred inputs average), to be stepped with :meth:`integrate`.

    Inputs ``mask`` (1 in solid cells), ``vx0``, ``vy0`` (cell-centred initial velocity), and
    ``fx``, ``fy`` where ``forcing > 0``; outputs the final ``vx``, ``vy``, ``p`` (zero mean over
    the fluid), their saved states every ``save_every`` steps (``trajectory_vx``, ...: time-major,
    as heat's ``trajectory``), ``kinetic_energy`` at the saved times and ``cfl_max``. Three solves
    per step (two momentum components, one pressure increment), each matrix fixed per sample.
    """

    name = "navier_stokes"
    matrix_kind = "spd"
    targets = ["vx", "vy"]
    DEFAULTS = {
        **_COMMON,
        "reynolds": 100.0,
        "lid_speed": 1.0,
        "obstacles": 3,
        "obstacle_radius": 0.1,
        "initial_speed": 0.5,
        "forcing": 0.0,
        "dt": 0.005,
        "num_steps": 100,
        "save_every": 10,
    }
    #: the matrices a step solves with in turn (``A.sequence_key``); ``method: auto`` has a rule for them
    sequence_keys = ("momentum_x", "momentum_y", "pressure")
    #: state variable -> (its initial-state input, its trajectory output); heat's is u -> (u0, trajectory)
    states = {"vx": ("vx0", "trajectory_vx"), "vy": ("vy0", "trajectory_vy")}

    def _validate(self, p):
        if self.dim != 2:
            raise ParameterError(f"navier_stokes is 2D only (dim: 2), got dim={p['dim']!r}", "dim")
        for key in ("reynolds", "dt"):
            _positive_finite(p, key)
        for key in ("lid_speed", "initial_speed", "forcing"):
            if not (_is_number(p[key]) and 0 <= p[key] < math.inf):
                raise ParameterError(f"{key} must be a finite number >= 0, got {p[key]!r}", key)
        ob = p["obstacles"]
        if isinstance(ob, bool) or not isinstance(ob, (int, np.integer)) or not 0 <= ob <= 50:
            raise ParameterError(f"obstacles must be an integer in [0, 50] (discs per sample), got {ob!r}", "obstacles")
        r = p["obstacle_radius"]
        if not (_is_number(r) and 0 < r <= 0.25):
            raise ParameterError(f"obstacle_radius must be in (0, 0.25] (fraction of the side), got {r!r}",
                                 "obstacle_radius")
        ns, se = p["num_steps"], p["save_every"]
        if isinstance(ns, bool) or not isinstance(ns, (int, np.integer)) or ns < 1:
            raise ParameterError(f"num_steps must be an integer >= 1, got {ns!r}", "num_steps")
        if isinstance(se, bool) or not isinstance(se, (int, np.integer)) or se < 1 or ns % se:
            raise ParameterError(f"save_every must be a positive divisor of num_steps={ns}, got {se!r}", "save_every")
        cfl = self.cfl_estimate()
        if cfl > CFL_LIMIT:
            bound = self.speed_bound()
            dt_max = CFL_LIMIT / (math.sqrt(2.0) * bound * p["n"])
            raise ParameterError(
                f"dt={p['dt']} breaks the CFL bound on n={p['n']}: estimated CFL number {cfl:.3g} > {CFL_LIMIT} "
                f"(speed bound {bound:.3g} = lid_speed + initial_speed + forcing x num_steps x dt, |u|+|v| <= "
                f"sqrt(2) x that), where the explicit advection step is not reliably stable; use dt <= {dt_max:.3g} "
                "(or more num_steps for the same time)", "dt")

    def speed_bound(self) -> float:
        """A priori speed scale: ``lid_speed + initial_speed + forcing · num_steps · dt``."""
        p = self.params
        return float(p["lid_speed"] + p["initial_speed"] + p["forcing"] * p["num_steps"] * p["dt"])

    def cfl_estimate(self) -> float:
        """The CFL number the config is checked with: ``dt · √2 · speed_bound / h``."""
        return float(self.params["dt"]) * math.sqrt(2.0) * self.speed_bound() * self.shape[0]

    @property
    def solves_per_sample(self) -> int:  # type: ignore[override]
        return 3 * int(self.params["num_steps"])

    @property
    def inputs(self) -> list[str]:  # type: ignore[override]
        return ["mask", "vx0", "vy0"] + (["fx", "fy"] if self.params["forcing"] > 0 else [])

    noise_streams = 2  # initial stream function, forcing stream function (obstacles: their own rng)

    def _grf(self) -> GaussianRandomField:
        # stream functions two orders smoother than the vorticity they carry
        return GaussianRandomField(self.shape, self.params["alpha"] + 2.0, self.params["tau"])

    def extra_coords(self):
        p = self.params
        t = p["dt"] * p["save_every"] * np.arange(1, p["num_steps"] // p["save_every"] + 1)
        return {"time": (("time",), t, {"units": "1", "long_name": "time after the initial state (lid passages)"})}

    def variables(self):
        d = self._axes
        out = {
            "mask": {"dims": d, "long_name": "solid obstacle indicator (1 = solid cell)", "units": "1",
                     "role": "input"},
            "vx0": {"dims": d, "long_name": "initial x-velocity (cell centre)", "units": "1", "role": "input"},
            "vy0": {"dims": d, "long_name": "initial y-velocity (cell centre)", "units": "1", "role": "input"},
        }
        if self.params["forcing"] > 0:
            out["fx"] = {"dims": d, "long_name": "body force, x (cell centre)", "units": "1", "role": "input"}
            out["fy"] = {"dims": d, "long_name": "body force, y (cell centre)", "units": "1", "role": "input"}
        for name, long_name in (("vx", "x-velocity"), ("vy", "y-velocity"), ("p", "pressure (zero fluid mean)")):
            out[name] = {"dims": d, "long_name": f"{long_name} at the final time", "units": "1", "role": "output"}
        for name, long_name in (("vx", "x-velocity"), ("vy", "y-velocity"), ("p", "pressure (zero fluid mean)")):
            out[f"trajectory_{name}"] = {"dims": ("time",) + d, "long_name": f"saved states: {long_name}",
                                         "units": "1", "role": "output"}
        out["kinetic_energy"] = {"dims": ("time",), "long_name": "kinetic energy 1/2 int |u|^2 at the saved times",
                                 "units": "1", "role": "output"}
        out["cfl_max"] = {"dims": (), "long_name": "largest CFL number dt max(|u|+|v|)/h of the trajectory",
                          "units": "1", "role": "output"}
        return out

    def geometry(self, index: int, seed: int) -> np.ndarray:
        """Sample ``index``'s solid cells ``(n, n)``: from ``(seed, index)`` alone (its own stream)."""
        p = self.params
        n = self.shape[0]
        if not p["obstacles"]:
            return np.zeros((n, n), dtype=bool)
        rng = np.random.default_rng([int(seed), self.noise_streams, int(index)])
        return _fill_pockets(_disc_obstacles(n, rng, int(p["obstacles"]), float(p["obstacle_radius"])))

    def _field(self, xi: np.ndarray, solid: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Face fields ``curl(taper · ψ)`` from a GRF draw (cells, wrapped onto the corners), scaled
        to the largest face value ``scale``."""
        n = self.shape[0]
        psi = np.pad(xi, ((0, 1), (0, 1)), mode="wrap") * _taper(n, solid, 0.1)
        fu, fv = _curl(psi, 1.0 / n)
        top = max(np.abs(fu).max(), np.abs(fv).max())
        if scale == 0.0 or top == 0.0:
            return np.zeros_like(fu), np.zeros_like(fv)
        return fu * (scale / top), fv * (scale / top)

    def make_flow(self, solid: np.ndarray, U0: np.ndarray, V0: np.ndarray,
                  force: tuple[np.ndarray, np.ndarray] | None = None) -> StaggeredFlow:
        """The discretisation of one sample with this family's ``reynolds``, ``lid_speed``, ``dt``."""
        p = self.params
        return StaggeredFlow(solid, U0, V0, reynolds=p["reynolds"], lid_speed=p["lid_speed"], dt=p["dt"], force=force)

    def _sample(self, index, seed, xis):
        p = self.params
        solid = self.geometry(index, seed)
        U0, V0 = self._field(xis[0], solid, float(p["initial_speed"]))
        force = self._field(xis[1], solid, float(p["forcing"])) if p["forcing"] > 0 else None
        cell = lambda fu, fv: (0.5 * (fu[:-1] + fu[1:]), 0.5 * (fv[:, :-1] + fv[:, 1:]))  # noqa: E731
        fields = {"mask": solid.astype(np.float64)}
        fields["vx0"], fields["vy0"] = cell(U0, V0)
        if force is not None:
            fields["fx"], fields["fy"] = cell(*force)

        def run(linear_solve, solid=solid, U0=U0, V0=V0, force=force):
            return self.integrate(self.make_flow(solid, U0, V0, force), linear_solve)

        sample = Sample(index, fields, run)
        # the sample's discretisation at its initial state, for checks that step it themselves
        sample.make_flow = lambda: self.make_flow(solid, U0, V0, force)
        return sample

    def integrate(self, flow: StaggeredFlow, linear_solve: LinearSolve,
                  on_step: Callable[[StaggeredFlow], Any] | None = None) -> dict[str, np.ndarray]:
        """Run ``num_steps`` steps of ``flow``; returns the outputs of :meth:`variables`.

        Raises :class:`ParameterError` naming ``dt`` when a step's CFL number exceeds :data:`CFL_LIMIT`.
        ``on_step(flow)`` is called after every step (checks, diagnostics).
        """
        p = self.params
        saved: dict[str, list] = {"vx": [], "vy": [], "p": [], "energy": []}
        cfl_max = flow.cfl()
        for step in range(1, int(p["num_steps"]) + 1):
            flow.step(linear_solve)
            cfl = flow.cfl()
            cfl_max = max(cfl_max, cfl)
            if not cfl <= CFL_LIMIT:
                raise ParameterError(
                    f"the flow reached CFL number {cfl:.3g} > {CFL_LIMIT} at step {step} (dt={p['dt']}, n={p['n']}): "
                    "the explicit advection step is unstable there; lower dt", "dt")
            if on_step is not None:
                on_step(flow)
            if step % p["save_every"] == 0:
                vx, vy = flow.cell_velocity()
                saved["vx"].append(vx)
                saved["vy"].append(vy)
                saved["p"].append(flow.pressure())
                saved["energy"].append(flow.kinetic_energy())
        out = {f"trajectory_{k}": np.stack(saved[k]) for k in ("vx", "vy", "p")}
        out.update(vx=out["trajectory_vx"][-1], vy=out["trajectory_vy"][-1], p=out["trajectory_p"][-1])
        out["kinetic_energy"] = np.asarray(saved["energy"])
        out["cfl_max"] = np.asarray(cfl_max)
        return out
