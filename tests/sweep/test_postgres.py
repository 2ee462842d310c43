"""The PostgreSQL path against a real server: two worker processes, every configuration x
seed exactly once. CI starts a throwaway server with scripts/ci-postgres.sh."""

from __future__ import annotations

import os
import uuid

import pytest
from sweep_helpers import FAST, assert_exactly_once, start_worker, toy_sweep, wait_all

from smto.sweep import load_sweep
from smto.sweep.driver import WorkerSettings
from smto.sweep.study import SweepStudy

URL = os.environ.get("SMTO_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(
    not URL,
    reason="no PostgreSQL server: set SMTO_TEST_POSTGRES=postgresql://... "
    '(eval "$(scripts/ci-postgres.sh start)" starts a local throwaway one)',
)


def test_two_workers_on_postgresql_run_every_configuration_and_seed_once(tmp_path):
    import optuna

    assert URL is not None
    name = f"pg-{uuid.uuid4().hex[:8]}"  # the database outlives the test
    path = toy_sweep(
        tmp_path,
        name,
        methods=["unit_scal", "cagrad"],
        grid={"lr": [0.001, 0.01]},
        seeds={"runs": 3},
        fixed={"epochs": 3, "batch_size": 32, "problem_options": {"sizes": [512, 64, 64]}},
    )
    settings = WorkerSettings(**FAST)
    storage = settings.open(URL)
    assert storage.engine.dialect.name == "postgresql"
    study = SweepStudy.create(storage, load_sweep(path), None)
    try:
        study.advance(settings.grace_period)
        workers = [
            start_worker(URL, name, tmp_path / f"worker{i}.log", tmp_path / "runs")
            for i in range(2)
        ]
        wait_all(workers)
        assert_exactly_once(storage, study, tmp_path / "runs")
    finally:
        optuna.delete_study(study_name=name, storage=storage)


def test_two_workers_on_postgresql_share_a_tpe_budget(tmp_path):
    import optuna

    from smto.sweep.search import tally

    assert URL is not None
    name = f"pg-tpe-{uuid.uuid4().hex[:8]}"
    fixed = {"epochs": 2, "batch_size": 32, "problem_options": {"sizes": [512, 64, 64]}}
    path = toy_sweep(
        tmp_path,
        name,
        sampler="tpe",
        tpe={"trials": 5, "startup_trials": 2},
        seeds={"runs": 1},
        grid={"lr": {"low": 1e-3, "high": 3e-2, "log": True}},
        fixed=fixed,
    )
    settings = WorkerSettings(**FAST)
    storage = settings.open(URL)
    study = SweepStudy.create(storage, load_sweep(path), None)
    try:
        workers = [
            start_worker(URL, name, tmp_path / f"worker{i}.log", tmp_path / "runs")
            for i in range(2)
        ]
        wait_all(workers)
        (search,) = study.searches
        counts = tally(search.trials())
        assert (counts.results, counts.running, counts.failed) == (5, 0, 0)
        assert study.finished(study.advance(settings.grace_period))
    finally:
        for study_name in (name, *(s.name for s in study.searches)):
            optuna.delete_study(study_name=study_name, storage=storage)
