"""Driving sweeps: ``run_sweep`` (reference sweeps, then stage 1 and stage 2 of a sweep, this
process working on it), ``run_sweeps`` (several sweeps as one queue, :class:`SweepQueue`) and
``work`` (a worker of any number of sweeps in a shared storage).

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
from smto.sweep.budget import MethodBudget, sweep_budget
from smto.sweep.execute import ProblemCache, execute
from smto.sweep.spec import Sweep, devices, load_sweep
from smto.sweep.storage import default_storage_url, open_storage, sqlite_path
from smto.sweep.study import SWEEP_ATTR, SweepStudy
from smto.sweep.threads import use_threads
from smto.sweep.trials import claim, mark_duplicate, owner, worker_id
from smto.sweep.vectorized import auto_group_size, claim_partners, execute_group
from smto.train import RunConfig
from smto.train.config import check_device

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs: heartbeat interval and grace period (seconds; a RUNNING trial whose
    heartbeat is older than the grace period is taken for dead), how long to wait between
    looks at an empty queue, and where the datasets are."""

    heartbeat: int = 60
    grace: int | None = None
    poll: float = 5.0
    data_dir: str | os.PathLike[str] | None = None
    vectorize: int = 1
    """How many waiting trials that differ only in seed, lr, dropout or weight decay a worker
    claims and trains as one vectorized model (smto.sweep.vectorized); 0: as many as the
    memory allows (at most 16)."""

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
            if first == trial.number and self.settings.vectorize != 1:
                return self._vectorized(study, trial)
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

    def _vectorized(self, study: SweepStudy, trial: FrozenTrial) -> str:
        """Runs ``trial`` with up to ``vectorize - 1`` waiting partners as one model; their
        outcomes, joined."""
        size = self.settings.vectorize
        if size == 0:
            size = auto_group_size(RunConfig.from_dict(trial.user_attrs["config"]), self.problems)
        partners = claim_partners(self.storage, study.study_id, trial, size)
        outcomes = execute_group(
            self.storage, study.study_id, [trial, *partners], study.run_root,
            self.settings.heartbeat, self.problems,
        )  # fmt: skip
        return ", ".join(outcomes) + (f" ({len(outcomes)} vectorized)" if partners else "")


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
    queue = run_sweeps([path], storage_url, root, settings, progress)
    return queue.studies[queue.sweeps[-1].name]


def run_sweeps(
    paths: Sequence[str | os.PathLike[str]],
    storage_url: str | None = None,
    root: str | os.PathLike[str] | None = None,
    settings: WorkerSettings | None = None,
    progress: bool = True,
) -> SweepQueue:
    """Runs the sweep files ``paths`` (and their reference sweeps) to the end in this
    process, as one queue (:class:`SweepQueue`); returns it."""
    settings = settings or WorkerSettings()
    queue = SweepQueue.load(paths, root)
    storage = settings.open(storage_url or queue.default_storage_url())
    queue.storage = storage
    worker = Worker(storage, settings)
    with ProgressBar(queue.description, progress) as bar:
        while True:
            studies = queue.advance(settings.grace_period)
            bar.show(queue)
            if queue.finished():
                return queue
            if not any(worker.step(study) is not None for study in studies):
                time.sleep(settings.poll)


