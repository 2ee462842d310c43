"""The relative gain Delta_m, in the two conventions smto reports.

- ``"study"``: the main study's (Gama & Grassi 2025, equation 1): metrics averaged within a
  task first, then across tasks; a gain counts positive, so higher is better.
- ``"elich"``: Elich et al.'s Delta_M (after Maninis et al. 2019): a flat mean over all
  metrics of all tasks of (-1)^{l_m} (M_m - M^ST_m) / M^ST_m x 100, l_m = 1 where higher is
  better; a drop counts positive, so lower is better. A task with many metrics (NYUv2's five
  normal metrics) weighs more than one with few.

It lives with the problems (it needs only their metrics' directions) so that training can
pick a run's best epoch by it; ``smto.evaluation`` re-exports it.
"""

from __future__ import annotations

from collections.abc import Mapping

from smto.errors import ConfigError
from smto.problems.base import Metric

Values = Mapping[str, Mapping[str, float]]

CONVENTIONS = ("study", "elich")
"""The Delta_m conventions: the main study's per-task mean of gains, Elich et al.'s flat mean
of drops."""
_LABELS = {"study": "Δm", "elich": "ΔM (Elich)"}


def check_convention(convention: str | None) -> str:
    """The convention by name (None is ``"study"``); an unknown one is a ConfigError."""
    if convention is None:
        return "study"
    if convention not in CONVENTIONS:
        raise ConfigError(
            f"unknown Delta_m convention {convention!r}; valid: {', '.join(CONVENTIONS)}"
        )
    return convention


def delta_m_higher_is_better(convention: str | None = "study") -> bool:
    """Whether a higher Delta_m is better: yes for the study's gain, no for Elich's drop."""
    return check_convention(convention) == "study"


def delta_m_label(convention: str | None = "study") -> str:
    """The name tables and figures give the convention's value: "Δm" or "ΔM (Elich)"."""
    return _LABELS[check_convention(convention)]


def delta_m_score(value: float, convention: str | None = "study") -> float:
    """``value`` signed so that higher is better under ``convention`` (for argmax choices)."""
    return value if delta_m_higher_is_better(convention) else -value


def delta_m(
    values: Values,
    reference: Values,
    metrics: Mapping[str, tuple[Metric, ...]],
    convention: str | None = "study",
) -> float:
    """Delta_m in % of ``values`` against the single-task ``reference`` (module docstring).

    ``"study"``: (1/T) sum_t (1/|M_t|) sum_m s_m (M_tm - M^ST_tm) / M^ST_tm, s_m = +1 where
    higher is better, -1 otherwise (positive is better). ``"elich"``: the mean over every
    (t, m) of -s_m (M_tm - M^ST_tm) / M^ST_tm (positive is worse).
    """
    convention = check_convention(convention)
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
        per_task.append(gains)
    if convention == "elich":
        drops = [-gain for gains in per_task for gain in gains]
        return 100.0 * sum(drops) / len(drops)
    return 100.0 * sum(sum(g) / len(g) for g in per_task) / len(per_task)
