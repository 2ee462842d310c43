"""A sweep as an Optuna study: its definition and reference in the study's user attributes,
one trial per slot, and :meth:`SweepStudy.advance`, the idempotent step that plans what is
missing (stage 1, then stage 2 once stage 1 is settled). Any process may advance a sweep:
re-running ``smto sweep run`` skips what is done, and a worker alone can finish a sweep.

A TPE sweep's stage 1 is its searches (:mod:`smto.sweep.search`, a study per method and
task set) instead of enqueued slots; its stage 2 is enqueued here like a grid's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import smto
from smto.errors import ConfigError, RunStateError
from smto.evaluation.reference import Reference
from smto.sweep.plan import Configuration, Slot, configurations, slots
from smto.sweep.search import Search
from smto.sweep.spec import Sweep
from smto.sweep.stages import choose_stage2
from smto.sweep.storage import require_optuna
from smto.sweep.trials import (
    SETTLED,
    WORKER_DIED,
    SlotState,
    drop_duplicates,
    enqueue_missing,
    fail_stale,
    slot_states,
)
from smto.train import RunConfig, RunRecord, load_run

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

SWEEP_ATTR = "smto:sweep"
REFERENCE_ATTR = "smto:reference"
STAGE2_ATTR = "smto:stage2"


class SweepStudy:
    """An existing sweep study in ``storage``. ``root`` is where this process reads and
    writes the sweep's runs: its own configuration (the sweep file, ``--root``), never the
    root stored with the sweep (``sweep.root``, for display), which anyone who can write to
    a shared storage could point elsewhere. Without it the study is a read-only view
    (``smto sweep status``) that cannot run trials or read runs."""

    def __init__(
        self, storage: RDBStorage, name: str, root: str | os.PathLike[str] | None = None
    ) -> None:
        self.storage = storage
        self.name = name
        self.root = None if root is None else Path(root).resolve()
        try:
            self.study_id = storage.get_study_id_from_name(name)
        except KeyError:
            raise KeyError(f"no sweep {name!r} in this storage") from None
        attrs = storage.get_study_user_attrs(self.study_id)
        if SWEEP_ATTR not in attrs:
            raise ConfigError(f"study {name!r} is not an smto sweep (no {SWEEP_ATTR} attribute)")
        self.sweep = Sweep.from_dict(attrs[SWEEP_ATTR])
        ref = attrs.get(REFERENCE_ATTR)
        self.reference = Reference(**ref) if ref else None
        values = self.reference.val if self.reference else None
        self.searches: list[Search] = []
        self.configurations: list[Configuration] = []
        if self.sweep.sampler == "tpe":
            self.searches = [
                Search(storage, self.sweep, tasks, method, values)
                for tasks in self.sweep.tasks
                for method in self.sweep.methods
            ]
        else:
            self.configurations = configurations(self.sweep, values)
        self._grid: list[Slot] = slots(self.configurations, self.sweep.stage1_seeds, 1)
        self._stage2: list[Slot] | None = None

    @classmethod
    def create(cls, storage: RDBStorage, sweep: Sweep, reference: Reference | None) -> SweepStudy:
        """The study of ``sweep``, created if missing; an error if it exists with another
        definition (a changed file: give it a new name or storage)."""
        optuna = require_optuna()
        with contextlib.suppress(optuna.exceptions.DuplicatedStudyError):
            storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], sweep.name)
        study_id = storage.get_study_id_from_name(sweep.name)
        stored = storage.get_study_user_attrs(study_id)
        expected = {
            SWEEP_ATTR: sweep.to_dict(),
            REFERENCE_ATTR: dataclasses.asdict(reference) if reference else None,
        }
        for key, value in expected.items():
            if key not in stored:
                storage.set_study_user_attr(study_id, key, value)
            elif stored[key] != value:
                raise ConfigError(_difference(sweep.name, key, stored[key], value))
        return cls(storage, sweep.name, sweep.root)

    @property
    def run_root(self) -> Path:
        """This process's run root (an error for a read-only view)."""
        if self.root is None:
            raise RunStateError(f"sweep {self.name!r} was opened without a run root (read-only)")
        return self.root

    # -- state ------------------------------------------------------------------------------

    @property
    def stage1(self) -> list[Slot]:
        """Stage 1's slots: the grid at each stage-1 seed, or the runs the TPE searches have
        sampled so far."""
        if not self.searches:
            return self._grid
        return [slot for search in self.searches for slot in search.slots()]

    def states(self) -> dict[str, SlotState]:
        """Every slot's trials (the searches' too), by slot key."""
        return self._with_searches(slot_states(self.storage, self.study_id))

    def _with_searches(self, states: dict[str, SlotState]) -> dict[str, SlotState]:
        for search in self.searches:
            states = {**states, **search.states()}
        return states

    def stage2(self) -> list[Slot] | None:
        """Stage 2's slots once chosen (None before)."""
        if self._stage2 is None:
            keys = self.storage.get_study_user_attrs(self.study_id).get(STAGE2_ATTR)
            if keys is None:
                return None
            candidates = self.configurations or self._sampled()
            chosen = [c for c in candidates if c.key in keys]
            self._stage2 = slots(chosen, self.sweep.stage2_seeds, 2)
        return self._stage2

    def _sampled(self) -> list[Configuration]:
        """The configurations the TPE searches have run, each once."""
        found: dict[str, Configuration] = {}
        for slot in self.stage1:
            config = RunConfig.from_dict(slot.config)
            found.setdefault(
                slot.configuration, Configuration(config.tasks, slot.method, slot.settings, config)
            )
        return list(found.values())

    def planned(self) -> list[Slot]:
        """The slots planned so far: stage 1, and stage 2 once it is known."""
        return self.stage1 + (self.stage2() or [])

    def settled(self, planned: list[Slot], states: dict[str, SlotState]) -> bool:
        """Whether every slot of ``planned`` has a final status (with ``retries`` retries)."""
        retries = self.sweep.retries
        return all(states.get(s.key, SlotState()).settled(retries) for s in planned)

    def stage1_settled(self, states: dict[str, SlotState]) -> bool:
        """Every stage-1 run has its result: the grid's slots, or the searches' budgets."""
        if self.searches:
            return all(search.settled() for search in self.searches)
        return self.settled(self.stage1, states)

    def finished(self, states: dict[str, SlotState]) -> bool:
        """Whether every slot of the sweep (stage 1, and stage 2 when it has extra seeds) is
        settled."""
        if not self.stage1_settled(states):
            return False
        if self.sweep.extra == 0:
            return True
        stage2 = self.stage2()
        return stage2 is not None and self.settled(stage2, states)

    # -- planning ---------------------------------------------------------------------------

    def advance(self, grace_period: int) -> dict[str, SlotState]:
        """Fails trials of dead workers, retires duplicates of finished slots, enqueues every
        slot that lacks a trial (retries included) and, once stage 1 is settled, chooses and
        enqueues stage 2. Idempotent."""
        fail_stale(self.storage, self.name, grace_period)
        for search in self.searches:
            fail_stale(self.storage, search.name, grace_period)
        main = slot_states(self.storage, self.study_id)
        if drop_duplicates(self.storage, self.study_id, main):
            main = slot_states(self.storage, self.study_id)
        retries = self.sweep.retries
        added = enqueue_missing(self.storage, self.study_id, self._grid, main, retries)
        states = self._with_searches(main)
        if self.sweep.extra and not added and self.stage1_settled(states):
            stage2 = self.stage2()
            if stage2 is None:
                keys = choose_stage2(self.sweep, self.records(self.stage1, states), self.reference)
                self.storage.set_study_user_attr(self.study_id, STAGE2_ATTR, keys)
                stage2 = self.stage2()
                assert stage2 is not None
            added += enqueue_missing(self.storage, self.study_id, stage2, main, retries)
        return self.states() if added else states

    def records(self, planned: list[Slot], states: dict[str, SlotState]) -> list[RunRecord]:
        """The run records of the settled slots among ``planned``. A slot that failed for
        good is a failed record even if its run never wrote one (or was killed running)."""
        records = []
        for slot in planned:
            state = states.get(slot.key, SlotState())
            status = state.status(self.sweep.retries)
            if status not in SETTLED:
                continue
            directory = self.run_root / slot.key
            try:
                record = load_run(directory)
            except FileNotFoundError:
                record = RunRecord(slot.key, slot.config, smto.__version__)
            if status == "failed":
                record.status = "failed"
                record.reason = record.reason or state.latest("reason", WORKER_DIED)
            records.append(record)
        return records

    def failures(self, states: dict[str, SlotState]) -> dict[str, str]:
        """Why each run failed for good, by slot key: the planned slots out of retries, and
        the failed trials of the TPE searches that gave up."""
        retries = self.sweep.retries
        failed = {
            slot.key: states[slot.key].latest("reason", WORKER_DIED)
            for slot in self.planned()
            if slot.key in states and states[slot.key].status(retries) == "failed"
        }
        for search in self.searches:
            failed.update(search.failures())
        return failed


def _difference(name: str, key: str, stored: Any, wanted: Any) -> str:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        fields = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        what = f"fields {fields} differ"
    else:
        what = "it differs"
    return (
        f"sweep {name!r} exists in this storage with another {key.split(':')[1]} ({what}); "
        "a re-run must use the same file: give the changed sweep a new name, or another storage"
    )
