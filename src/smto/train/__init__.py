"""The training engine, run configurations and run records."""

from smto.train.config import OPTIMIZERS, SCHEDULERS, RunConfig
from smto.train.engine import run_dir, train
from smto.train.records import RunRecord, find_runs, load_run, load_runs

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "RunConfig",
    "RunRecord",
    "find_runs",
    "load_run",
    "load_runs",
    "run_dir",
    "train",
]
