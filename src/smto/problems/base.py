"""A problem: datasets, a shared-encoder model, per-task losses and per-task metrics.

Everything the training engine needs to know about Multi-MNIST, Cityscapes, QM9 or a toy
problem goes through this small interface, so the engine never names a dataset. Tasks are
selected by name; single-task training is the same problem with one task.
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar

import torch
from torch import Tensor

from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Metric:
    """A per-task evaluation metric and its direction."""

    name: str
    higher_is_better: bool


@dataclass
class Batch:
    """One batch: the model's input and the targets by task name."""

    inputs: Any
    targets: dict[str, Tensor]
    size: int

    def to(self, device: torch.device | str) -> Batch:
        """The batch with its inputs and targets on ``device``."""
        inputs = self.inputs.to(device) if hasattr(self.inputs, "to") else self.inputs
        targets = {k: v.to(device) for k, v in self.targets.items()}
        return Batch(inputs, targets, self.size)


class Meter(ABC):
    """Accumulates a split's metrics over batches (sums, confusion matrices, ...)."""

    @abstractmethod
    def update(self, outputs: Mapping[str, Tensor], batch: Batch) -> None:
        """Adds one batch's outputs."""

    @abstractmethod
    def compute(self) -> dict[str, dict[str, float]]:
        """The metrics by task and metric name."""


class Problem(ABC):
    """A multi-task problem over a subset of its tasks."""

    name: ClassVar[str]
    all_tasks: ClassVar[tuple[str, ...]]

    def __init__(self, tasks: Sequence[str] | str) -> None:
        names = parse_tasks(tasks)
        unknown = [t for t in names if t not in self.all_tasks]
        if unknown:
            raise ConfigError(
                f"unknown task(s) {unknown} for problem {self.name!r}; valid tasks: "
                f"{', '.join(self.all_tasks)} (several joined by '_', e.g. "
                f"{'_'.join(self.all_tasks[:2])})"
            )
        if len(set(names)) != len(names):
            raise ConfigError(f"tasks must be distinct, got {names}")
        self.tasks: tuple[str, ...] = tuple(names)

    @property
    def n_tasks(self) -> int:
        """The number of selected tasks, K."""
        return len(self.tasks)

    @abstractmethod
    def split_size(self, split: str) -> int:
        """The number of samples in ``split`` ("train", "val" or "test")."""

    @abstractmethod
    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """The batches of a split, shuffled with ``generator`` when one is given."""

    @abstractmethod
    def make_model(self, dropout: float = 0.0) -> SharedEncoderModel:
        """A freshly initialised model with one head per selected task."""

    @abstractmethod
    def losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        """The (K,) per-task training losses of one batch, in task order."""

    @classmethod
    @abstractmethod
    def task_metrics(cls, task: str) -> tuple[Metric, ...]:
        """The evaluation metrics of ``task`` (known without loading any data)."""

    def metrics(self) -> dict[str, tuple[Metric, ...]]:
        """The evaluation metrics of each selected task."""
        return {t: self.task_metrics(t) for t in self.tasks}

    @abstractmethod
    def new_meter(self) -> Meter:
        """An empty accumulator of this problem's metrics."""

    def resident(self, device: torch.device | str) -> Problem:
        """The problem with its data on ``device``, moved there once, so that batches need no
        host-to-device copy per step; this default keeps the data where it is (the engine
        then moves each batch). A problem whose splits fit in memory overrides it."""
        return self

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The options (constructor arguments besides ``tasks``) with their defaults."""
        params = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in params.items() if k not in ("self", "tasks")}

    @classmethod
    def default_tasks(cls) -> str:
        """The tasks a problem is built with when none are named, joined by '_'."""
        default = inspect.signature(cls.__init__).parameters["tasks"].default
        return default if isinstance(default, str) else "_".join(default)

    @classmethod
    def options_with_defaults(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` over the defaults; ConfigError for an option the problem lacks."""
        defaults = cls.option_defaults()
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            listing = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
            raise ConfigError(
                f"unknown option(s) {unknown} for problem {cls.name!r}; valid: {listing}"
            )
        return {**defaults, **options}

    @classmethod
    @abstractmethod
    def check_options(cls, **options: Any) -> None:
        """Raises ConfigError for an invalid option value (constructor arguments besides
        ``tasks``; those not given keep their defaults), without loading any data. The
        constructor calls it first; a caller may call it to fail before a run starts."""

    def loss_types(self) -> tuple[str, ...]:
        """Each task's loss kind ("classification", "mse", "l1"), for methods such as UW."""
        raise NotImplementedError(f"{self.name} does not declare its loss types")


