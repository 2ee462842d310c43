"""Evaluation: single-task references, Delta_m, configuration selection, mean rank,
statistics and fixed weights."""

from smto.evaluation.reference import Reference, single_task_reference
from smto.evaluation.selection import (
    configuration_key,
    group_runs,
    run_delta_m,
    select_configurations,
)
from smto.problems.delta_m import delta_m

__all__ = [
    "Reference",
    "configuration_key",
    "delta_m",
    "group_runs",
    "run_delta_m",
    "select_configurations",
    "single_task_reference",
]
