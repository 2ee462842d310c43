"""Configuration selection: which grid configuration of a method (or of a single-task
baseline) is reported, chosen on validation results (PROTOCOL.md "Configuration choice").

Runs of one configuration differ only in their seed. A configuration is scored by the mean
over its runs; a run without a usable result (no best epoch, e.g. diverged at epoch 0, or a
failed run) counts as the worst possible value, so a configuration with such a run is never
chosen unless every configuration has one (then the first in key order is chosen). Runs still
running or interrupted are not results yet and are left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from smto import registry
from smto.errors import ConfigError
from smto.evaluation.reference_values import Reference
from smto.problems import parse_tasks, problem_class
from smto.problems.base import Metric
from smto.problems.delta_m import check_convention, delta_m, delta_m_higher_is_better
from smto.train.records import RunRecord

UNFINISHED = ("running", "interrupted")
"""Statuses of runs that are not results (yet); selection skips them."""
NOT_IDENTITY = ("seed", "reference", "device")
"""Configuration fields that do not make a different configuration: the seed (runs of one
configuration), the single-task reference (it only picks the best epoch) and the device."""
KEYED_WHEN_SET = ("delta_m_convention",)
"""Fields added after configuration keys were first written: in the key only when set, so
the keys of configurations that leave them at None stay those of older versions."""


def configuration_key(config: Mapping[str, Any]) -> str:
    """A stable short id of a run configuration without its seed, reference and device.

    Missing fields take RunConfig's defaults and the method's hyperparameters take the
    registry's defaults, so records that spell a default out and records that leave it
    implicit are the same configuration. Reads ``method-<10 hex digits>``.
    """
    from smto.train.config import RunConfig

    defaults = {
        f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        for f in dataclasses.fields(RunConfig)
    }
    full = {**defaults, **config}
    spec = registry.spec(full["method"])
    params = {name: hp.default for name, hp in spec.hyperparameters.items()}
    params.update(full.get("method_params") or {})
    full["method"] = spec.name
    full["method_params"] = params
    full["tasks"] = "_".join(parse_tasks(full["tasks"]))
    identity = {
        k: v
        for k, v in full.items()
        if k not in NOT_IDENTITY and not (k in KEYED_WHEN_SET and v is None)
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return f"{spec.name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def group_runs(records: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """Records grouped by :func:`configuration_key`, keys and runs in the order given."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(configuration_key(record.config), []).append(record)
    return groups


