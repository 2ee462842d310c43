"""Problems by name: datasets, model, losses and metrics of each benchmark problem."""

from __future__ import annotations

import inspect
from typing import Any

from smto.problems.base import SPLITS, Batch, Meter, Metric, Problem, parse_tasks
from smto.problems.multi_mnist import MultiMNIST
from smto.problems.toy import ToyRegression

PROBLEMS: dict[str, type[Problem]] = {
    MultiMNIST.name: MultiMNIST,
    ToyRegression.name: ToyRegression,
}


def problem_options(name: str) -> dict[str, Any]:
    """The options of problem ``name`` (constructor arguments besides ``tasks``) with defaults."""
    cls = problem_class(name)
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "tasks")}


def problem_class(name: str) -> type[Problem]:
    """The problem class called ``name``; a clear error listing valid names otherwise."""
    try:
        return PROBLEMS[name]
    except KeyError:
        raise ValueError(
            f"unknown problem {name!r}; valid problems: {', '.join(sorted(PROBLEMS))}"
        ) from None


def create_problem(name: str, tasks: Any, **options: Any) -> Problem:
    """Builds problem ``name`` over ``tasks`` (e.g. "CL_RR"); unknown options are an error."""
    valid = problem_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in valid.items())
        raise ValueError(f"unknown option(s) {unknown} for problem {name!r}; valid: {listing}")
    return problem_class(name)(tasks, **options)


__all__ = [
    "PROBLEMS",
    "SPLITS",
    "Batch",
    "Meter",
    "Metric",
    "MultiMNIST",
    "Problem",
    "ToyRegression",
    "create_problem",
    "parse_tasks",
    "problem_class",
    "problem_options",
]
