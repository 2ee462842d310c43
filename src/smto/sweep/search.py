"""The TPE search of one method on one task set: stage 1 of a TPE sweep.

Each search is an Optuna study of its own (``<sweep>/tpe/<tasks>/<method>``), since TPE
models, and the median pruner compares, the trials of one study: one method's runs only. A
trial is one training run at the sweep's first seed; it reports its validation score each
epoch (:mod:`smto.sweep.pruning`) and its pruner may stop it (status "pruned", for good).

The budget. ``trials`` bounds the trials that count: COMPLETE ones (completed or diverged
runs), PRUNED ones, and the WAITING and RUNNING ones that will become one of those. A worker
asks Optuna for a trial only while fewer than ``trials`` count; after asking, it runs the
trial only if fewer than ``trials`` of the trials numbered below it count, and otherwise
retires it (FAIL with ``retired``; it never counts). Trial numbers grow in creation order,
so the highest-numbered trial that ends up counting saw all the others when it checked: at
most ``trials`` ever count, however many workers race (a race costs a retired trial, not an
extra run). A failed trial (an exception, or a worker that died, failed by its heartbeat)
does not count: the search asks for another configuration. So that a search whose runs all
fail ends, it stops after ``(retries + 1) x trials`` failed trials, the attempts a grid of
``trials`` configurations could make.

Repeats. TPE may suggest a configuration an earlier trial of the search already has (likely
in a space of a few choices). That is the same run (same directory), so it is not trained
again: the trial waits for the earlier one if it is still running, then takes its outcome
(state, value, intermediate values; ``copy_of``) and counts in the budget as the trial it
is. If the earlier trial fails instead, the waiting one runs the configuration itself
(resuming the run from its checkpoint).

Reproducibility. A trial's sampler is seeded by the sweep's seed and the number of trials
before it, so one worker gets the same suggestions on every machine and after a resume (a
sampler seeded once per process would repeat its first draws after each restart); with
several workers the order of results, hence the suggestions, depends on timing.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smto.sweep.execute import Heartbeat, ProblemCache, execute, finish_trial
from smto.sweep.plan import Slot, Values, configuration, slots
from smto.sweep.pruning import Pruning
from smto.sweep.space import distributions
from smto.sweep.spec import Sweep, Tpe
from smto.sweep.storage import require_optuna
from smto.sweep.trials import WORKER_DIED, SlotState, slot_states, worker_id

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial, Trial

SEARCH_ATTR = "smto:search"
LOST = "lost"


def search_name(sweep: str, tasks: str, method: str) -> str:
    """The name of a search's Optuna study."""
    return f"{sweep}/tpe/{tasks}/{method}"


def sampler_seed(seed: int, trials_before: int) -> int:
    """The seed of the sampler that suggests trial number ``trials_before``."""
    return (seed * 1_000_003 + trials_before) % 2**32


@dataclass
class Tally:
    """A search's trials by what they mean for its budget (``failed``: FAIL trials, not
    counting retired ones)."""

    completed: int = 0
    diverged: int = 0
    pruned: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0

    @property
    def results(self) -> int:
        """The trials that gave a result: completed, diverged or pruned."""
        return self.completed + self.diverged + self.pruned

    @property
    def counted(self) -> int:
        """The trials that use the budget: results, and trials that will give one."""
        return self.results + self.running + self.waiting


def tally(trials: Sequence[FrozenTrial]) -> Tally:
    """The counts of ``trials`` by outcome (a retired trial is not counted)."""
    counts = Tally()
    for trial in trials:
        state = trial.state.name
        if state == "COMPLETE":
            status = trial.user_attrs.get("status", "completed")
            counts.diverged += status == "diverged"
            counts.completed += status != "diverged"
        elif state == "PRUNED":
            counts.pruned += 1
        elif state == "RUNNING":
            counts.running += 1
        elif state == "WAITING":
            counts.waiting += 1
        elif "retired" not in trial.user_attrs:
            counts.failed += 1
    return counts


