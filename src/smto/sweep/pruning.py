"""A run's epochs reported to its Optuna trial, and the run stopped when the pruner says so.

Each epoch's validation selection score (``record.history[i]["score"]``: validation Delta_m,
or minus the mean validation loss; higher is better, as the searches maximize) is the trial's
intermediate value at step = the epoch's index. After each epoch but the last (there is
nothing left to save then), the study's pruner may stop the run: :class:`smto.train.Pruned`
ends it for good with status "pruned".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from smto.train import Pruned, RunRecord

if TYPE_CHECKING:
    from optuna.trial import Trial


class Pruning:
    """The epoch callback of a TPE trial's run. ``reported`` are the steps the trial holds
    already (a trial put back in the queue and resumed)."""

    def __init__(self, trial: Trial, epochs: int, reported: Iterable[int] = ()) -> None:
        self.trial = trial
        self.epochs = epochs
        self.reported = set(reported)

    def report(self, record: RunRecord) -> None:
        """Reports the epochs of ``record`` the trial does not hold yet."""
        for entry in record.history:
            if entry["epoch"] not in self.reported:
                self.trial.report(float(entry["score"]), entry["epoch"])
                self.reported.add(entry["epoch"])

    def __call__(self, record: RunRecord) -> None:
        self.report(record)
        if len(record.history) < self.epochs and self.trial.should_prune():
            pruner = type(self.trial.study.pruner).__name__
            epoch = record.history[-1]["epoch"]
            raise Pruned(f"pruned by Optuna's {pruner} after epoch {epoch}")
