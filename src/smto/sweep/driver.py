"""Driving sweeps: ``run_sweep`` (reference sweeps, then stage 1 and stage 2 of a sweep, this
process working on it) and ``work`` (a worker of any number of sweeps in a shared storage).

Many workers on many machines share one storage (PostgreSQL, or a SQLite file on one
machine) and one run root on a filesystem they all see (a killed run resumes elsewhere from
its checkpoint). Each worker is given that root (its sweep file, ``--root``); it never takes
it from the storage, which anyone who can write to it could point elsewhere.

Each loop advances the sweep (planning is idempotent), claims one waiting trial, and runs it
if it owns its slot (smto.sweep.trials); with none waiting, it asks a TPE sweep's searches
for a new trial while their budgets last (smto.sweep.search).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smto._optional import require
from smto.errors import ConfigError, RunStateError
from smto.evaluation.reference import Reference, single_task_reference
from smto.sweep.budget import sweep_budget
from smto.sweep.execute import ProblemCache, execute
from smto.sweep.spec import Sweep, devices, load_sweep
from smto.sweep.storage import default_storage_url, open_storage, sqlite_path
from smto.sweep.study import SWEEP_ATTR, SweepStudy
from smto.sweep.trials import SlotState, claim, mark_duplicate, owner
from smto.train.config import check_device

if TYPE_CHECKING:
    from optuna.storages import RDBStorage


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs: heartbeat interval and grace period (seconds; a RUNNING trial whose
    heartbeat is older than the grace period is taken for dead), how long to wait between
    looks at an empty queue, and where the datasets are."""

    heartbeat: int = 60
    grace: int | None = None
    poll: float = 5.0
    data_dir: str | os.PathLike[str] | None = None

    @property
    def grace_period(self) -> int:
        """The grace period in seconds: ``grace``, or twice the heartbeat interval."""
        return self.grace if self.grace is not None else 2 * self.heartbeat

    def open(self, url: str) -> RDBStorage:
        """The storage at ``url``, with this worker's heartbeat and grace period."""
        return open_storage(url, self.heartbeat, self.grace_period)


class Worker:
    """Claims and runs trials; keeps the last loaded problem between runs."""

    def __init__(self, storage: RDBStorage, settings: WorkerSettings) -> None:
        self.storage = storage
        self.settings = settings
        self.problems = ProblemCache(settings.data_dir)
        self.checked: set[str] = set()

    def step(self, study: SweepStudy) -> str | None:
        """Runs one trial of ``study``, a waiting one or else a new one of a TPE search with
        budget left: its outcome, or None when there is none. Before its first trial of a
        sweep, checks that this machine has the sweep's devices."""
        if study.name not in self.checked:
            check_devices(study.sweep)
            self.checked.add(study.name)
        outcome = self._queued(study)
        if outcome is not None:
            return outcome
        settings = self.settings
        for search in study.searches:
            trial = search.ask()
            if trial is not None:
                return search.run(
                    trial, study.run_root, settings.heartbeat, settings.poll, self.problems
                )
        return None

    def _queued(self, study: SweepStudy) -> str | None:
        """Runs one waiting trial of ``study``'s queue: its outcome, or None."""
        while True:
            trial = claim(self.storage, study.study_id)
            if trial is None:
                return None
            first = owner(self.storage, study.study_id, trial.user_attrs["slot"])
            if first is None:  # taken for dead already: nothing of ours to run or retire
                continue
            if first == trial.number:
                return execute(
                    self.storage,
                    study.study_id,
                    trial,
                    study.run_root,
                    self.settings.heartbeat,
                    self.problems,
                )
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(
                study.study_id, trial.number
            )
            mark_duplicate(self.storage, trial_id, first)


def check_devices(sweep: Sweep) -> None:
    """A ConfigError unless this machine has every device the sweep trains on: one error
    before any trial, instead of each trial failing."""
    for device in devices(sweep):
        try:
            check_device(device, available=True)
        except ConfigError as error:
            raise ConfigError(
                f"sweep {sweep.name!r}: {error} (run its workers where that device exists, or "
                "change the sweep's device)"
            ) from None


def worker_root(storage_url: str, root: str | os.PathLike[str] | None) -> Path:
    """A worker's run root: ``root``, else the directory of a SQLite storage (where the
    default storage of a sweep lives, beside its runs)."""
    if root is not None:
        return Path(root).resolve()
    path = sqlite_path(storage_url)
    if path is None:
        raise ConfigError(
            "a worker of this storage needs --root: the run root (shared by all workers) its "
            "runs go to"
        )
    return path.parent


def run_sweep(
    path: str | os.PathLike[str],
    storage_url: str | None = None,
    root: str | os.PathLike[str] | None = None,
    settings: WorkerSettings | None = None,
    progress: bool = True,
) -> SweepStudy:
    """Runs the sweep file at ``path`` to the end, both stages, after its reference sweeps;
    what is done already is skipped. The storage defaults to a SQLite file in the run root."""
    settings = settings or WorkerSettings()
    sweep = load_sweep(path, root)
    storage = settings.open(storage_url or default_storage_url(sweep.root))
    worker = Worker(storage, settings)
    return _run(sweep, worker, root, progress)


