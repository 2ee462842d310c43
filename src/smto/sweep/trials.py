"""The trial queue of a sweep: every slot (configuration x seed) is a WAITING trial that one
worker claims; nothing is run twice and nothing counted twice.

Why exactly once:

1. Claims are atomic (:mod:`smto.sweep.storage`): a WAITING trial becomes RUNNING for one
   worker only. Optuna's GridSampler is not used (it may hand one point to two workers).
2. A slot may still get two trials: two processes planning at once, or a re-enqueue racing
   another. So a claimed trial runs only if it is its slot's *owner*: the lowest-numbered of
   the slot's live trials (WAITING, RUNNING or COMPLETE); otherwise it is marked PRUNED with
   ``duplicate_of`` and skipped. Trial numbers grow in creation order and a trial that left
   the live set (FAIL, PRUNED) never returns, so two trials of a slot can both be owners only
   if the first stopped being live before the second looked, i.e. it failed.
3. A worker that dies leaves a RUNNING trial whose heartbeat stops; :func:`fail_stale` marks it
   FAIL, and planning (:func:`enqueue_missing`) gives the slot a new WAITING trial, at most
   ``retries`` times. The new run resumes the killed one from its checkpoint (same run
   directory, since the directory is named by the slot's key).
4. Accounting is per slot (:class:`SlotState`): one result per configuration x seed, however
   many trials it took.

A PRUNED trial is either a retired duplicate (it has ``duplicate_of``) or, in a TPE search
(:mod:`smto.sweep.search`), a run its pruner stopped: a result, like a COMPLETE trial.

A worker whose heartbeat thread stalls longer than the grace period while it still trains is
taken for dead (the one gap): it notices at its next epoch (its trial is no longer RUNNING)
and stops, and the retry resumes from the checkpoint.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from smto.sweep.plan import Slot
from smto.sweep.storage import require_optuna

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

UNATTENDED_MARGIN = timedelta(minutes=5)
"""How long past the grace period a RUNNING trial without a worker attribute (its worker died
between claiming it and its first heartbeat) is left before it is failed; generous, as the
claim's start time comes from the claiming machine's clock."""


LIVE = ("WAITING", "RUNNING", "COMPLETE")
SETTLED = ("completed", "diverged", "pruned", "failed")
"""Slot statuses that are final (results)."""
WORKER_DIED = "its worker died"
"""The reason of a failed trial that has none: its heartbeat stopped."""


def is_pruned_run(trial: FrozenTrial) -> bool:
    """A PRUNED trial that is a run stopped by a pruner, not a retired duplicate."""
    return trial.state.name == "PRUNED" and "duplicate_of" not in trial.user_attrs


def worker_id() -> str:
    """This process's worker id: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class SlotState:
    """What the storage holds about one slot: its trials, oldest first."""

    trials: list[FrozenTrial] = field(default_factory=list)

    def in_state(self, *names: str) -> list[FrozenTrial]:
        """The trials in the given states (TrialState names: "WAITING", "FAIL", ...)."""
        return [t for t in self.trials if t.state.name in names]

    @property
    def live(self) -> list[FrozenTrial]:
        """The trials that hold or will give the slot's result."""
        return [t for t in self.trials if t.state.name in LIVE or is_pruned_run(t)]

    @property
    def failures(self) -> int:
        """How many of the slot's trials failed."""
        return len(self.in_state("FAIL"))

    @property
    def result(self) -> FrozenTrial | None:
        """The finished trial (the slot's result: a completed or a pruned run), if any."""
        done = [t for t in self.trials if t.state.name == "COMPLETE" or is_pruned_run(t)]
        return done[0] if done else None

    def status(self, retries: int) -> str:
        """completed | diverged | pruned | failed (out of retries) | running | waiting |
        unplanned."""
        result = self.result
        if result is not None:
            default = "pruned" if result.state.name == "PRUNED" else "completed"
            return str(result.user_attrs.get("status", default))
        if self.in_state("RUNNING"):
            return "running"
        if self.in_state("WAITING"):
            return "waiting"
        if self.failures > retries:
            return "failed"
        return "waiting" if self.failures else "unplanned"

    def settled(self, retries: int) -> bool:
        """Whether the slot's status is final (completed, diverged, pruned, or failed past
        ``retries``)."""
        return self.status(retries) in SETTLED

    def latest(self, key: str, default: Any = None) -> Any:
        """A user attribute from the newest trial that has it (progress of the slot's run)."""
        for trial in reversed(self.trials):
            if key in trial.user_attrs:
                return trial.user_attrs[key]
        return default


