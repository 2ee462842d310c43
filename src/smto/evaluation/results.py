"""The results of each method on one problem and task set: its chosen configuration and the
test results of all runs of that configuration (the extra seeds of stage 2 included). Failed
runs of the chosen configuration are counted but left out of the results (a configuration
with a failed run is only chosen when every configuration has one).

A method's configuration is chosen by mean validation Delta_m over its grid runs
(:func:`smto.evaluation.selection.select_configurations`). Per-metric relative gains and
Delta_m are computed per run, then averaged over the runs (the study's tables), which for
the gains equals the gain of the mean test value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from smto import registry
from smto.errors import ConfigError
from smto.evaluation.reference import Reference
from smto.evaluation.selection import (
    finished,
    group_runs,
    records_convention,
    run_delta_m,
    select_configurations,
    task_metrics,
)
from smto.problems import parse_tasks
from smto.problems.base import Metric
from smto.train.records import RunRecord

Values = dict[str, dict[str, float]]


def relative_gains(
    values: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    metrics: Mapping[str, tuple[Metric, ...]],
) -> Values:
    """Per metric: 100 s_m (M - M^ST) / M^ST (%), positive where better than single-task."""
    gains: Values = {}
    for task, task_metrics_ in metrics.items():
        for metric in task_metrics_:
            ref = reference[task][metric.name]
            if ref == 0:
                raise ConfigError(f"the single-task reference of {task}/{metric.name} is 0")
            value = values.get(task, {}).get(metric.name, math.nan)
            sign = 1.0 if metric.higher_is_better else -1.0
            gains.setdefault(task, {})[metric.name] = 100.0 * sign * (value - ref) / ref
    return gains


@dataclass
class MethodResult:
    """One method's chosen configuration and the runs of it."""

    method: str
    """The registry name (e.g. "nash_mtl")."""
    name: str
    """The display name (e.g. "Nash-MTL")."""
    configuration: str
    runs: list[RunRecord]
    metrics: dict[str, tuple[Metric, ...]]
    reference: Reference
    failed_runs: int = 0
    """Failed runs of the chosen configuration, left out of ``runs``."""
    convention: str = "study"
    """The Delta_m convention of ``delta_m`` and of the choice of the configuration
    (:mod:`smto.problems.delta_m`)."""
    delta_m: list[float] = field(init=False)
    """Test Delta_m (%) of each run in ``convention`` (nan for a run without a best epoch)."""

    def __post_init__(self) -> None:
        self.delta_m = [run_delta_m(r, self.reference, "test", self.convention) for r in self.runs]

    @property
    def seeds(self) -> list[int]:
        """The seed of each run, in the order of ``runs``."""
        return [int(r.config.get("seed", 0)) for r in self.runs]

    def run_gains(self) -> list[Values]:
        """Per run, the relative gain (%) of each metric on test."""
        return [
            relative_gains(r.best_test or {}, self.reference.test, self.metrics) for r in self.runs
        ]

    def mean_gains(self) -> Values:
        """The per-metric relative gains averaged over the runs with a value."""
        return _mean_values(self.run_gains(), self.metrics)

    def mean_test(self) -> Values:
        """The test metrics averaged over the runs with a value."""
        return _mean_values([r.best_test or {} for r in self.runs], self.metrics)

    def mean_delta_m(self) -> float:
        """The mean of the runs' test Delta_m, ignoring non-finite values."""
        return _mean([v for v in self.delta_m if math.isfinite(v)])


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _mean_values(per_run: Sequence[Mapping[str, Mapping[str, float]]], metrics) -> Values:
    result: Values = {}
    for task, task_metrics_ in metrics.items():
        for metric in task_metrics_:
            values = [
                float(v[task][metric.name])
                for v in per_run
                if metric.name in v.get(task, {}) and math.isfinite(float(v[task][metric.name]))
            ]
            result.setdefault(task, {})[metric.name] = _mean(values)
    return result


def method_runs(
    records: Iterable[RunRecord], problem: str, tasks: str
) -> dict[str, list[RunRecord]]:
    """The finished multi-task runs of ``problem`` on ``tasks``, by registry method name."""
    wanted = parse_tasks(tasks)
    by_method: dict[str, list[RunRecord]] = {}
    for record in finished(records):
        config = record.config
        if config["problem"] != problem or parse_tasks(config["tasks"]) != wanted:
            continue
        by_method.setdefault(registry.spec(config["method"]).name, []).append(record)
    return by_method


def collect_results(
    records: Iterable[RunRecord],
    problem: str,
    tasks: str,
    reference: Reference,
    methods: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    baseline: str = "unit_scal",
    convention: str | None = None,
) -> list[MethodResult]:
    """Each method's :class:`MethodResult`, in the order of ``methods`` (default: the baseline
    first, then the others by display name). A requested method without runs is an error.
    Configurations are chosen and Delta_m computed in ``convention`` (None: the one the runs
    chose their best epochs by, :func:`smto.evaluation.selection.records_convention`)."""
    if reference.problem != problem:
        raise ConfigError(f"the reference is of {reference.problem!r}, not {problem!r}")
    by_method = method_runs(records, problem, tasks)
    found = ", ".join(sorted(by_method)) or "none"
    if methods:
        names = [registry.spec(m).name for m in methods]
        missing = [m for m in names if m not in by_method]
        if missing:
            raise ConfigError(
                f"no finished runs of {', '.join(missing)} on {problem} {tasks}; methods with "
                f"runs: {found}"
            )
    else:
        names = sorted(by_method, key=lambda m: (m != baseline, registry.spec(m).display_name))
    excluded = {registry.spec(m).name for m in exclude}
    names = [m for m in names if m not in excluded]
    if not names:
        raise ConfigError(f"no methods to report on {problem} {tasks}; methods with runs: {found}")
    metrics = task_metrics(problem, parse_tasks(tasks))
    convention = records_convention([r for m in names for r in by_method[m]], convention)
    results = []
    for name in names:
        runs = by_method[name]
        key = select_configurations(runs, reference, convention)[0]
        spec = registry.spec(name)
        group = group_runs(runs)[key]
        chosen = [r for r in group if r.status != "failed"]
        failed = len(group) - len(chosen)
        results.append(
            MethodResult(
                name, spec.display_name, key, chosen, metrics, reference, failed, convention
            )
        )
    return results
