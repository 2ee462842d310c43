"""The single-task reference M^ST of Delta_m (PROTOCOL.md "Single-task reference").

For each task and each metric separately: the single-task configuration with the best mean
validation value (each run at that metric's own best epoch), and the mean test value of that
configuration's runs. The run ids it came from are kept, so every Delta_m can say which
references it used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
from smto.train.records import RunRecord, atomic_write_text

Values = dict[str, dict[str, float]]


@dataclass
class Reference:
    """Single-task reference values of one problem, by task and metric."""

    problem: str
    val: Values
    """Mean validation value of the chosen configuration (what a run's best epoch is picked
    against: ``RunConfig(reference=reference.val)``)."""
    test: Values
    """Mean test value of the chosen configuration (what test Delta_m is computed against)."""
    sources: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """The run ids each value is the mean of."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the reference as JSON."""
        atomic_write_text(Path(path), json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Reference:
        """Reads a reference written by :meth:`save`; a clear error if missing or corrupt."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(
                problem=data["problem"],
                val=data["val"],
                test=data["test"],
                sources=data.get("sources", {}),
            )
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no single-task reference at {path}: build one with `smto report` from "
                "single-task runs, or Reference.save"
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"the single-task reference {path} is corrupt or of another format "
                f"(expected JSON with problem, val, test, sources): {error!r}"
            ) from None


def single_task_reference(records: Sequence[RunRecord]) -> Reference:
    """The reference from single-task runs (one task each; several tasks across records).

    Running and interrupted runs are left out; a configuration with a failed run or a run
    without a value of a metric is never chosen for that metric (smto.evaluation.selection).
    """
    records = finished(records)
    if not records:
        raise ValueError("no finished single-task runs to build the reference from")
    multi = sorted({r.run_id for r in records if len(record_tasks(r)) != 1})
    if multi:
        raise ValueError(f"the single-task reference needs single-task runs; got {multi[:3]}")
    pairs = single_task_metrics(records)
    groups = group_runs(records)
    reference = Reference(records[0].config["problem"], {}, {}, {})
    for task, metric in pairs:
        key = best_metric_configuration(groups, task, metric)
        runs = groups[key]
        values = [selection_value(r, metric_value(r, task, metric.name, "val")) for r in runs]
        if ranking_score(values) == float("-inf"):
            raise ValueError(
                f"no single-task configuration of {task} has a {metric.name} value in every "
                "run (all failed or diverged before their first epoch)"
            )
        tests = [metric_value(r, task, metric.name, "test") for r in runs]
        reference.val.setdefault(task, {})[metric.name] = sum(values) / len(values)
        reference.test.setdefault(task, {})[metric.name] = sum(tests) / len(tests)
        reference.sources.setdefault(task, {})[metric.name] = [r.run_id for r in runs]
    return reference
