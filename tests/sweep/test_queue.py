"""The trial queue in one process: planning is idempotent, duplicates never run, dead
claims are retried, diverged runs are results, failures are retried a bounded number of
times, and the budget counts one result per configuration x seed."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import optuna
import pytest
from sweep_helpers import FAST, sqlite_url, states, toy_sweep, trials_by_slot

from smto.sweep import load_sweep
from smto.sweep.budget import format_budget, sweep_budget
from smto.sweep.driver import Worker, WorkerSettings, run_sweep, work
from smto.sweep.execute import execute
from smto.sweep.study import SweepStudy
from smto.sweep.trials import claim, enqueue_missing
from smto.train import load_run

SETTINGS = WorkerSettings(**FAST)


def planned_study(path):
    sweep = load_sweep(path)
    storage = SETTINGS.open(f"sqlite:///{sweep.root}/sweeps.db")
    study = SweepStudy.create(storage, sweep, None)
    study.advance(SETTINGS.grace_period)
    return storage, study


def test_planning_twice_enqueues_nothing_more(tmp_path):
    storage, study = planned_study(toy_sweep(tmp_path, "twice"))
    first = trials_by_slot(storage, "twice")
    assert len(first) == 4 and all(states(t) == ["WAITING"] for t in first.values())
    study.advance(SETTINGS.grace_period)
    SweepStudy.create(storage, study.sweep, None).advance(SETTINGS.grace_period)
    assert trials_by_slot(storage, "twice").keys() == first.keys()
    assert all(len(t) == 1 for t in trials_by_slot(storage, "twice").values())


def test_a_changed_sweep_file_is_refused(tmp_path):
    storage, _ = planned_study(toy_sweep(tmp_path, "changed"))
    changed = load_sweep(toy_sweep(tmp_path, "changed", grid={"lr": [0.001, 0.02]}))
    with pytest.raises(ValueError, match=r"fields \['grid'\] differ"):
        SweepStudy.create(storage, changed, None)


def test_duplicate_trials_of_a_slot_run_once(tmp_path):
    storage, study = planned_study(toy_sweep(tmp_path, "dupes"))
    # A second planner that did not see the first one's trials: every slot twice. The copies
    # are retired once their slot has a result.
    enqueue_missing(storage, study.study_id, study.stage1, {}, 2)
    assert work(sqlite_url(tmp_path), ["dupes"], SETTINGS, echo=lambda line: None) == 4
    for slot, trials in trials_by_slot(storage, "dupes").items():
        assert states(trials) == ["COMPLETE", "PRUNED"], slot
        assert trials[1].user_attrs["duplicate_of"] == trials[0].number
    assert len(list((tmp_path / "runs").glob("toy_regression-*"))) == 4


def test_a_claimed_duplicate_is_not_run_while_its_slot_has_an_older_live_trial(tmp_path):
    storage, study = planned_study(
        toy_sweep(tmp_path, "owner", grid={"lr": [0.001]}, seeds={"runs": 1})
    )
    enqueue_missing(storage, study.study_id, study.stage1, {}, 2)
    held = claim(storage, study.study_id)  # another worker holds the original
    assert held is not None and held.number == 0
    worker = Worker(storage, SETTINGS)
    assert worker.step(study) is None  # it claimed the duplicate, saw trial 0, did not run it
    (trials,) = trials_by_slot(storage, "owner").values()
    assert states(trials) == ["RUNNING", "PRUNED"]
    assert trials[1].user_attrs["duplicate_of"] == 0
    assert not (tmp_path / "runs" / study.stage1[0].key).exists()
    assert execute(storage, study.study_id, held, study.run_root, 1, worker.problems) == "completed"
    assert states(trials_by_slot(storage, "owner")[study.stage1[0].key]) == ["COMPLETE", "PRUNED"]


def test_a_claim_whose_worker_died_before_its_first_heartbeat_is_retried(tmp_path):
    storage, study = planned_study(toy_sweep(tmp_path, "unattended"))
    slot = study.stage1[0]
    trials = trials_by_slot(storage, "unattended")[slot.key]
    trial_id = storage.get_trial_id_from_study_id_trial_number(study.study_id, trials[0].number)
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING)
    study.advance(SETTINGS.grace_period)  # just claimed: left alone
    assert states(trials_by_slot(storage, "unattended")[slot.key]) == ["RUNNING"]
    old = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, user_attrs=slot.attrs())
    old.datetime_start = datetime.now() - timedelta(hours=1)
    storage.create_new_trial(study.study_id, template_trial=old)
    study.advance(SETTINGS.grace_period)
    # The hour-old claim without a worker failed; the fresh one stays (the slot has a live trial).
    assert states(trials_by_slot(storage, "unattended")[slot.key]) == ["RUNNING", "FAIL"]


def test_diverged_runs_are_results_and_failures_are_retried_then_counted(tmp_path, monkeypatch):
    import smto.sweep.execute as execute

    real_train = execute.train

    def flaky_train(config, root, **kwargs):
        if config.seed == 1 and config.lr == 0.01:
            raise RuntimeError("out of memory (simulated)")
        return real_train(config, root, **kwargs)

    monkeypatch.setattr(execute, "train", flaky_train)
    path = toy_sweep(
        tmp_path,
        "faults",
        retries=1,
        fixed={"epochs": 2, "batch_size": 64, "optimizer": "sgd"},
        grid={"lr": [0.01, 1000.0]},
    )
    study = run_sweep(path, settings=SETTINGS, progress=False)
    trials = trials_by_slot(study.storage, "faults")
    by_config = {
        (t[0].user_attrs["settings"]["lr"], t[0].user_attrs["seed"]): t for t in trials.values()
    }
    assert states(by_config[0.01, 0]) == ["COMPLETE"]
    assert states(by_config[0.01, 1]) == ["FAIL", "FAIL"]  # tried, retried once, given up
    assert by_config[0.01, 1][1].user_attrs["reason"] == "RuntimeError: out of memory (simulated)"
    for seed in (0, 1):
        (diverged,) = by_config[1000.0, seed]
        assert diverged.state.name == "COMPLETE"
        assert diverged.user_attrs["status"] == "diverged"
        assert diverged.value == -math.inf  # diverged in its first epoch: no best epoch
        assert load_run(diverged.user_attrs["run_dir"]).status == "diverged"
    budget = sweep_budget(study).methods["unit_scal"]
    counts = (budget.planned, budget.completed, budget.diverged, budget.failed)
    assert counts == (4, 1, 2, 1)
    assert (budget.running, budget.waiting, budget.failed_attempts) == (0, 0, 2)
    assert budget.epochs == 2  # the completed run; the diverged ones finished no epoch
    assert "unit_scal" in format_budget(sweep_budget(study))
