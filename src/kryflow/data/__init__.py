"""kryflow datasets: one zarr v3 store per dataset, written through xarray.

Schema (version 1) of ``data/<dataset>.zarr``
----------------------------------------------
Dimensions ``sample`` plus per-sample dims such as ``x``, ``y`` (``z``), ``time``, ``solve``;
physical coordinates for the grid dims and ``time``; ``sample`` holds the generation index.

Data variables, each with ``long_name``, ``units`` and ``role``:

- ``role="input"`` / ``"output"``: fields such as the coefficient ``a``, forcing, initial state,
  solution ``u`` or trajectory, dims ``(sample, *per_sample_dims)``.
- ``role="solver_stat"``: how the data was made, per solve ``(sample, solve)`` (iterations,
  matvecs, true relative residual, seconds, the one-time set-up within those seconds,
  recycle-space size, converged) and per sample ``(sample,)`` (``solve_position`` in its
  shard's solve order, ``shard``). Checksummed, but not part of the digest.
- ``split`` (``role="split"``): int8 codes 0/1/2 = train/val/test (CF ``flag_values`` /
  ``flag_meanings``). Membership is random per sample, or per run of ``split_block``
  consecutive samples (provenance attribute ``split_block``): drifting sequences need blocks,
  since neighbours are near copies and per-sample splits would leak test samples into train.

Provenance attributes of a generated store include ``sample_relation`` (``iid`` or ``drift``,
with ``sample_relation_note`` saying what it means), ``solver`` (strategy and solve order), the
one-time costs ``solver_one_time_seconds`` (= ``solver_warm_up_seconds`` + ``solve_order_seconds``
+ ``solver_setup_seconds``) and, for a merged sharded store, ``dataset_parts``.

Chunks are blocks of ``kryflow_chunk_samples`` whole samples (all other dims unchunked),
compressed with zstd and protected by a crc32c codec.

Variable attributes added at completion: ``sha256`` (checksum of the decoded values: sha256 over
name, dtype, shape and the per-chunk ``chunk_sha256`` in order); for model inputs/targets
``train_mean`` / ``train_std`` over the train split (absent if the store has no train split).

Group attributes: ``kryflow_schema_version``, ``kryflow_inputs`` / ``kryflow_targets`` (channel
order), ``kryflow_nondeterministic`` (checksummed, not in the digest), ``kryflow_chunk_samples``,
``kryflow_num_samples``, ``kryflow_split_sizes``, ``kryflow_digest`` (sha256 over the checksums
of the data variables and coordinates, not of how they were made: equal data, equal digest), ``kryflow_created``
and ``kryflow_complete`` (written last). All other group attributes are provenance given by the
producer (PDE family, parameters, full config, kryflow version, git commit, ...).

A store is written as ``<path>.tmp-<pid>-<id>`` and renamed to ``<path>`` only when complete, so
a store at ``<path>`` is always complete; readers also refuse a store without the marker.
"""

from ._loader import ChunkReader, SplitLoader, make_loader
from ._merge import merge_dataset
from ._neuraloperator import import_neuraloperator_darcy
from ._pdebench import import_pdebench_darcy, read_pdebench_darcy_header
from ._schema import SCHEMA_VERSION, SPLITS, DatasetError, VariableSpec, assign_splits
from ._store import (
    dataset_digest,
    grid_shape,
    inspect_dataset,
    normalization_stats,
    open_dataset,
    split_indices,
    verify_dataset,
)
from ._synthetic import write_synthetic_dataset
from ._task import TASK_KINDS, Task, TrajectoryLayout, check_task, task_stats, trajectory_layout, unrolled_loss
from ._trained_on import TrainedOn, trained_on_of_store
from ._well import export_well
from ._writer import ZarrDatasetWriter

__all__ = [
    "SCHEMA_VERSION",
    "SPLITS",
    "TASK_KINDS",
    "ChunkReader",
    "DatasetError",
    "SplitLoader",
    "Task",
    "TrainedOn",
    "TrajectoryLayout",
    "VariableSpec",
    "ZarrDatasetWriter",
    "assign_splits",
    "check_task",
    "dataset_digest",
    "export_well",
    "grid_shape",
    "import_neuraloperator_darcy",
    "import_pdebench_darcy",
    "inspect_dataset",
    "make_loader",
    "merge_dataset",
    "normalization_stats",
    "open_dataset",
    "read_pdebench_darcy_header",
    "split_indices",
    "task_stats",
    "trained_on_of_store",
    "trajectory_layout",
    "unrolled_loss",
    "verify_dataset",
    "write_synthetic_dataset",
]