def slot_states(storage: RDBStorage, study_id: int) -> dict[str, SlotState]:
    """The state of every slot that has trials, by slot key (read fresh from the storage)."""
    states: dict[str, SlotState] = {}
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        key = trial.user_attrs.get("slot")
        if key is not None:
            states.setdefault(key, SlotState()).trials.append(trial)
    return states


def enqueue_missing(
    storage: RDBStorage,
    study_id: int,
    planned: Sequence[Slot],
    states: dict[str, SlotState],
    retries: int,
) -> int:
    """Gives every planned slot without a live trial a WAITING one, unless it failed more
    than ``retries`` times; returns how many were enqueued. Idempotent."""
    optuna = require_optuna()
    added = 0
    for slot in planned:
        state = states.get(slot.key, SlotState())
        if state.live or state.failures > retries:
            continue
        template = optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, user_attrs=slot.attrs()
        )
        storage.create_new_trial(study_id, template_trial=template)
        added += 1
    return added


def claim(storage: RDBStorage, study_id: int) -> FrozenTrial | None:
    """Claims the first WAITING trial this worker can get (atomic; see module docstring), marks
    it with this worker and starts its heartbeat; None when nothing is waiting."""
    optuna = require_optuna()
    waiting = storage.get_all_trials(
        study_id, deepcopy=False, states=(optuna.trial.TrialState.WAITING,)
    )
    for trial in waiting:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            claimed = storage.set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if claimed:
            storage.record_heartbeat(trial_id)
            storage.set_trial_user_attr(trial_id, "worker", worker_id())
            return storage.get_trial(trial_id)
    return None


def drop_duplicates(storage: RDBStorage, study_id: int, states: dict[str, SlotState]) -> int:
    """Retires the WAITING trials of slots that already have a result: each is claimed first
    (atomic, so no worker holds it), then marked PRUNED with ``duplicate_of``."""
    optuna = require_optuna()
    dropped = 0
    for state in states.values():
        result = state.result
        if result is None:
            continue
        for trial in state.in_state("WAITING"):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            try:
                if not storage.set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            mark_duplicate(storage, trial_id, result.number)
            dropped += 1
    return dropped


def mark_duplicate(storage: RDBStorage, trial_id: int, owner_number: int) -> None:
    """Ends a claimed trial that is not its slot's owner (PRUNED, ``duplicate_of``)."""
    optuna = require_optuna()
    storage.set_trial_user_attr(trial_id, "duplicate_of", owner_number)
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.PRUNED)


def owner(storage: RDBStorage, study_id: int, slot: str) -> int | None:
    """The number of the slot's owner: its lowest-numbered live trial."""
    state = slot_states(storage, study_id).get(slot, SlotState())
    numbers = [t.number for t in state.live]
    return min(numbers) if numbers else None


def fail_stale(storage: RDBStorage, study_name: str, grace_period: int) -> None:
    """Fails RUNNING trials whose worker is gone: a heartbeat older than the grace period
    (Optuna's ``fail_stale_trials``), or no worker attribute long after the claim."""
    optuna = require_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(optuna.load_study(study_name=study_name, storage=storage))
    study_id = storage.get_study_id_from_name(study_name)
    limit = datetime.now() - timedelta(seconds=grace_period) - UNATTENDED_MARGIN
    running = storage.get_all_trials(
        study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
    )
    for trial in _unattended(running, limit):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue


def _unattended(trials: Iterable[FrozenTrial], limit: datetime) -> list[FrozenTrial]:
    return [
        t
        for t in trials
        if "worker" not in t.user_attrs
        and t.datetime_start is not None
        and t.datetime_start < limit
    ]
