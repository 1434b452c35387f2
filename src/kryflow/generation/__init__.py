"""kryflow generation: PDE samples drawn and solved, for a store or for a trainer.

One generator (:class:`SampleGenerator`) draws the sample of ``(family, params, seed)`` at an index
and solves it with a sequence solver that keeps its state over a block of indices. Offline
generation (:func:`generate_dataset`) writes what it makes into a zarr store (``kryflow.data``
keeps storage: schema, store, writer, loader, import); the online stream (:class:`OnlineStream`,
``training.data: online``) hands what K generator processes make to a trainer, through a buffer
with a policy (:data:`BUFFER_POLICIES`); a surrogate start (``solver.initial_guess: surrogate``)
starts the solves from a trained model's prediction.

Nothing in this package imports torch at module level: a generator process loads only the PDE
families and the solvers.
"""

from ._buffer import BUFFER_POLICIES, BufferItem, BufferPolicy, SampleBuffer
from ._offline import (
    CHOICE_STATS,
    LEARNER_STATS,
    SAMPLE_STATS,
    SOLVER_STATS,
    generate_dataset,
    shard_range,
    solve_stats,
)
from ._order import ORDERS, input_sketch, similarity_order, solve_order
from ._sampler import SampleGenerator, SolvedSample, in_solve_order, solver_config
from ._stream import (
    DATA_SOURCES,
    ONLINE_MODES,
    ONLINE_OPTIONS,
    OnlineStream,
    OnlineStreamError,
    generator_main,
    online_options,
)
from ._surrogate_start import (
    INITIAL_GUESSES,
    START_CANDIDATES,
    StartModel,
    SurrogateStart,
    SurrogateStartError,
    initial_guess_options,
    is_model_uri,
    load_start_model,
    resolve_surrogate,
)

__all__ = [
    "BUFFER_POLICIES",
    "CHOICE_STATS",
    "DATA_SOURCES",
    "INITIAL_GUESSES",
    "LEARNER_STATS",
    "ONLINE_MODES",
    "ONLINE_OPTIONS",
    "ORDERS",
    "SAMPLE_STATS",
    "SOLVER_STATS",
    "START_CANDIDATES",
    "BufferItem",
    "BufferPolicy",
    "OnlineStream",
    "OnlineStreamError",
    "SampleBuffer",
    "SampleGenerator",
    "SolvedSample",
    "StartModel",
    "SurrogateStart",
    "SurrogateStartError",
    "generate_dataset",
    "generator_main",
    "in_solve_order",
    "initial_guess_options",
    "input_sketch",
    "is_model_uri",
    "load_start_model",
    "online_options",
    "resolve_surrogate",
    "shard_range",
    "similarity_order",
    "solve_order",
    "solve_stats",
    "solver_config",
]
