"""The search space of a TPE sweep: per dimension, a list of choices or a numeric range.

A range is an inline table in a sweep file, ``lr = { low = 1e-4, high = 1e-2, log = true }``:
integers when ``low`` and ``high`` are both integers (and ``step``, if given), else floats.
Grid sweeps take lists only (every combination must be listed to be run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smto._optional import require

RANGE_KEYS = ("low", "high", "log", "step")
RANGE_FORM = "{ low = ..., high = ..., log = true|false, step = ... }"


@dataclass(frozen=True)
class Range:
    """Numbers from ``low`` to ``high`` (both included), log-uniform if ``log``, on a grid of
    ``step`` if given."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    @property
    def integer(self) -> bool:
        """Whether the bounds (and the step) are integers: an integer range."""
        numbers = (self.low, self.high) + (() if self.step is None else (self.step,))
        return all(isinstance(n, int) for n in numbers)

    @property
    def size(self) -> float:
        """How many values the range holds (inf for a continuous one)."""
        step = 1 if self.integer and self.step is None else self.step
        if step is None:
            return math.inf
        return math.floor((self.high - self.low) / step + 1e-9) + 1

    def distribution(self) -> Any:
        """The Optuna distribution of the range."""
        distributions = require("optuna.distributions", "sweep", "smto.sweep")
        if self.integer:
            return distributions.IntDistribution(
                self.low, self.high, log=self.log, step=self.step or 1
            )
        return distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


Dimension = list[Any] | Range
"""One dimension of a search space: its choices, or a range."""


def parse_range(where: str, table: Mapping[str, Any]) -> tuple[Range | None, list[str]]:
    """The range an inline table describes, or the errors (each naming its field)."""
    errors = []
    unknown = sorted(set(table) - set(RANGE_KEYS))
    if unknown:
        errors.append(f"{where}: unknown range key(s) {unknown}; a range is {RANGE_FORM}")
    low, high, step = (_number(where, key, table, errors) for key in ("low", "high", "step"))
    log = table.get("log", False)
    if not isinstance(log, bool):
        errors.append(f"{where}.log: must be true or false, got {log!r}")
    if errors or low is None or high is None:
        return None, errors
    if not low < high:
        errors.append(f"{where}: low ({low!r}) must be below high ({high!r})")
    if log and low <= 0:
        errors.append(f"{where}: a log range needs low > 0, got {low!r}")
    if step is not None:
        if step <= 0:
            errors.append(f"{where}.step: must be > 0, got {step!r}")
        if log:
            errors.append(f"{where}: step and log cannot be combined")
    if errors:
        return None, errors
    return Range(low, high, log, step), []


def _number(where: str, key: str, table: Mapping[str, Any], errors: list[str]) -> Any:
    value = table.get(key)
    if value is None:
        if key != "step":
            errors.append(f"{where}.{key}: missing (a number); a range is {RANGE_FORM}")
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        errors.append(f"{where}.{key}: must be a finite number, got {value!r}")
        return None
    return value


def size(space: Mapping[str, Dimension]) -> float:
    """How many points the space holds (inf if a dimension is continuous)."""
    total: float = 1
    for dimension in space.values():
        total *= dimension.size if isinstance(dimension, Range) else len(dimension)
    return total


def corners(space: Mapping[str, Dimension]) -> dict[str, list[Any]]:
    """The space as a grid, each range replaced by its two ends (to check settings that are
    only wrong together before anything runs)."""
    return {name: [d.low, d.high] if isinstance(d, Range) else list(d) for name, d in space.items()}


def distributions(space: Mapping[str, Dimension]) -> dict[str, Any]:
    """The Optuna distribution of every dimension (choices are categorical)."""
    categorical = require("optuna.distributions", "sweep", "smto.sweep").CategoricalDistribution
    return {
        name: d.distribution() if isinstance(d, Range) else categorical(d)
        for name, d in space.items()
    }


def from_json(value: Any) -> Dimension:
    """A dimension as stored in a study (a range reads back as a dict)."""
    return Range(**value) if isinstance(value, dict) else value
