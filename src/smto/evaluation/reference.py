"""The single-task reference M^ST of Delta_m (PROTOCOL.md "Single-task reference").

For each task and each metric separately: the single-task configuration with the best mean
validation value (each run at that metric's own best epoch), and the mean test value of that
configuration's runs. The run ids it came from are kept, so every Delta_m can say which
references it used.
"""

from __future__ import annotations

from collections.abc import Sequence

from smto.errors import ConfigError
from smto.evaluation.reference_values import Reference, Values
from smto.evaluation.selection import (
    best_metric_configuration,
    finished,
    group_runs,
    metric_value,
    ranking_score,
    record_tasks,
    selection_value,
    single_task_metrics,
)
from smto.train.records import RunRecord

__all__ = ["Reference", "Values", "single_task_reference"]


def single_task_reference(records: Sequence[RunRecord]) -> Reference:
    """The reference from single-task runs (one task each; several tasks across records).

    Running and interrupted runs are left out; a configuration with a failed run or a run
    without a value of a metric is never chosen for that metric (smto.evaluation.selection).
    """
    records = finished(records)
    if not records:
        raise ConfigError("no finished single-task runs to build the reference from")
    multi = sorted({r.run_id for r in records if len(record_tasks(r)) != 1})
    if multi:
        raise ConfigError(f"the single-task reference needs single-task runs; got {multi[:3]}")
    pairs = single_task_metrics(records)
    groups = group_runs(records)
    reference = Reference(records[0].config["problem"], {}, {}, {})
    for task, metric in pairs:
        key = best_metric_configuration(groups, task, metric)
        runs = groups[key]
        values = [selection_value(r, metric_value(r, task, metric.name, "val")) for r in runs]
        if ranking_score(values) == float("-inf"):
            raise ConfigError(
                f"no single-task configuration of {task} has a {metric.name} value in every "
                "run (all failed or diverged before their first epoch)"
            )
        tests = [metric_value(r, task, metric.name, "test") for r in runs]
        reference.val.setdefault(task, {})[metric.name] = sum(values) / len(values)
        reference.test.setdefault(task, {})[metric.name] = sum(tests) / len(tests)
        reference.sources.setdefault(task, {})[metric.name] = [r.run_id for r in runs]
    return reference
