"""Hand-made run records for the evaluation tests (no training)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from smto.problems import PROBLEMS
from smto.problems.base import Metric
from smto.train.records import RunRecord

ACC = Metric("acc", higher_is_better=True)
ERR = Metric("err", higher_is_better=False)


class FakeProblem:
    """Task A: one metric (acc, higher is better); task B: acc and err (opposite directions);
    task C: err only. Only ``task_metrics`` is used by evaluation."""

    name = "fake"
    all_tasks: ClassVar[tuple[str, ...]] = ("A", "B", "C")
    _metrics: ClassVar[dict[str, tuple[Metric, ...]]] = {
        "A": (ACC,),
        "B": (ACC, ERR),
        "C": (ERR,),
    }

    @classmethod
    def task_metrics(cls, task: str) -> tuple[Metric, ...]:
        return cls._metrics[task]


def config(tasks: str, method: str = "unit_scal", seed: int = 0, **fields: Any) -> dict[str, Any]:
    return {"problem": "fake", "tasks": tasks, "method": method, "seed": seed, **fields}


def multi_record(
    run_id: str,
    val: dict[str, dict[str, float]] | None,
    test: dict[str, dict[str, float]] | None,
    status: str = "completed",
    history: list[dict[str, Any]] | None = None,
    **config_fields: Any,
) -> RunRecord:
    """A multi-task run whose best epoch has the given validation and test metrics."""
    tasks = config_fields.pop("tasks", "_".join(val or test or {"A": {}, "B": {}}))
    return RunRecord(
        run_id=run_id,
        config=config(tasks, **config_fields),
        smto_version="test",
        status=status,
        history=history or [],
        best_epoch=None if val is None else 0,
        best_val=val,
        best_test=test,
    )


def single_record(
    run_id: str,
    task: str,
    by_metric: dict[str, tuple[float, float]],
    status: str = "completed",
    **config_fields: Any,
) -> RunRecord:
    """A single-task run: ``by_metric`` maps a metric to its (val, test) at its best epoch."""
    return RunRecord(
        run_id=run_id,
        config=config(task, **config_fields),
        smto_version="test",
        status=status,
        best_by_metric={
            f"{task}/{m}": {"epoch": 0, "val": v, "test": t} for m, (v, t) in by_metric.items()
        },
    )


@pytest.fixture(autouse=True)
def fake_problem(monkeypatch: pytest.MonkeyPatch) -> str:
    """Registers the fake problem for the duration of a test (import it into a test module)."""
    monkeypatch.setitem(PROBLEMS, "fake", FakeProblem)
    return "fake"