def parse_tasks(tasks: Sequence[str] | str) -> list[str]:
    """ "CL_RR" or ["CL", "RR"] -> ["CL", "RR"]; ConfigError for anything else or no task."""
    if isinstance(tasks, str):
        names = [t for t in tasks.split("_") if t]
    elif isinstance(tasks, (list, tuple)) and all(isinstance(t, str) and t for t in tasks):
        names = list(tasks)
    else:
        raise ConfigError(
            f"tasks must be task names joined by '_' (e.g. 'CL_RR') or a list of names, "
            f"got {tasks!r}"
        )
    if not names:
        raise ConfigError(f"no task given (tasks={tasks!r}); name one or more, e.g. 'CL_RR'")
    return names


def check_split_counts(name: str, values: Any, allow_none: bool = False) -> None:
    """Raises ConfigError unless ``values`` is one positive integer per split (or None, where
    allowed): negative counts (slicing from the end), zero (an empty split), floats, bools
    and strings would otherwise be accepted silently."""
    each = "a positive integer or None" if allow_none else "a positive integer"
    expected = f"{name}=({', '.join(SPLITS)}), each {each}"
    if not isinstance(values, (list, tuple)) or len(values) != len(SPLITS):
        raise ConfigError(f"{expected}; got {values!r}")
    for split, value in zip(SPLITS, values):
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ConfigError(f"{expected}; got {values!r} ({split} = {value!r})")


def check_choices(values: Mapping[str, Any], choices: Mapping[str, Sequence[Any]]) -> None:
    """Raises ConfigError unless each option named in ``choices`` is one of its values."""
    for name, valid in choices.items():
        if values[name] not in valid:
            raise ConfigError(
                f"{name} must be one of {', '.join(map(repr, valid))}, got {values[name]!r}"
            )


def check_common_options(values: Mapping[str, Any], paths: Sequence[str] = ()) -> None:
    """Raises ConfigError for the options several problems share, where ``values`` has them:
    ``seed`` (an integer >= 0), ``download`` (a bool), ``limits`` (see
    :func:`check_split_counts`), ``workers`` (an integer >= 0), ``pretrained`` (a weights
    file, "torchvision" or None), ``shape`` ((width, height), two integers >= 8), and the path
    options named in ``paths`` (a path or None)."""
    if "seed" in values:
        seed = values["seed"]
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    for name in paths:
        if values[name] is not None and not isinstance(values[name], (str, os.PathLike)):
            raise ConfigError(f"{name} must be a path, got {values[name]!r}")
    if "download" in values and not isinstance(values["download"], bool):
        raise ConfigError(f"download must be True or False, got {values['download']!r}")
    if "limits" in values:
        check_split_counts("limits", values["limits"], allow_none=True)
    if "workers" in values:
        workers = values["workers"]
        if isinstance(workers, bool) or not isinstance(workers, Integral) or workers < 0:
            raise ConfigError(f"workers must be an integer >= 0, got {workers!r}")
    pretrained = values.get("pretrained")
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise ConfigError(
            f"pretrained must be a weights file, 'torchvision' or None, got {pretrained!r}"
        )
    if "shape" in values:
        shape = values["shape"]
        sizes = shape if isinstance(shape, (list, tuple)) else ()
        if len(sizes) != 2 or not all(
            isinstance(v, Integral) and not isinstance(v, bool) and v >= 8 for v in sizes
        ):
            raise ConfigError(
                f"shape must be (width, height), two integers >= 8 (e.g. [512, 256]), got {shape!r}"
            )


def index_batches(
    n: int,
    batch_size: int,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> Iterator[Tensor]:
    """Index tensors of consecutive batches over ``n`` samples (a permutation if shuffled).

    The permutation is always drawn on the CPU (the same order on every device) and moved
    to ``device`` once, for data that lives there."""
    _check_batch_size(batch_size)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if device is not None:
        order = order.to(device)
    yield from torch.split(order, batch_size)


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """The slices of consecutive unshuffled batches over ``n`` samples (views of in-memory
    data, with no index tensor to read back from a device)."""
    _check_batch_size(batch_size)
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