class SweepQueue:
    """Sweeps run together on one storage, so that every worker has work: each sweep after
    its reference sweeps (a multi-task sweep picks its runs' best epochs against their
    reference), all the others at once. ``sweeps`` are in that order (references first, each
    once). Planning (:meth:`advance`) is idempotent, and any number of workers may run the
    sweeps' trials meanwhile (``smto sweep work --sweep NAME`` waits for a sweep that is not
    planned yet)."""

    def __init__(self, sweeps: Sequence[Sweep], root: str | os.PathLike[str] | None) -> None:
        self.sweeps = list(sweeps)
        self.root = root
        self.storage: RDBStorage | None = None
        self.studies: dict[str, SweepStudy] = {}
        self.done: set[str] = set()
        self.needs = {
            s.name: [load_sweep(p, root).name for p in s.reference_sweeps] for s in self.sweeps
        }

    @classmethod
    def load(
        cls, paths: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str] | None
    ) -> SweepQueue:
        """The queue of the sweep files ``paths`` and their reference sweeps; the same name
        with two definitions is a ConfigError."""
        if not paths:
            raise ConfigError("give at least one sweep file")
        ordered: dict[str, Sweep] = {}

        def add(sweep: Sweep) -> None:
            for path in sweep.reference_sweeps:
                add(load_sweep(path, root))
            known = ordered.get(sweep.name)
            if known is not None and known != sweep:
                raise ConfigError(
                    f"two different sweeps are named {sweep.name!r}: give one of them another "
                    "name (the file's name = ...)"
                )
            ordered[sweep.name] = sweep

        tops = [load_sweep(path, root) for path in paths]
        for sweep in tops:
            add(sweep)
        roots = sorted({s.root for s in tops})
        if len(roots) > 1:
            raise ConfigError(
                f"the sweep files have different run roots ({', '.join(roots)}): sweeps queued "
                "together share one storage and root; give --root (and --storage)"
            )
        return cls(list(ordered.values()), root)

    @property
    def names(self) -> list[str]:
        """The sweeps' names, in order."""
        return [s.name for s in self.sweeps]

    @property
    def description(self) -> str:
        """The queue in a few words (its last sweep's name, and how many there are)."""
        last = self.sweeps[-1].name
        return last if len(self.sweeps) == 1 else f"{last} (+{len(self.sweeps) - 1} sweeps)"

    def default_storage_url(self) -> str:
        """The SQLite file in the run root of the sweep files given (the last one's)."""
        return default_storage_url(self.sweeps[-1].root)

    def advance(self, grace_period: int) -> list[SweepStudy]:
        """Plans every sweep whose reference sweeps are finished (creating its study), advances
        the planned ones, and returns those not finished."""
        if self.storage is None:
            raise RunStateError("the queue has no storage yet")
        unfinished = []
        for sweep in self.sweeps:
            if sweep.name in self.done:
                continue
            study = self.studies.get(sweep.name)
            if study is None:
                if any(name not in self.done for name in self.needs[sweep.name]):
                    continue
                reference = resolve_reference(sweep, self.storage, self.root)
                study = SweepStudy.create(self.storage, sweep, reference)
                self.studies[sweep.name] = study
            if study.finished(study.advance(grace_period)):
                self.done.add(sweep.name)
            else:
                unfinished.append(study)
        return unfinished

    def finished(self) -> bool:
        """Whether every sweep of the queue is finished."""
        return len(self.done) == len(self.sweeps)


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
    threads: int | None = None,
) -> int:
    """Works on the sweeps ``names`` (default: every sweep in the storage) until all are
    finished, or nothing was claimable for ``idle_timeout`` seconds; waits for named sweeps
    that do not exist yet. Runs go under ``root`` (:func:`worker_root`), with ``threads``
    torch threads (default: torch's own, all the cores). Returns how many trials this worker
    ran."""
    settings = settings or WorkerSettings()
    run_root = worker_root(storage_url, root)
    if threads is not None:
        echo(f"worker {worker_id()}: {use_threads(threads)} thread(s)")
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


class ProgressBar:
    """A tqdm bar over a queue's planned runs (stage 2 and the later sweeps join the total
    once planned)."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name
        self.enabled = enabled
        self.bar = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            tqdm = require("tqdm.auto", "sweep", "the sweep's progress bar").tqdm
            self.bar = tqdm(total=0, desc=self.name, unit="run", dynamic_ncols=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def show(self, queue: SweepQueue) -> None:
        if self.bar is None:
            return
        total = MethodBudget("all")
        for study in queue.studies.values():
            total.add(sweep_budget(study).total)
        self.bar.total = total.planned
        self.bar.n = total.done
        self.bar.set_postfix_str(
            f"diverged {total.diverged} failed {total.failed} running {total.running}",
            refresh=False,
        )
        self.bar.refresh()
