"""Budget accounting: per method, the runs of a sweep by status, the training time spent, the
time per epoch and what is left, so a report can show the cost of tuning each method.

Counts are per slot (configuration x seed), never per trial: a run killed and resumed, or
a duplicate trial, is one run. Time is the run record's own (summed over its epochs, resumes
included), read from the trials' progress attributes, so the storage alone is enough.

A TPE search is counted by trials, as its budget is: ``planned`` is the budget, the
completed, diverged and pruned trials are what it spent (a trial that repeated an earlier
configuration included), ``waiting`` is what is left (``failed`` instead, if the search gave
up), and its failed trials, which do not count, are ``failed_attempts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from smto.sweep.plan import Slot
from smto.sweep.search import Search, tally
from smto.sweep.study import SweepStudy
from smto.sweep.trials import SlotState
from smto.train import RunConfig

STATUSES = ("completed", "diverged", "pruned", "failed", "running", "waiting")


@dataclass
class MethodBudget:
    """One method's runs and time. ``pending`` are stage-2 runs not chosen yet (counted in
    ``planned``); ``failed_attempts`` are trials that failed (exception or dead worker),
    retried or not."""

    method: str
    planned: int = 0
    completed: int = 0
    diverged: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    pending: int = 0
    failed_attempts: int = 0
    seconds: float = 0.0
    epochs: int = 0
    remaining_epochs: int = 0

    @property
    def done(self) -> int:
        """The slots that are finished: completed, diverged, pruned or failed."""
        return self.completed + self.diverged + self.pruned + self.failed

    @property
    def seconds_per_epoch(self) -> float | None:
        """The mean training time of an epoch (None before any epoch)."""
        return self.seconds / self.epochs if self.epochs else None

    def add(self, other: MethodBudget) -> None:
        """Adds the counts and times of ``other`` to this budget's."""
        for f in fields(self):
            if f.name != "method":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class SweepBudget:
    """A sweep's budget: per method, with the stage-2 state and the workers now running."""

    name: str
    problem: str
    tasks: tuple[str, ...]
    methods: dict[str, MethodBudget] = field(default_factory=dict)
    stage2: str = "none"
    sampler: str = "grid"

    @property
    def total(self) -> MethodBudget:
        """The sum of the budgets of every method."""
        total = MethodBudget("total")
        for budget in self.methods.values():
            total.add(budget)
        return total

    def remaining_seconds(self, method: MethodBudget) -> float | None:
        """Training time left for ``method``'s unfinished runs, at its time per epoch (the
        sweep's where it has none yet)."""
        rate = method.seconds_per_epoch or self.total.seconds_per_epoch
        return None if rate is None else method.remaining_epochs * rate

    def eta_seconds(self) -> float | None:
        """Wall time left with as many workers as are running now (at least one)."""
        left = [self.remaining_seconds(m) for m in self.methods.values()]
        if any(v is None for v in left):
            return None
        return sum(v for v in left if v is not None) / max(1, self.total.running)


def sweep_budget(study: SweepStudy, states: dict[str, SlotState] | None = None) -> SweepBudget:
    """The budget of ``study`` now."""
    sweep = study.sweep
    states = study.states() if states is None else states
    stage2 = study.stage2()
    budget = SweepBudget(sweep.name, sweep.problem, sweep.tasks, sampler=sweep.sampler)
    budget.methods = {m: MethodBudget(m) for m in sweep.methods}
    for search in study.searches:
        _count_search(budget.methods[search.method], search)
    grid = [] if study.searches else study.stage1
    for slot in grid + (stage2 or []):
        _count(budget.methods[slot.method], slot, states.get(slot.key, SlotState()), sweep.retries)
    if sweep.extra == 0:
        budget.stage2 = "none"
    elif stage2 is None:
        budget.stage2 = "not chosen yet"
        epochs = grid[0].config["epochs"] if grid else _epochs(study)
        for method in budget.methods.values():
            method.pending = sweep.extra * len(sweep.tasks)
            method.planned += method.pending
            method.remaining_epochs += method.pending * epochs
    else:
        budget.stage2 = f"{len(stage2)} runs of {len({s.configuration for s in stage2})} chosen"
    return budget


def _count(budget: MethodBudget, slot: Slot, state: SlotState, retries: int) -> None:
    status = state.status(retries)
    status = "waiting" if status == "unplanned" else status
    budget.planned += 1
    setattr(budget, status, getattr(budget, status) + 1)
    budget.failed_attempts += state.failures
    progress = state.latest("progress", {}) or {}
    epochs = int(progress.get("epochs", 0))
    budget.seconds += float(progress.get("seconds", 0.0))
    budget.epochs += epochs
    if status in ("running", "waiting"):
        budget.remaining_epochs += max(0, int(slot.config["epochs"]) - epochs)


def _count_search(budget: MethodBudget, search: Search) -> None:
    counts = tally(search.trials())
    budget.planned += search.settings.trials
    budget.completed += counts.completed
    budget.diverged += counts.diverged
    budget.pruned += counts.pruned
    budget.running += counts.running
    budget.failed_attempts += counts.failed
    unspent = max(0, search.settings.trials - counts.counted)
    budget.waiting += counts.waiting
    if search.gave_up(counts):
        budget.failed += unspent
    else:
        budget.waiting += unspent
        budget.remaining_epochs += unspent * _epochs_of(search)
    for state in search.states().values():
        progress = state.latest("progress", {}) or {}
        epochs = int(progress.get("epochs", 0))
        budget.seconds += float(progress.get("seconds", 0.0))
        budget.epochs += epochs
        if state.in_state("RUNNING", "WAITING"):
            planned = int(state.trials[-1].user_attrs.get("config", {}).get("epochs", epochs))
            budget.remaining_epochs += max(0, planned - epochs)


def _epochs(study: SweepStudy) -> int:
    """The epochs of a run of the sweep (of its longest, if epochs are swept)."""
    return max((_epochs_of(search) for search in study.searches), default=0)


def _epochs_of(search: Search) -> int:
    swept = search.sweep.space(search.method).get("epochs")
    if swept is None:
        return int(search.sweep.fixed.get("epochs", RunConfig.epochs))
    return int(max(swept) if isinstance(swept, list) else swept.high)


def format_duration(seconds: float | None) -> str:
    """``seconds`` as h:mm:ss ("?" for None)."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_budget(budget: SweepBudget) -> str:
    """A table per method: runs by status, training time, time per epoch, time left."""
    total = budget.total
    counts = [c for c in ("planned", *STATUSES) if c != "pruned" or budget.sampler == "tpe"]
    lines = [
        f"sweep {budget.name} ({budget.problem}, {', '.join(budget.tasks)}): {total.done} of "
        f"{total.planned} runs finished; stage 2: {budget.stage2}; ETA "
        f"{format_duration(budget.eta_seconds())} with {max(1, total.running)} worker(s)",
        f"{'method':<14} {' '.join(counts)} {'retried':>7} {'time':>9} {'s/epoch':>8} {'left':>9}",
    ]
    for row in [*budget.methods.values(), total]:
        rate = row.seconds_per_epoch
        numbers = " ".join(f"{getattr(row, c):>{len(c)}}" for c in counts)
        lines.append(
            f"{row.method:<14} {numbers} {row.failed_attempts:>7} "
            f"{format_duration(row.seconds):>9} {'?' if rate is None else f'{rate:.3g}':>8} "
            f"{format_duration(budget.remaining_seconds(row)):>9}"
        )
    return "\n".join(lines)
