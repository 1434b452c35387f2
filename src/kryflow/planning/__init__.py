"""Planning a workflow before it runs: its jobs, trials and training steps, priced in CPU- and
GPU-hours from measured costs (``kryflow plan CONFIG``)."""

from ._costs import CostTable, device_name, measure_generation, measure_step
from ._gpu import GPU_PROFILES, count_step, model_step_seconds
from ._plan import GPU_RULES, format_plan, plan_workflow, snakemake_jobs

__all__ = [
    "CostTable",
    "GPU_PROFILES",
    "GPU_RULES",
    "count_step",
    "device_name",
    "format_plan",
    "measure_generation",
    "measure_step",
    "model_step_seconds",
    "plan_workflow",
    "snakemake_jobs",
]
