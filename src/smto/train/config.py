"""The configuration of one training run, validated, serializable, with a stable id."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from smto import registry
from smto.errors import ConfigError
from smto.method import LossMethod
from smto.problems import parse_tasks, problem_class, problem_options
from smto.problems.delta_m import check_convention
from smto.train.compiled import compile_refusal
from smto.train.probes import ProbeSpec

_ADDED_LATER = (
    "divergence_factor",
    "step_size",
    "step_factor",
    "delta_m_convention",
    "probes",
    "compile",
)
"""Fields added after run ids were first published: left out of the id while at None."""
OPTIMIZERS = ("adam", "sgd", "signsgd", "per_task_adam", "mtl_io")
SCHEDULERS = ("exponential", "plateau", "step", "none")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers.

    The defaults are the main study's Multi-MNIST settings (Adam, batch 256, validation and
    test batches of 100, ExponentialLR(0.95) per epoch, 100 epochs). ``problem_options`` are
    the problem's own options (e.g. ``right_indices``, ``limits``); where the data lives is
    not part of a run's identity and is given to :func:`smto.train.train` separately.
    """

    problem: str = "multi_mnist"
    tasks: str = "CL_RR"
    method: str = "unit_scal"
    method_params: dict[str, Any] = field(default_factory=dict)
    problem_options: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    dropout: float = 0.0
    batch_size: int = 256
    eval_batch_size: int = 100
    epochs: int = 100
    scheduler: str = "exponential"
    gamma: float = 0.95
    plateau_factor: float = 0.7
    plateau_patience: int = 5
    min_lr: float = 1e-5
    seed: int = 0
    device: str = "cpu"
    reference: dict[str, dict[str, float]] | None = None
    """Single-task validation metrics by task and metric: the best epoch is then the one of
    the highest validation Delta_m (PROTOCOL.md "Best epoch"); without it, the one of the
    lowest mean validation loss."""
    step_size: int | None = None
    """The ``step`` scheduler's period: the lr is multiplied by ``step_factor`` every this many
    epochs (Elich et al.: every 100 on Cityscapes and NYUv2, every 30 on CelebA). Needed with
    ``scheduler="step"``, refused otherwise."""
    step_factor: float | None = None
    """The ``step`` scheduler's factor; None is 0.5 (the lr halved, as Elich et al.)."""
    divergence_factor: float | None = None
    """Off by default. A run whose mean training or validation loss of a task exceeds this
    many times that of its first epoch ends as "diverged" (finite but absurd, e.g. an MSE of
    1e28); the study's sweeps set a generous factor."""
    delta_m_convention: str | None = None
    """How the best epoch's Delta_m is computed with a ``reference``: None (``"study"`` reads
    as None) is the main study's (higher is better), "elich" Elich et al.'s flat mean of drops
    (lower is better); see :mod:`smto.problems.delta_m`."""
    probes: dict[str, Any] | None = None
    """Off by default. Gradient probes recorded per epoch (``history[i]["probes"]``): a dict
    of :class:`smto.train.probes.ProbeSpec`'s fields, ``{}`` for its defaults (the main
    study's cosine every 100 iterations, Elich et al.'s pairs every 5). Probing leaves the
    training's numbers unchanged but records more, so it is part of the run's id."""
    compile: bool | None = None
    """Off by default (None; False reads as None). True runs the model's forward and backward
    through ``torch.compile``: about 5-10 % faster per epoch for Unit. Scal. on the LeNet on
    a CPU, after some seconds of compiling, but not bitwise the eager run (fused kernels round
    differently), so it is part of the run's id. Loss-based methods only (see
    :mod:`smto.train.compiled`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", "_".join(parse_tasks(self.tasks)))
        for name in ("method_params", "problem_options", "reference", "probes"):
            object.__setattr__(self, name, _as_json(name, getattr(self, name)))
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        for name in ("lr", "gamma", "plateau_factor"):
            _check_positive(name, getattr(self, name))
        for name in ("weight_decay", "momentum", "min_lr"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("batch_size", "eval_batch_size", "epochs", "plateau_patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        check_device(self.device, available=False)
        if self.divergence_factor is not None and (
            not _is_number(self.divergence_factor) or self.divergence_factor <= 1
        ):
            raise ConfigError(
                f"divergence_factor must be a number > 1 or None (off), "
                f"got {self.divergence_factor!r}"
            )
        self._check_step_scheduler()
        ProbeSpec.from_config(self.probes)
        if check_convention(self.delta_m_convention) == "study":  # one spelling of the default
            object.__setattr__(self, "delta_m_convention", None)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        cls = problem_class(self.problem)
        unknown = sorted(
            set(self.problem_options) - set(problem_options(self.problem)) - {"data_dir"}
        )
        if unknown:
            raise ConfigError(
                f"unknown problem option(s) {unknown} for {self.problem!r}; valid: "
                f"{sorted(set(problem_options(self.problem)) - {'data_dir'})}"
            )
        if "data_dir" in self.problem_options:
            raise ConfigError("data_dir is not part of a run's configuration: pass it to train()")
        cls.check_options(**self.problem_options)
        bad_tasks = [t for t in parse_tasks(self.tasks) if t not in cls.all_tasks]
        if bad_tasks:
            raise ConfigError(
                f"unknown task(s) {bad_tasks} for problem {self.problem!r}; valid tasks: "
                f"{', '.join(cls.all_tasks)}"
            )
        if self.reference is not None:
            _check_reference(self.reference, cls, parse_tasks(self.tasks))
        method = registry.create(self.method, self.n_tasks, **self.method_params)
        if self.optimizer == "per_task_adam" and not isinstance(method, LossMethod):
            raise ConfigError(
                f"per_task_adam needs a loss-based method (per-task gradients of its loss "
                f"terms); {self.method!r} combines gradients itself"
            )
        if self.optimizer == "mtl_io" and not isinstance(method, LossMethod):
            raise ConfigError(
                f"mtl_io needs a loss-based method (it steps on one task's loss term at a "
                f"time); {self.method!r} combines gradients itself"
            )
        self._check_compile(method)

    def _check_compile(self, method: Any) -> None:
        if self.compile is False:  # one spelling of the default
            object.__setattr__(self, "compile", None)
        if self.compile is None:
            return
        if self.compile is not True:
            raise ConfigError(f"compile must be true, false or None, got {self.compile!r}")
        why = compile_refusal(method, self.optimizer)
        if why is not None:
            raise ConfigError(f"compile=True cannot serve {self.method!r}: {why}; drop it")

    def _check_step_scheduler(self) -> None:
        if self.scheduler != "step":
            for name in ("step_size", "step_factor"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} is read only with scheduler='step'; drop it")
            return
        size = self.step_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(
                f"scheduler='step' needs step_size, an integer >= 1 (the epochs between lr "
                f"decays), got {size!r}"
            )
        factor = self.step_factor
        if factor is not None and (not _is_number(factor) or not 0 < factor < 1):
            raise ConfigError(f"step_factor must be a number in (0, 1), got {factor!r}")

    @property
    def n_tasks(self) -> int:
        """The number of tasks, K."""
        return len(parse_tasks(self.tasks))

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (the ``config`` of ``record.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A config from a dict (e.g. a run record); unknown keys are a clear error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown run configuration key(s) {unknown}; valid: {sorted(names)}")
        return cls(**data)

    def same_run(self, data: dict[str, Any]) -> bool:
        """Whether ``data`` (a record's or checkpoint's configuration, possibly of an older
        smto without the newer fields) is this configuration."""
        try:
            return RunConfig.from_dict(data) == self
        except (ConfigError, TypeError):
            return False

    def run_id(self) -> str:
        """A readable id that changes with any setting: problem-tasks-method-seed-hash."""
        identity = self.to_dict()
        for name in _ADDED_LATER:  # at their default, ids stay those of older versions
            if identity[name] is None:
                del identity[name]
        digest = hashlib.sha1(
            json.dumps(identity, sort_keys=True, default=str).encode()
        ).hexdigest()[:10]
        method = registry.spec(self.method).name
        return f"{self.problem}-{self.tasks}-{method}-seed{self.seed}-{digest}"


def _check_reference(reference: Any, cls: Any, tasks: list[str]) -> None:
    """The single-task reference: {task: {metric: number}}, every metric of every task of the
    run, tasks and metrics the problem has, finite numbers (checked before any training)."""
    where = "the reference (single-task validation metrics)"
    if not isinstance(reference, dict):
        raise ConfigError(f"{where} must map task -> {{metric: value}}, got {reference!r}")
    unknown = sorted(set(reference) - set(cls.all_tasks))
    if unknown:
        raise ConfigError(
            f"{where} names unknown task(s) {unknown}; the tasks of {cls.name!r} are "
            f"{', '.join(cls.all_tasks)}"
        )
    for task in tasks:
        names = [m.name for m in cls.task_metrics(task)]
        values = reference.get(task)
        if not isinstance(values, dict):
            raise ConfigError(f"{where} has no metrics for task {task!r} (needs {names})")
        missing = [n for n in names if n not in values]
        extra = sorted(set(values) - set(names))
        if missing or extra:
            raise ConfigError(
                f"{where} for task {task!r} must give exactly the metrics {names}; "
                f"missing {missing}, unknown {extra}"
            )
        for name in names:
            if not _is_number(values[name]):
                raise ConfigError(
                    f"{where}: {task}/{name} must be a finite number, got {values[name]!r}"
                )


def check_device(device: Any, *, available: bool = True) -> None:
    """Raises :class:`ConfigError` unless ``device`` names a torch device of a kind smto
    trains on (cpu, cuda, cuda:N, mps) and, with ``available``, one this machine has.

    A configuration checks the name only (a sweep is checked where it is written and run on
    other machines); the engine checks availability before it creates a run directory.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"unknown device {device!r}: use a torch device such as cpu, cuda, cuda:1 or mps"
        ) from None
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r}: smto trains on cpu, cuda or mps")
    if parsed.type == "cpu" or not available:
        return
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(
                f"device {device!r}: this machine has {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1})"
            )
    elif not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available on this machine; use cpu")


def _as_json(name: str, value: Any) -> Any:
    """The value as it reads back from a JSON record (tuples become lists), so a
    configuration equals its own record."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        message = f"{name} must hold plain JSON values (numbers, strings, lists): {error}"
        raise ConfigError(message) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_positive(name: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")
