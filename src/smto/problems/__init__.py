"""Problems by name: datasets, model, losses and metrics of each benchmark problem."""

from __future__ import annotations

from typing import Any

from smto.errors import ConfigError
from smto.problems.base import SPLITS, Batch, Meter, Metric, Problem, parse_tasks
from smto.problems.celeba import CelebA
from smto.problems.cityscapes import Cityscapes
from smto.problems.multi_mnist import MultiMNIST
from smto.problems.nyuv2 import NYUv2
from smto.problems.qm9 import QM9
from smto.problems.toy import ToyRegression

PROBLEMS: dict[str, type[Problem]] = {
    CelebA.name: CelebA,
    Cityscapes.name: Cityscapes,
    MultiMNIST.name: MultiMNIST,
    NYUv2.name: NYUv2,
    QM9.name: QM9,
    ToyRegression.name: ToyRegression,
}


def problem_options(name: str) -> dict[str, Any]:
    """The options of problem ``name`` (constructor arguments besides ``tasks``) with defaults."""
    return problem_class(name).option_defaults()


def problem_class(name: str) -> type[Problem]:
    """The problem class called ``name``; a clear error listing valid names otherwise."""
    try:
        return PROBLEMS[name]
    except KeyError:
        raise ConfigError(
            f"unknown problem {name!r}; valid problems: {', '.join(sorted(PROBLEMS))}"
        ) from None


def create_problem(name: str, tasks: Any, **options: Any) -> Problem:
    """Builds problem ``name`` over ``tasks`` (e.g. "CL_RR"); an unknown option or an invalid
    value is a ConfigError raised before any data is loaded."""
    cls = problem_class(name)
    cls.check_options(**options)
    return cls(tasks, **options)


__all__ = [
    "PROBLEMS",
    "QM9",
    "SPLITS",
    "Batch",
    "CelebA",
    "Cityscapes",
    "Meter",
    "Metric",
    "MultiMNIST",
    "NYUv2",
    "Problem",
    "ToyRegression",
    "create_problem",
    "parse_tasks",
    "problem_class",
    "problem_options",
]
