"""The training engine, run configurations and run records."""

from smto.train.config import OPTIMIZERS, SCHEDULERS, RunConfig
from smto.train.engine import FINISHED, Pruned, run_dir, train
from smto.train.records import RunRecord, find_runs, load_run, load_runs
from smto.train.vectorized import train_vectorized

__all__ = [
    "FINISHED",
    "OPTIMIZERS",
    "SCHEDULERS",
    "Pruned",
    "RunConfig",
    "RunRecord",
    "find_runs",
    "load_run",
    "load_runs",
    "run_dir",
    "train",
    "train_vectorized",
]
