"""PDE families that produce seeded sequences of sparse linear systems (2D and 3D; Navier–Stokes 2D).

Public API: :data:`PDE_FAMILIES`, :func:`build_family`, :func:`family_parameters`,
:class:`PDEFamily`, :class:`Sample`, the GRF sampler and the finite-volume operators.
"""

from ._families import (
    PDE_FAMILIES,
    AdvectionDiffusionFamily,
    DarcyFamily,
    HeatFamily,
    PDEFamily,
    Sample,
    build_family,
    family_parameters,
)
from ._grf import GaussianRandomField
from ._navier_stokes import CFL_LIMIT, NavierStokesFamily, StaggeredFlow, sequence_key
from ._operators import advection_operator, diffusion_operator, on_grid

__all__ = [
    "PDE_FAMILIES",
    "PDEFamily",
    "Sample",
    "DarcyFamily",
    "HeatFamily",
    "AdvectionDiffusionFamily",
    "NavierStokesFamily",
    "StaggeredFlow",
    "CFL_LIMIT",
    "sequence_key",
    "build_family",
    "family_parameters",
    "GaussianRandomField",
    "diffusion_operator",
    "advection_operator",
    "on_grid",
]
