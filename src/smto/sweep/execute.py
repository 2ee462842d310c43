"""Running one claimed trial: one training run of the engine, its outcome on the trial.

The trial's value is the run's best validation score (validation Delta_m against the
single-task reference, else minus the mean validation loss; -inf for a run that diverged
before its first epoch); its user attributes say the run's status (completed or diverged:
both are results), time and epochs, and its directory. A TPE trial also reports every
epoch's score, and a run its pruner stops is a PRUNED trial (status pruned, a result; its
value the last score, as Optuna's ``tell`` gives it). A run that raises is a FAIL trial
with the reason; planning retries it up to the sweep's ``retries`` (the run resumes from its
checkpoint), since many failures are transient (a lost node, memory taken by another job)
and a deterministic one just fails again, recorded. Ctrl-C puts the trial back in the queue
without using a retry.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smto.problems import Problem, create_problem, problem_options
from smto.sweep.storage import require_optuna
from smto.train import RunConfig, RunRecord, run_dir, train

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

    from smto.sweep.pruning import Pruning

log = logging.getLogger(__name__)


class TrialLost(Exception):
    """The trial stopped being RUNNING under this worker (it was taken for dead)."""


class Heartbeat:
    """Records a trial's heartbeat every ``interval`` seconds from a thread while it runs."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval: int) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as error:  # a transient storage error must not end the run
                log.warning("heartbeat of trial %d failed: %s", self.trial_id, error)


class ProblemCache:
    """Keeps the last problem built, so a worker's consecutive runs of one problem load its
    data once."""

    def __init__(self, data_dir: str | os.PathLike[str] | None) -> None:
        self.data_dir = data_dir
        self.key: str | None = None
        self.problem: Problem | None = None

    def get(self, config: RunConfig) -> Problem:
        """The problem of ``config``, built (with the worker's data directory) unless it is the
        one built last."""
        key = json.dumps([config.problem, config.tasks, config.problem_options], sort_keys=True)
        if key != self.key or self.problem is None:
            options = dict(config.problem_options)
            if "data_dir" in problem_options(config.problem):
                options["data_dir"] = self.data_dir
            self.problem = create_problem(config.problem, config.tasks, **options)
            self.key = key
        return self.problem


def slot_mismatch(config: RunConfig, trial: Any) -> str | None:
    """Why a trial's stored configuration is not the run of its slot (planned by another smto
    version?), or None."""
    if config.run_id() == trial.user_attrs["slot"]:
        return None
    return (
        f"its configuration reads back as run {config.run_id()}, not its slot "
        f"{trial.user_attrs['slot']} (planned by another smto version?)"
    )


def execute(
    storage: RDBStorage,
    study_id: int,
    trial: FrozenTrial,
    root: Path,
    heartbeat_interval: int,
    problems: ProblemCache,
    pruning: Pruning | None = None,
) -> str:
    """Runs the claimed ``trial`` under ``root`` (this worker's run root, never one the
    storage names) and records its outcome; returns the slot's status
    (completed, diverged, pruned, failed) or "lost" when another worker took the trial over.
    ``pruning`` reports each epoch to a TPE trial and may stop the run."""
    optuna = require_optuna()
    running = optuna.trial.TrialState.RUNNING
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    config = RunConfig.from_dict(trial.user_attrs["config"])
    reason = slot_mismatch(config, trial)
    if reason is not None:
        attrs = {"status": "failed", "reason": reason}
        return finish_trial(storage, trial_id, optuna.trial.TrialState.FAIL, attrs, None)

    def on_epoch_end(record: RunRecord) -> None:
        progress = {"epochs": len(record.history), "seconds": record.seconds}
        if storage.get_trial(trial_id).state != running:
            raise TrialLost(f"trial {trial.number} is no longer running under this worker")
        storage.set_trial_user_attr(trial_id, "progress", progress)
        if pruning is not None:
            pruning(record)

    try:
        storage.set_trial_user_attr(trial_id, "run_dir", str(run_dir(config, root)))
        with Heartbeat(storage, trial_id, heartbeat_interval):
            # A trial of the same configuration as one another worker is training (a TPE
            # search can suggest a point twice) waits for that run and shares its record.
            record = train(
                config, root, problem=problems.get(config), on_epoch_end=on_epoch_end, wait=True
            )
    except TrialLost:
        return "lost"
    except KeyboardInterrupt:
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.WAITING)
        raise
    except Exception as error:
        attrs = {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
        return finish_trial(storage, trial_id, optuna.trial.TrialState.FAIL, attrs, None)
    if pruning is not None:
        pruning.report(record)  # a run that was finished already trained no epoch here
    return tell(storage, trial_id, record)


def tell(storage: RDBStorage, trial_id: int, record: RunRecord) -> str:
    """Records a run's outcome on its trial: PRUNED (the last score) for a pruned run, else
    COMPLETE with its best score (-inf without one); returns the status, or "lost"."""
    optuna = require_optuna()
    if record.status == "pruned":
        last = record.history[-1]["score"] if record.history else None
        value = last if last is not None and math.isfinite(last) else None
        state = optuna.trial.TrialState.PRUNED
        return finish_trial(storage, trial_id, state, _summary(record), value)
    value = record.best_score
    value = value if value is not None and math.isfinite(value) else -math.inf
    state = optuna.trial.TrialState.COMPLETE
    return finish_trial(storage, trial_id, state, _summary(record), value)


def _summary(record: RunRecord) -> dict[str, Any]:
    return {
        "status": record.status,
        "reason": record.reason,
        "best_epoch": record.best_epoch,
        "progress": {"epochs": len(record.history), "seconds": record.seconds},
    }


def finish_trial(
    storage: RDBStorage, trial_id: int, state: Any, attrs: dict[str, Any], value: float | None
) -> str:
    """Writes the attributes, then the final state (a finished trial's attributes are
    frozen); "lost" when the trial was failed as stale meanwhile."""
    optuna = require_optuna()
    try:
        for key, item in attrs.items():
            storage.set_trial_user_attr(trial_id, key, item)
        storage.set_trial_state_values(trial_id, state, None if value is None else [value])
    except optuna.exceptions.UpdateFinishedTrialError:
        return "lost"
    return str(attrs["status"])
