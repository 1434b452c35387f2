"""Krylov solvers for sequences of sparse systems: plain CG/GMRES baselines, recycled CG
(eigCG harvesting, used for deflation or an incremental spectral preconditioner), GCRO-DR,
sparse LU, the strongest direct and algebraic-multigrid solvers from elsewhere as optional
baselines (CHOLMOD, PARDISO, pyamg), preconditioners (Jacobi, ILU, AMG, and a geometric
multigrid on the families' grids), and the sequence driver.

scipy's calling convention: ``x, info = cg(A, b, x0=None, *, rtol=1e-8, atol=0.0,
maxiter=None, M=None, callback=None)`` with ``A`` and ``M`` as matrices, dense arrays or
``LinearOperator``s. Methods and preconditioners are registries (:data:`SOLVER_METHODS`,
:data:`PRECONDITIONERS`): a new method is one new private module with a
:class:`SequenceMethod` subclass.
"""

# the methods first, so that SOLVER_METHODS lists them in this order
from ._cg import cg  # isort: skip
from ._recycled_cg import RecycledCG  # isort: skip
from ._gmres import gmres  # isort: skip
from ._gcrodr import GCRODR  # isort: skip
from ._direct import SparseLU  # noqa: F401  # isort: skip
from ._cholmod import CholmodCholesky  # noqa: F401  # isort: skip
from ._pardiso import Pardiso  # noqa: F401  # isort: skip
from ._pyamg import PyAMGSolver  # noqa: F401  # isort: skip
from ._benchmark import (
    STRONG_BASELINES,
    add_targets,
    benchmark_sequence,
    default_strategies,
    default_strategy,
    sequence_label,
)
from ._common import SolveInfo, SolverDidNotConverge
from ._methods import SOLVER_METHODS, SequenceMethod, check_solver_options, solver_options
from ._preconditioners import PRECONDITIONERS, make_preconditioner
from ._gmg import GMGPreconditioner  # noqa: F401  # isort: skip
from ._sequence import SequenceSolver
from ._start import SolutionWindow
from ._choice import StrategyChoice, check_choice  # isort: skip
from ._warm_up import warm_up

# reference implementations from elsewhere, registered for comparison only
BASELINE_METHODS = tuple(name for name, cls in SOLVER_METHODS.items() if cls.baseline)


def make_sequence_solver(options: dict) -> SequenceSolver | StrategyChoice:
    """The sequence solver of a solver config: a :class:`StrategyChoice` for ``method: choose``
    (its ``strategies``, ``choose_seed``, ``choose_rate`` and the shared options), else a
    :class:`SequenceSolver` of the options."""
    if options.get("method") != "choose":
        return SequenceSolver(**options)
    return StrategyChoice.from_config(options)

__all__ = [
    "cg",
    "gmres",
    "RecycledCG",
    "GCRODR",
    "SolveInfo",
    "SolutionWindow",
    "SolverDidNotConverge",
    "SOLVER_METHODS",
    "BASELINE_METHODS",
    "PRECONDITIONERS",
    "make_preconditioner",
    "SequenceMethod",
    "SequenceSolver",
    "StrategyChoice",
    "check_choice",
    "make_sequence_solver",
    "check_solver_options",
    "solver_options",
    "default_strategy",
    "default_strategies",
    "benchmark_sequence",
    "add_targets",
    "sequence_label",
    "STRONG_BASELINES",
    "warm_up",
]