def _run(
    sweep: Sweep, worker: Worker, root: str | os.PathLike[str] | None, progress: bool
) -> SweepStudy:
    for path in sweep.reference_sweeps:
        _run(load_sweep(path, root), worker, root, progress)
    reference = resolve_reference(sweep, worker.storage, root)
    study = SweepStudy.create(worker.storage, sweep, reference)
    settings = worker.settings
    with _ProgressBar(sweep.name, progress) as bar:
        while True:
            states = study.advance(settings.grace_period)
            bar.show(study, states)
            if study.finished(states):
                return study
            if worker.step(study) is None:
                time.sleep(settings.poll)


def resolve_reference(
    sweep: Sweep, storage: RDBStorage, root: str | os.PathLike[str] | None = None
) -> Reference | None:
    """The single-task reference of a multi-task sweep: its reference file, or built from its
    (finished) reference sweeps and saved beside its runs; None for single-task sweeps."""
    if sweep.single_task:
        return None
    if sweep.reference:
        return Reference.load(sweep.reference)
    if not sweep.reference_sweeps:
        return None
    records = []
    for path in sweep.reference_sweeps:
        referenced = load_sweep(path, root)
        name = referenced.name
        study = SweepStudy(storage, name, referenced.root)
        states = study.states()
        if not study.finished(states):
            raise RunStateError(
                f"the reference sweep {name!r} is not finished: run `smto sweep run {path}`"
            )
        records += study.records(study.planned(), states)
    reference = single_task_reference(records)
    reference.save(Path(sweep.root) / f"{sweep.name}.reference.json")
    return reference


def sweep_names(storage: RDBStorage) -> list[str]:
    """The names of the smto sweeps in ``storage``."""
    return sorted(s.study_name for s in storage.get_all_studies() if SWEEP_ATTR in s.user_attrs)


def work(
    storage_url: str,
    names: Sequence[str] = (),
    settings: WorkerSettings | None = None,
    idle_timeout: float | None = None,
    echo: Callable[[str], None] = print,
    root: str | os.PathLike[str] | None = None,
) -> int:
    """Works on the sweeps ``names`` (default: every sweep in the storage) until all are
    finished, or nothing was claimable for ``idle_timeout`` seconds; waits for named sweeps
    that do not exist yet. Runs go under ``root`` (:func:`worker_root`). Returns how many
    trials this worker ran."""
    settings = settings or WorkerSettings()
    run_root = worker_root(storage_url, root)
    storage = settings.open(storage_url)
    worker = Worker(storage, settings)
    studies: dict[str, SweepStudy] = {}
    ran = 0
    idle_since = time.monotonic()
    while True:
        available = sweep_names(storage)
        wanted = list(names) or available
        waiting_for = [n for n in wanted if n not in available]
        open_studies = []
        for name in wanted:
            if name in waiting_for:
                continue
            if name not in studies:
                studies[name] = _open_study(storage, name, run_root, echo)
            study = studies[name]
            if not study.finished(study.advance(settings.grace_period)):
                open_studies.append(study)
        outcome = None
        for study in open_studies:
            outcome = worker.step(study)
            if outcome is not None:
                ran += 1
                echo(f"{study.name}: trial {outcome}")
                break
        if outcome is not None:
            idle_since = time.monotonic()
            continue
        if not open_studies and not waiting_for:
            return ran
        if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
            echo(f"nothing to claim for {idle_timeout:g} s: stopping")
            return ran
        time.sleep(settings.poll)


def _open_study(
    storage: RDBStorage, name: str, root: Path, echo: Callable[[str], None]
) -> SweepStudy:
    """The study ``name`` with this worker's run root; says so when it was planned with
    another one (the stored root is only shown, never used)."""
    study = SweepStudy(storage, name, root)
    if Path(study.sweep.root) != root:
        echo(f"{name}: planned with run root {study.sweep.root}; this worker's is {root}")
    return study


class _ProgressBar:
    """A tqdm bar over a sweep's planned runs (stage 2 joins the total once chosen)."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name
        self.enabled = enabled
        self.bar = None

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            tqdm = require("tqdm.auto", "sweep", "the sweep's progress bar").tqdm
            self.bar = tqdm(total=0, desc=self.name, unit="run", dynamic_ncols=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def show(self, study: SweepStudy, states: dict[str, SlotState]) -> None:
        if self.bar is None:
            return
        total = sweep_budget(study, states).total
        self.bar.total = total.planned
        self.bar.n = total.done
        self.bar.set_postfix_str(
            f"diverged {total.diverged} failed {total.failed} running {total.running}",
            refresh=False,
        )
        self.bar.refresh()
