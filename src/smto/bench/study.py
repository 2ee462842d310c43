"""A whole study's CPU time, estimated before it runs: runs x epochs x seconds per epoch.

For each sweep file (and, by default, the single-task reference sweeps it names), each
method's planned runs are counted as the sweep machinery plans them: every configuration at
each stage-1 seed, then ``extra`` seeds of the chosen configuration per task set (a TPE
search counts its trial budget, an upper bound under pruning). Its seconds per epoch are
given, or measured by the engine itself: two short epochs of the method's first
configuration (the second one timed), scaled to the full splits:

    seconds per epoch = seconds per step x steps per epoch
                        + seconds per evaluated sample x (val + test_share x test samples)
                        + the rest of the timed epoch (checkpoint, record)

``test_share`` is the share of epochs that evaluate test (a new best epoch); 1 by default,
an upper bound. The estimate is one worker's CPU time, the same for every configuration of a
method (the learning rate and dropout do not change what a step computes).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from smto.errors import ConfigError
from smto.problems import Problem, create_problem, problem_options
from smto.sweep.plan import configurations
from smto.sweep.spec import Sweep, load_sweep
from smto.train import RunConfig, train
from smto.train.evaluate import evaluate_split

Timer = Callable[[Sweep, str], float]
"""Seconds per epoch of a method of a sweep."""


@dataclass(frozen=True)
class MethodEstimate:
    """One method of one sweep: its planned runs, their epochs in all, and its cost."""

    sweep: str
    method: str
    runs: int
    epochs: int
    seconds_per_epoch: float
    source: str  # "given" or "measured"

    @property
    def seconds(self) -> float:
        """The CPU time of all its runs."""
        return self.epochs * self.seconds_per_epoch


@dataclass(frozen=True)
class StudyEstimate:
    """Every method of every sweep of a study."""

    rows: tuple[MethodEstimate, ...]

    @property
    def seconds(self) -> float:
        """The whole study's CPU time."""
        return sum(row.seconds for row in self.rows)

    def format(self) -> str:
        """A table per sweep and method, in hours, with the total."""
        width = max([len("total"), *(len(row.sweep) for row in self.rows)])
        lines = [
            f"{'sweep':<{width}} {'method':<14} {'runs':>6} {'epochs':>8} {'s/epoch':>8} "
            f"{'hours':>8}  timing"
        ]
        for row in self.rows:
            lines.append(
                f"{row.sweep:<{width}} {row.method:<14} {row.runs:>6} {row.epochs:>8} "
                f"{row.seconds_per_epoch:>8.3g} {row.seconds / 3600:>8.2f}  {row.source}"
            )
        runs = sum(r.runs for r in self.rows)
        epochs = sum(r.epochs for r in self.rows)
        lines.append(
            f"{'total':<{width}} {'':<14} {runs:>6} {epochs:>8} {'':>8} "
            f"{self.seconds / 3600:>8.2f}  (CPU hours of one worker)"
        )
        return "\n".join(lines)


def planned_runs(sweep: Sweep) -> dict[str, tuple[int, int]]:
    """Per method, the runs the sweep plans and their epochs in all (stage 2 at the epochs of
    the method's longest configuration; a TPE search at its trial budget)."""
    epochs_fixed = int(sweep.fixed.get("epochs", RunConfig.epochs))
    counts: dict[str, tuple[int, int]] = {}
    if sweep.tpe is not None:
        for method in sweep.methods:
            runs = (sweep.tpe.trials + sweep.extra) * len(sweep.tasks)
            counts[method] = (runs, runs * epochs_fixed)
        return counts
    longest: dict[str, int] = {}
    for configuration in configurations(sweep):
        runs, epochs = counts.get(configuration.method, (0, 0))
        run_epochs = configuration.config.epochs
        counts[configuration.method] = (runs + sweep.runs, epochs + sweep.runs * run_epochs)
        longest[configuration.method] = max(longest.get(configuration.method, 0), run_epochs)
    extra = sweep.extra * len(sweep.tasks)
    return {
        method: (runs + extra, epochs + extra * longest[method])
        for method, (runs, epochs) in counts.items()
    }


def estimate(
    sweeps: Sequence[Sweep],
    given: Mapping[str, float],
    timer: Timer | None = None,
) -> StudyEstimate:
    """The estimate of ``sweeps``. ``given`` maps "method" or "sweep:method" (the more
    specific wins) to seconds per epoch; the others are measured with ``timer`` (an error
    naming them without one)."""
    rows = []
    for sweep in sweeps:
        for method, (runs, epochs) in planned_runs(sweep).items():
            rate = given.get(f"{sweep.name}:{method}", given.get(method))
            source = "given"
            if rate is None:
                if timer is None:
                    raise ConfigError(
                        f"no seconds per epoch for {method} in sweep {sweep.name}: give them "
                        f"(--seconds {method}=S or {sweep.name}:{method}=S), or let it measure"
                    )
                rate, source = timer(sweep, method), "measured"
            rows.append(MethodEstimate(sweep.name, method, runs, epochs, rate, source))
    return StudyEstimate(tuple(rows))