def finished(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The records that are results: completed, diverged, pruned or failed (not running or
    interrupted). A pruned run counts with the best epoch it reached before it was stopped
    (a pruner stops runs that are doing worse), so sweeps and reports choose alike."""
    return [r for r in records if r.status not in UNFINISHED]


def record_tasks(record: RunRecord) -> list[str]:
    """The tasks of a run record, as a list of task names."""
    return parse_tasks(record.config["tasks"])


def task_metrics(problem: str, tasks: Iterable[str]) -> dict[str, tuple[Metric, ...]]:
    """The metrics (with directions) of ``tasks`` of ``problem``, without loading data."""
    cls = problem_class(problem)
    return {task: cls.task_metrics(task) for task in tasks}


def run_values(record: RunRecord, split: str) -> dict[str, dict[str, float]] | None:
    """The run's metrics at its best epoch on ``split`` ("val" or "test"); None without one."""
    if split not in ("val", "test"):
        raise ConfigError(f"split must be 'val' or 'test', got {split!r}")
    return record.best_val if split == "val" else record.best_test


def run_convention(record: RunRecord) -> str:
    """The Delta_m convention the run chose its best epoch by ("study" unless configured)."""
    return check_convention(record.config.get("delta_m_convention"))


def records_convention(records: Iterable[RunRecord], convention: str | None = None) -> str:
    """``convention`` when given; otherwise the one the runs chose their best epochs by,
    which must be the same for all (a mix is a ConfigError)."""
    if convention is not None:
        return check_convention(convention)
    found = sorted({run_convention(r) for r in records})
    if len(found) > 1:
        raise ConfigError(
            f"the runs chose their best epochs by different Delta_m conventions {found}: "
            "compare runs of one convention, or name the convention to score them by"
        )
    return found[0] if found else "study"


def run_delta_m(
    record: RunRecord, reference: Reference, split: str, convention: str | None = None
) -> float:
    """Delta_m (%) of the run's best epoch on ``split`` against the reference's values of
    that split, in ``convention`` (None: the run's own, :func:`run_convention`); nan where
    the run has no best epoch (or no value of one of its metrics)."""
    convention = run_convention(record) if convention is None else check_convention(convention)
    values = run_values(record, split)
    metrics = task_metrics(record.config["problem"], record_tasks(record))
    ref = reference.val if split == "val" else reference.test
    missing = [t for t in metrics if t not in ref]
    if missing:
        raise ConfigError(
            f"the single-task reference of {reference.problem!r} has no task(s) {missing}; "
            f"it has {sorted(ref)}: build it from single-task runs of every task"
        )
    if values is None or any(
        m.name not in values.get(t, {}) for t, ms in metrics.items() for m in ms
    ):
        return math.nan
    return delta_m(values, ref, metrics, convention)


def selection_value(record: RunRecord, value: float) -> float:
    """A run's value as selection counts it: nan (the worst) for a failed run."""
    return math.nan if record.status == "failed" else value


def ranking_score(values: Sequence[float], higher_is_better: bool = True) -> float:
    """The mean of ``values`` signed so that higher is better; -inf if any value is nan."""
    if not values or any(not math.isfinite(v) for v in values):
        return -math.inf
    mean = sum(values) / len(values)
    return mean if higher_is_better else -mean


def best_key(scores: Mapping[str, float]) -> str:
    """The key of the highest score; ties and all -inf go to the first key in sorted order."""
    return max(sorted(scores), key=lambda k: scores[k])


def metric_value(record: RunRecord, task: str, metric: str, split: str) -> float:
    """A single-task run's value of ``task/metric`` at that metric's own best epoch."""
    entry = record.best_by_metric.get(f"{task}/{metric}")
    if entry is None or entry.get(split) is None:
        return math.nan
    return float(entry[split])


def select_configurations(
    records: Sequence[RunRecord],
    reference: Reference | None = None,
    convention: str | None = None,
) -> list[str]:
    """The configuration keys that stage 2 (more seeds, the tables) continues with.

    Multi-task runs (of one method; ``reference`` required): the key of the best mean
    validation Delta_m in ``convention`` (None: the runs', :func:`records_convention`; the
    highest under the study's, the lowest under Elich et al.'s). Single-task runs
    (``reference`` None): for each task and metric, the key of the best mean validation value
    at that metric's best epoch, deduplicated, in task then metric order. Runs without a
    result count as worst (module docstring).
    """
    records = finished(records)
    if not records:
        raise ConfigError("no finished runs to select a configuration from")
    single = [len(record_tasks(r)) == 1 for r in records]
    if any(single) and not all(single):
        raise ConfigError("select single-task and multi-task runs separately")
    groups = group_runs(records)
    if not all(single):
        if reference is None:
            raise ConfigError(
                "multi-task runs are selected by validation Delta_m: give the single-task "
                "reference (smto.evaluation.single_task_reference)"
            )
        convention = records_convention(records, convention)
        higher = delta_m_higher_is_better(convention)
        scores = {
            key: ranking_score(
                [selection_value(r, run_delta_m(r, reference, "val", convention)) for r in runs],
                higher,
            )
            for key, runs in groups.items()
        }
        return [best_key(scores)]
    chosen: list[str] = []
    for task, metric in single_task_metrics(records):
        key = best_metric_configuration(groups, task, metric)
        if key not in chosen:
            chosen.append(key)
    return chosen


def single_task_metrics(records: Sequence[RunRecord]) -> list[tuple[str, Metric]]:
    """(task, metric) pairs of single-task runs: tasks in order of appearance."""
    problems = {r.config["problem"] for r in records}
    if len(problems) != 1:
        raise ConfigError(f"runs of one problem expected, got {sorted(problems)}")
    tasks = list(dict.fromkeys(record_tasks(r)[0] for r in records))
    metrics = task_metrics(problems.pop(), tasks)
    return [(task, metric) for task in tasks for metric in metrics[task]]


def best_metric_configuration(
    groups: Mapping[str, Sequence[RunRecord]], task: str, metric: Metric
) -> str:
    """Among single-task configurations of ``task``, the key of the best mean validation
    value of ``metric``."""
    scores = {
        key: ranking_score(
            [selection_value(r, metric_value(r, task, metric.name, "val")) for r in runs],
            metric.higher_is_better,
        )
        for key, runs in groups.items()
        if record_tasks(runs[0]) == [task]
    }
    return best_key(scores)
