"""Evaluation: test-split metrics (a registry, :data:`METRICS`), autoregressive rollouts of
next-step models (:mod:`kryflow.evaluation.rollout`), resolution transfer, cost, and the summary
schema (the columns of ``results/summary.csv``) that aggregation and tables use."""

from ._summary import (
    COST_COLUMNS, ID_COLUMNS, ROLLOUT_COLUMNS, TRANSFER_COLUMNS, column, numeric_columns, summary_columns,
)
from .evaluate import SUMMARY_COLUMNS, evaluate_cell
from .metrics import METRICS, Column, Metric, register_metric
from .rollout import rollout, rollout_summary

__all__ = [
    "COST_COLUMNS", "Column", "ID_COLUMNS", "METRICS", "Metric", "ROLLOUT_COLUMNS", "SUMMARY_COLUMNS",
    "TRANSFER_COLUMNS", "column", "evaluate_cell", "numeric_columns", "register_metric", "rollout",
    "rollout_summary", "summary_columns",
]