def study_sweeps(paths: Sequence[str | os.PathLike[str]], references: bool = True) -> list[Sweep]:
    """The sweeps of ``paths``, each after the reference sweeps it names (once each)."""
    sweeps: dict[str, Sweep] = {}
    for path in paths:
        sweep = load_sweep(path)
        if references:
            for reference in sweep.reference_sweeps:
                sweeps.setdefault(str(reference), load_sweep(reference))
        sweeps.setdefault(str(path), sweep)
    return list(sweeps.values())


@dataclass(frozen=True)
class EpochCost:
    """The measured parts of one full epoch: its steps, its evaluated samples, and the rest
    of the timed epoch (the checkpoint and the record)."""

    step_seconds: float
    steps: int
    sample_seconds: float
    val: int
    test: int
    rest_seconds: float

    def seconds(self, test_share: float) -> float:
        """An epoch's seconds when ``test_share`` of the epochs evaluate test."""
        evaluated = self.val + test_share * self.test
        return self.step_seconds * self.steps + self.sample_seconds * evaluated + self.rest_seconds


class EpochTimer:
    """Measures a method's seconds per epoch with the engine (two epochs of ``steps`` steps
    of its first configuration, on the problem's first samples where it has ``limits``;
    whole epochs otherwise), scaled to the full splits. Problems are loaded once each."""

    def __init__(
        self,
        steps: int = 20,
        eval_samples: int = 500,
        test_share: float = 1.0,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if steps < 1 or eval_samples < 1:
            raise ConfigError(f"steps and eval samples must be >= 1, got {steps}, {eval_samples}")
        if not 0.0 <= test_share <= 1.0:
            raise ConfigError(f"the test share must be in [0, 1], got {test_share}")
        self.steps, self.eval_samples, self.test_share = steps, eval_samples, test_share
        self.data_dir = data_dir
        self._problems: dict[str, Problem] = {}

    def __call__(self, sweep: Sweep, method: str) -> float:
        return self.measure(sweep, method).seconds(self.test_share)

    def measure(self, sweep: Sweep, method: str) -> EpochCost:
        """The parts of an epoch of ``method``'s first configuration in ``sweep``."""
        config = next(c.config for c in configurations(sweep) if c.method == method)
        full = self._problem(config, dict(config.problem_options))
        sizes = {s: full.split_size(s) for s in ("train", "val", "test")}
        options = dict(config.problem_options)
        if "limits" in problem_options(config.problem):
            n_eval = min(self.eval_samples, sizes["val"], sizes["test"])
            options["limits"] = [
                min(self.steps * config.batch_size, sizes["train"]),
                n_eval,
                n_eval,
            ]
        timed = dataclasses.replace(config, epochs=2, problem_options=options)
        problem = self._problem(timed, options)
        with tempfile.TemporaryDirectory() as root:
            record = train(timed, root, problem=problem, data_dir=self.data_dir)
        if record.status != "completed" or len(record.history) < 2:
            raise ConfigError(f"timing {method} in {sweep.name} ended {record.status}")
        entry = record.history[1]
        steps = math.ceil(problem.split_size("train") / config.batch_size)
        per_sample = self._eval_seconds_per_sample(problem, config)
        evaluated = problem.split_size("val")
        if entry["test"] is not None:
            evaluated += problem.split_size("test")
        return EpochCost(
            step_seconds=entry["train_seconds"] / steps,
            steps=math.ceil(sizes["train"] / config.batch_size),
            sample_seconds=per_sample,
            val=sizes["val"],
            test=sizes["test"],
            rest_seconds=max(
                0.0, entry["seconds"] - entry["train_seconds"] - per_sample * evaluated
            ),
        )

    def _eval_seconds_per_sample(self, problem: Problem, config: RunConfig) -> float:
        """Seconds per sample of evaluating the validation split with a fresh model."""
        model = problem.make_model(config.dropout).to(config.device)
        evaluate_split(model, problem, "val", config.eval_batch_size, config.device)  # warm-up
        start = time.perf_counter()
        evaluate_split(model, problem, "val", config.eval_batch_size, config.device)
        return (time.perf_counter() - start) / problem.split_size("val")

    def _problem(self, config: RunConfig, options: dict) -> Problem:
        key = repr((config.problem, config.tasks, sorted(options.items())))
        if key not in self._problems:
            if "data_dir" in problem_options(config.problem):
                options = {**options, "data_dir": self.data_dir}
            self._problems[key] = create_problem(config.problem, config.tasks, **options)
        return self._problems[key]


def parse_given(items: Sequence[str]) -> dict[str, float]:
    """``["famo=3.2", "multi_mnist-CL:unit_scal=2"]`` as a dict of seconds per epoch."""
    given = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not key or not seconds > 0 or not math.isfinite(seconds):
            raise ConfigError(
                f"--seconds takes METHOD=SECONDS or SWEEP:METHOD=SECONDS with SECONDS > 0, "
                f"got {item!r}"
            )
        given[key] = seconds
    return given
