"""Krylov solvers for sequences of sparse systems: plain CG/GMRES baselines, recycled CG
(eigCG harvesting, used for deflation or an incremental spectral preconditioner), GCRO-DR,
preconditioners, and the sequence driver.

scipy-like calling convention: ``x, info = cg(A, b, x0=None, *, rtol=1e-8, atol=0.0,
maxiter=None, M=None, callback=None)``.
"""

from ._benchmark import add_targets, benchmark_sequence, default_strategies, default_strategy, sequence_label
from ._common import SolveInfo, SolverDidNotConverge
from ._gcrodr import GCRODR
from ._krylov import cg, gmres
from ._preconditioners import PRECONDITIONERS, make_preconditioner
from ._recycled_cg import RecycledCG
from ._sequence import BASELINE_METHODS, SOLVER_METHODS, SequenceSolver

__all__ = [
    "cg",
    "gmres",
    "RecycledCG",
    "GCRODR",
    "SolveInfo",
    "SolverDidNotConverge",
    "SOLVER_METHODS",
    "BASELINE_METHODS",
    "PRECONDITIONERS",
    "make_preconditioner",
    "SequenceSolver",
    "default_strategy",
    "default_strategies",
    "benchmark_sequence",
    "add_targets",
    "sequence_label",
]
