"""The mean rank MR of the main study (Gama & Grassi 2025, equation 2)."""

from __future__ import annotations

from collections.abc import Mapping

from smto._optional import require
from smto.errors import ConfigError
from smto.problems.base import Metric

pd = require("pandas", "bench", "smto.report")

Values = Mapping[str, Mapping[str, float]]


def mean_rank(
    values: Mapping[str, Values], metrics: Mapping[str, tuple[Metric, ...]]
) -> dict[str, float]:
    """MR of each method: rank the methods per metric on their (mean test) value, 1 the best
    and ties sharing the average of their ranks; average the ranks within each task, then
    across tasks.

    ``values`` maps a method to its values by task and metric. A method without a finite
    value of a metric ranks last on it (a run that never produced the metric is not better
    than one that did).
    """
    if not values:
        raise ConfigError("mean rank needs at least one method")
    per_task = pd.DataFrame(index=list(values), columns=list(metrics), dtype=float)
    for task, task_metrics in metrics.items():
        ranks = []
        for metric in task_metrics:
            column = pd.Series(
                {
                    m: float(v.get(task, {}).get(metric.name, float("nan")))
                    for m, v in values.items()
                }
            )
            ranks.append(
                column.rank(
                    ascending=not metric.higher_is_better, method="average", na_option="bottom"
                )
            )
        per_task[task] = pd.concat(ranks, axis=1).mean(axis=1)
    return per_task.mean(axis=1).to_dict()
