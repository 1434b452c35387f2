"""The optimizer comparison protocol (AlgoPerf-style external tuning) for neural surrogates.

Per workload (a dataset and a model) and optimizer: trials drawn from the optimizer's search
space by a scrambled quasi-random sequence (known before the run, so the workflow's DAG is
static), grouped into studies, selected on the validation split only; the selected setting is
rerun with every configured seed. The reference optimizer, tuned the same way, sets each
workload's target (the median best validation error of its reruns, the upper one for an even
count) and the wall-clock budget
every optimizer gets (``budget_factor`` x the reference's time to target). Reported: time to
target in steps, seconds and gradient-equivalent evaluations, performance profiles and their
score, the geometric-mean speed-up over the reference, test errors with bootstrap intervals,
expected best-of-k-trials curves.
"""

from ._plan import TrialPlan, study_batches, trial_plan
from ._report import (
    bootstrap_interval,
    expected_best_of_k,
    geometric_mean_speedup,
    performance_profile,
    profile_score,
    time_to_target,
)
from ._summary import build_report
from ._select import budget_kind, budgeted_training, reference_target, select_trials, trial_record, tuned_cell, workload_budget

__all__ = [
    "TrialPlan",
    "budget_kind",
    "budgeted_training",
    "bootstrap_interval",
    "build_report",
    "expected_best_of_k",
    "geometric_mean_speedup",
    "performance_profile",
    "profile_score",
    "reference_target",
    "select_trials",
    "study_batches",
    "time_to_target",
    "trial_plan",
    "trial_record",
    "tuned_cell",
    "workload_budget",
]
