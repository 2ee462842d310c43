"""Separate worker processes on one SQLite storage: every configuration x seed runs exactly
once, and a worker killed with SIGKILL mid-run is detected and its run completed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sweep_helpers import (
    FAST,
    assert_exactly_once,
    sqlite_url,
    start_worker,
    states,
    toy_sweep,
    trials_by_slot,
    wait_all,
)

from smto.sweep import load_sweep
from smto.sweep.budget import sweep_budget
from smto.sweep.driver import WorkerSettings, work
from smto.sweep.study import SweepStudy
from smto.train import RunConfig, load_run, train

SETTINGS = WorkerSettings(**FAST)
TIMEOUT = 90


def plan(path: Path):
    sweep = load_sweep(path)
    storage = SETTINGS.open(f"sqlite:///{sweep.root}/sweeps.db")
    study = SweepStudy.create(storage, sweep, None)
    study.advance(SETTINGS.grace_period)
    return storage, study


def test_two_workers_run_every_configuration_and_seed_once(tmp_path):
    path = toy_sweep(
        tmp_path,
        "pair",
        methods=["unit_scal", "cagrad"],
        grid={"lr": [0.001, 0.01]},
        seeds={"runs": 3},
        fixed={"epochs": 3, "batch_size": 32, "problem_options": {"sizes": [512, 64, 64]}},
    )
    storage, study = plan(path)
    url = sqlite_url(tmp_path)
    workers = [start_worker(url, "pair", tmp_path / f"worker{i}.log") for i in range(2)]
    wait_all(workers)
    assert_exactly_once(storage, study, tmp_path / "runs")
    trials = [t for ts in trials_by_slot(storage, "pair").values() for t in ts]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both took part
    assert sweep_budget(study).total.completed == 12


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_detected_and_its_run_completed(tmp_path):
    fixed = {"epochs": 8, "batch_size": 16, "problem_options": {"sizes": [1024, 64, 64]}}
    path = toy_sweep(tmp_path, "kill", grid={"lr": [0.001, 0.01]}, seeds={"runs": 1}, fixed=fixed)
    storage, study = plan(path)
    root = tmp_path / "runs"
    worker = start_worker(sqlite_url(tmp_path), "kill", tmp_path / "killed.log")
    killed = None
    deadline = time.monotonic() + TIMEOUT
    while killed is None and time.monotonic() < deadline:
        for slot, trials in trials_by_slot(storage, "kill").items():
            started = states(trials) == ["RUNNING"] and (root / slot / "record.json").exists()
            if started and 0 < len(load_run(root / slot).history) < fixed["epochs"]:
                os.kill(worker.pid, signal.SIGKILL)
                killed = slot
                break
        time.sleep(0.02)
    worker.wait(timeout=10)
    assert killed is not None, "the worker finished its run before it could be killed"
    assert states(trials_by_slot(storage, "kill")[killed]) == ["RUNNING"]  # an orphan

    assert work(sqlite_url(tmp_path), ["kill"], SETTINGS, echo=lambda line: None) >= 1

    assert_exactly_once(storage, study, root)
    assert states(trials_by_slot(storage, "kill")[killed]) == ["FAIL", "COMPLETE"]
    budget = sweep_budget(study).total
    assert (budget.planned, budget.completed, budget.failed_attempts) == (2, 2, 1)
    # Resumed from its checkpoint: the numbers of a run that was never interrupted.
    config = RunConfig.from_dict(load_run(root / killed).config)
    fresh = train(config, tmp_path / "fresh")
    assert load_run(root / killed).best_val == fresh.best_val
