"""The main study's published numbers (Gama & Grassi 2025), shipped with the package: each
problem's best configurations (Appendix A.6, Tables 6-10) and test results (per-task gains and
Delta_m: Tables 1, 3, 4, 5), for ``smto reproduce``.

The data file (``gama_grassi_2025.toml``, beside this module) says, per problem, which table
each number comes from and what the paper's text lost (the bold best values of each method's
own searched hyperparameters, a truncated row); nothing lost is guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from smto import registry
from smto.errors import ConfigError, DataError
from smto.problems import parse_tasks

DATA_FILE = "gama_grassi_2025.toml"
DELTA_M = "delta_m"
"""The quantity name of Delta_m (beside the task names, whose gains the tables give)."""
SETTINGS = ("lr", "dropout", "weight_decay")
"""The run settings a configuration may give (the columns LR, P, WD of Tables 6-10)."""


@dataclass(frozen=True)
class Configuration:
    """A published configuration: run settings (``lr``, ``dropout``, ``weight_decay``; None
    where the table gives none), fixed method hyperparameters (``params``), and the sets of
    the method's own hyperparameters that were searched, whose chosen value the text lost
    (``searched``)."""

    settings: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    searched: dict[str, list[Any]] = field(default_factory=dict)
    notes: str = ""

    @property
    def complete(self) -> bool:
        """Whether the table gives the configuration (a lost row has no learning rate)."""
        return "lr" in self.settings


@dataclass(frozen=True)
class PublishedMethod:
    """One method's published configuration and test values (%): per-task gains by task
    name and Delta_m under ``"delta_m"``; ``extra`` holds further published numbers (mean
    rank, statistics, per-metric gains)."""

    method: str
    configuration: Configuration
    values: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        """The method's name as the tables print it."""
        return registry.spec(self.method).display_name


@dataclass(frozen=True)
class PublishedProblem:
    """One problem and task set of the study (e.g. ``multi_mnist-CL_RR``)."""

    name: str
    problem: str
    tasks: str
    configurations_source: str
    values_source: str
    single_task: dict[str, Configuration]
    methods: dict[str, PublishedMethod]

    @property
    def task_names(self) -> list[str]:
        """The tasks, in order."""
        return parse_tasks(self.tasks)

    @property
    def quantities(self) -> list[str]:
        """The compared quantities: each task's gain, then Delta_m."""
        return [*self.task_names, DELTA_M]

    def has_values(self) -> bool:
        """Whether the text gives any test value for this problem."""
        return any(m.values for m in self.methods.values())


def _configuration(where: str, table: dict[str, Any]) -> Configuration:
    known = {*SETTINGS, "params", "searched", "notes", "published"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise DataError(f"{DATA_FILE}: {where}: unknown key(s) {unknown}")
    settings = {k: float(table[k]) for k in SETTINGS if k in table}
    return Configuration(
        settings, dict(table.get("params", {})), dict(table.get("searched", {})),
        str(table.get("notes", "")),
    )  # fmt: skip


def _values(where: str, tasks: list[str], published: dict[str, Any]) -> dict[str, float]:
    """Per-task gains (given, or the mean over a task's metrics) and Delta_m."""
    values = {}
    metrics = published.get("metrics", {})
    for task in tasks:
        if task in published:
            values[task] = float(published[task])
        elif task in metrics:
            per_metric = [float(v) for v in metrics[task].values()]
            values[task] = sum(per_metric) / len(per_metric)
    if DELTA_M in published:
        values[DELTA_M] = float(published[DELTA_M])
    if not all(math.isfinite(v) for v in values.values()):
        raise DataError(f"{DATA_FILE}: {where}: a published value is not finite")
    return values


def _problem(name: str, table: dict[str, Any]) -> PublishedProblem:
    tasks = parse_tasks(table["tasks"])
    single = {
        task: _configuration(f"{name}.single_task.{task}", entry)
        for task, entry in table["single_task"].items()
    }
    methods = {}
    for method, entry in table["methods"].items():
        where = f"{name}.methods.{method}"
        canonical = registry.spec(method).name
        if canonical != method:
            raise DataError(f"{DATA_FILE}: {where}: write the registry name {canonical!r}")
        published = entry.get("published", {})
        extra = {k: v for k, v in published.items() if k not in {*tasks, DELTA_M}}
        methods[method] = PublishedMethod(
            method, _configuration(where, entry), _values(where, tasks, published), extra
        )
    return PublishedProblem(
        name, table["problem"], table["tasks"], table["configurations"], table["values"],
        single, methods,
    )  # fmt: skip


@cache
def _load() -> tuple[dict[str, Any], dict[str, PublishedProblem]]:
    """The data file, read once through importlib.resources (so it works installed)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    text = resources.files(__name__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    data = tomllib.loads(text)
    problems = {name: _problem(name, table) for name, table in data["problems"].items()}
    return data["study"], problems


def study() -> dict[str, Any]:
    """The study's bibliographic entry (title, authors, year, arXiv id)."""
    return dict(_load()[0])


def published_problems() -> dict[str, PublishedProblem]:
    """Every problem of the data file, by name."""
    return dict(_load()[1])


def published_problem(name: str) -> PublishedProblem:
    """The problem ``name`` (e.g. ``multi_mnist-CL_RR``); an unknown name is a ConfigError
    listing the known ones."""
    problems = _load()[1]
    if name not in problems:
        raise ConfigError(
            f"no published results for {name!r}; the study's problems: {', '.join(problems)}"
        )
    return problems[name]
