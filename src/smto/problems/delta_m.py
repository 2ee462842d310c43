"""The relative gain Delta_m of the main study (Gama & Grassi 2025, equation 1).

It lives with the problems (it needs only their metrics' directions) so that training can
pick a run's best epoch by it; ``smto.evaluation`` re-exports it.
"""

from __future__ import annotations

from collections.abc import Mapping

from smto.errors import ConfigError
from smto.problems.base import Metric

Values = Mapping[str, Mapping[str, float]]


def delta_m(values: Values, reference: Values, metrics: Mapping[str, tuple[Metric, ...]]) -> float:
    """Delta_m in %: (1/T) sum_t (1/|M_t|) sum_m s_m (M_tm - M^ST_tm) / M^ST_tm.

    Metrics are averaged within a task first, then across tasks; s_m = +1 where higher is
    better, -1 otherwise, so a positive Delta_m is better than the single-task reference.
    """
    if not metrics:
        raise ValueError("Delta_m needs at least one task")
    per_task = []
    for task, task_metrics in metrics.items():
        gains = []
        for metric in task_metrics:
            try:
                ref = reference[task][metric.name]
                value = values[task][metric.name]
            except KeyError as error:
                raise ConfigError(
                    f"Delta_m needs {task}/{metric.name} in both the values and the single-task "
                    f"reference; missing {error}"
                ) from None
            if ref == 0:
                raise ConfigError(f"the single-task reference of {task}/{metric.name} is 0")
            sign = 1.0 if metric.higher_is_better else -1.0
            gains.append(sign * (value - ref) / ref)
        per_task.append(sum(gains) / len(gains))
    return 100.0 * sum(per_task) / len(per_task)