class Search:
    """The TPE search of ``method`` on ``tasks`` (its study is created if missing)."""

    def __init__(
        self, storage: RDBStorage, sweep: Sweep, tasks: str, method: str, reference: Values | None
    ) -> None:
        if sweep.tpe is None:
            raise ValueError(f"sweep {sweep.name!r} is not a TPE sweep")
        self.storage = storage
        self.sweep = sweep
        self.settings: Tpe = sweep.tpe
        self.tasks = tasks
        self.method = method
        self.reference = reference
        self.name = search_name(sweep.name, tasks, method)
        self.study_id = self._open()

    def _open(self) -> int:
        optuna = require_optuna()
        with contextlib.suppress(optuna.exceptions.DuplicatedStudyError):
            study_id = self.storage.create_new_study(
                [optuna.study.StudyDirection.MAXIMIZE], self.name
            )
            about = {"sweep": self.sweep.name, "tasks": self.tasks, "method": self.method}
            self.storage.set_study_user_attr(study_id, SEARCH_ATTR, about)
        return self.storage.get_study_id_from_name(self.name)

    # -- state ------------------------------------------------------------------------------

    def trials(self) -> list[FrozenTrial]:
        """Every trial of the search's study."""
        return self.storage.get_all_trials(self.study_id, deepcopy=False)

    def tally(self) -> Tally:
        """The counts of the search's trials by outcome."""
        return tally(self.trials())

    def states(self) -> dict[str, SlotState]:
        """The search's trials by slot (run)."""
        return slot_states(self.storage, self.study_id)

    def slots(self) -> list[Slot]:
        """The runs the search has sampled (from trials that count), each once, oldest first."""
        found: dict[str, Slot] = {}
        for trial in self.trials():
            if trial.state.name != "FAIL" and "slot" in trial.user_attrs:
                found.setdefault(trial.user_attrs["slot"], Slot.from_attrs(trial.user_attrs))
        return list(found.values())

    def gave_up(self, counts: Tally) -> bool:
        """Whether the search gives up: its failed trials reach ``retries + 1`` times its budget."""
        return counts.failed >= (self.sweep.retries + 1) * self.settings.trials

    def settled(self, counts: Tally | None = None) -> bool:
        """The budget is spent (or the search gave up) and no trial is running or waiting."""
        counts = self.tally() if counts is None else counts
        spent = counts.results >= self.settings.trials or self.gave_up(counts)
        return spent and counts.running == 0 and counts.waiting == 0

    def failures(self) -> dict[str, str]:
        """Why its trials failed, by run (or trial, for an invalid suggestion), once the
        search gave up; nothing before, since it replaces a failed trial by another."""
        trials = self.trials()
        if not self.gave_up(tally(trials)):
            return {}
        failed = {}
        for trial in trials:
            if trial.state.name == "FAIL" and "retired" not in trial.user_attrs:
                key = trial.user_attrs.get("slot", f"{self.name} trial {trial.number}")
                failed[key] = trial.user_attrs.get("reason", WORKER_DIED)
        return failed

    # -- working ----------------------------------------------------------------------------

    def ask(self) -> Trial | None:
        """A trial claimed by this worker with its configuration suggested (or a trial put
        back in the queue, resumed); None when the budget is spent, or was taken by a racing
        worker."""
        optuna = require_optuna()
        trials = self.trials()
        counts = tally(trials)
        room = counts.counted < self.settings.trials and not self.gave_up(counts)
        if not room and counts.waiting == 0:  # a waiting trial is popped first, and counted
            return None
        study = optuna.load_study(
            study_name=self.name,
            storage=self.storage,
            sampler=self._sampler(len(trials)),
            pruner=self._pruner(),
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask(distributions(self.sweep.space(self.method)))
        trial_id = self._trial_id(trial.number)
        self.storage.record_heartbeat(trial_id)
        self.storage.set_trial_user_attr(trial_id, "worker", worker_id())
        before = [t for t in self.trials() if t.number < trial.number and t.state.name != "FAIL"]
        if len(before) >= self.settings.trials:
            self._retire(trial_id, "over budget: a racing worker took the last trial")
            return None
        return trial

    def run(
        self, trial: Trial, root: Path, heartbeat: int, poll: float, problems: ProblemCache
    ) -> str:
        """Runs the claimed ``trial`` under the run root ``root``: its configuration's run, or
        the outcome of an earlier trial of the same configuration. Returns completed,
        diverged, pruned, failed, or "lost" (the trial was taken for dead). Ctrl-C puts the
        trial back in the queue."""
        optuna = require_optuna()
        trial_id = self._trial_id(trial.number)
        try:
            try:
                chosen = configuration(
                    self.sweep, self.tasks, self.method, trial.params, self.reference
                )
            except (ValueError, TypeError) as error:
                attrs = {"status": "failed", "reason": f"invalid configuration: {error}"}
                failed = optuna.trial.TrialState.FAIL
                return finish_trial(self.storage, trial_id, failed, attrs, None)
            (slot,) = slots([chosen], [self.sweep.first_seed], stage=1)
            for key, value in slot.attrs().items():
                self.storage.set_trial_user_attr(trial_id, key, value)
            with Heartbeat(self.storage, trial_id, heartbeat):
                earlier = self._earlier(trial.number, slot.key, poll)
        except KeyboardInterrupt:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.WAITING)
            raise
        if earlier is LOST:
            return LOST
        if earlier is not None:
            return self._copy(trial_id, earlier)
        frozen = self.storage.get_trial(trial_id)
        pruning = Pruning(trial, chosen.config.epochs, frozen.intermediate_values)
        return execute(self.storage, self.study_id, frozen, root, heartbeat, problems, pruning)

    def _earlier(self, number: int, key: str, poll: float) -> Any:
        """The earlier trial of the same run once it finished; None when this trial is to
        run it; LOST when this trial is no longer ours."""
        optuna = require_optuna()
        while True:
            state = self.states().get(key, SlotState())
            mine = [t for t in state.trials if t.number == number]
            if not mine or mine[0].state.name != "RUNNING":
                return LOST
            first = min(state.live, key=lambda t: t.number)
            if first.number == number:
                return None
            if first.state.is_finished():
                return first
            if first.state == optuna.trial.TrialState.WAITING:
                # Put back in the queue (Ctrl-C) after this trial was asked: take its place.
                first_id = self._trial_id(first.number)
                running = optuna.trial.TrialState.RUNNING
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    if self.storage.set_trial_state_values(first_id, running):
                        self._retire(first_id, f"replaced by trial {number}")
                continue
            time.sleep(poll)

    def _copy(self, trial_id: int, earlier: FrozenTrial) -> str:
        """Ends the trial with the outcome of ``earlier``, the trial of the same run."""
        for step, value in earlier.intermediate_values.items():
            self.storage.set_trial_intermediate_value(trial_id, step, value)
        default = "pruned" if earlier.state.name == "PRUNED" else "completed"
        status = earlier.user_attrs.get("status", default)
        attrs = {"copy_of": earlier.number, "status": status}
        return finish_trial(self.storage, trial_id, earlier.state, attrs, earlier.value)

    def _retire(self, trial_id: int, reason: str) -> None:
        """Ends a claimed trial that must not run; it is not a failure and never counts."""
        optuna = require_optuna()
        self.storage.set_trial_user_attr(trial_id, "retired", reason)
        self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _sampler(self, trials_before: int) -> Any:
        optuna = require_optuna()
        return optuna.samplers.TPESampler(
            seed=sampler_seed(self.settings.seed, trials_before),
            n_startup_trials=self.settings.startup_trials,
        )

    def _pruner(self) -> Any:
        optuna = require_optuna()
        if self.settings.pruner == "none":
            return optuna.pruners.NopPruner()
        return optuna.pruners.MedianPruner(
            n_startup_trials=self.settings.pruner_startup_trials,
            n_warmup_steps=self.settings.warmup_epochs,
        )
