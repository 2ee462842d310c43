"""TPE sweeps on the toy problem: exactly the budgeted trials, also when re-run, raced or
with a dead worker; reproducible suggestions; the median pruner stops runs of a planted bad
region for good; stage 2 continues the configuration a hand computation picks."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from sweep_helpers import FAST, sqlite_url, start_worker, toy_sweep, wait_all

from smto.cli import main
from smto.evaluation.reference import Reference
from smto.sweep import load_sweep
from smto.sweep.budget import sweep_budget
from smto.sweep.driver import Worker, WorkerSettings, run_sweep
from smto.sweep.search import tally
from smto.sweep.study import SweepStudy
from smto.train import load_run

SETTINGS = WorkerSettings(**FAST)
CLI = ["--no-progress", "--heartbeat", "1", "--grace", "3", "--poll", "0.1"]
FIXED = {"epochs": 3, "batch_size": 64, "problem_options": {"sizes": [256, 64, 64]}}
TINY = {"epochs": 1, "batch_size": 64, "problem_options": {"sizes": [128, 32, 32]}}


def tpe_sweep(directory: Path, name: str, tpe: dict, **overrides) -> Path:
    fields = {
        "sampler": "tpe",
        "tpe": tpe,
        "seeds": {"runs": 1, "extra": 0},
        "fixed": FIXED,
        "grid": {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, "dropout": [0.0, 0.1]},
    }
    return toy_sweep(directory, name, **{**fields, **overrides})


def search_trials(study: SweepStudy) -> dict[str, list]:
    return {s.method: s.trials() for s in study.searches}


def test_a_tpe_sweep_runs_its_budget_and_a_rerun_adds_nothing(tmp_path, capsys):
    path = tpe_sweep(
        tmp_path, "budget", {"trials": 4, "startup_trials": 2}, methods=["unit_scal", "famo"]
    )
    assert main(["sweep", "run", str(path), *CLI]) == 0
    assert "8 of 8 runs finished" in capsys.readouterr().out
    study = SweepStudy(SETTINGS.open(sqlite_url(tmp_path)), "budget")
    first = search_trials(study)
    for trials in first.values():
        assert [t.state.name for t in trials] == ["COMPLETE"] * 4  # no pruning yet: 5 first
        assert all(load_run(t.user_attrs["run_dir"]).status == "completed" for t in trials)
    runs = sorted(p.name for p in (tmp_path / "runs").glob("toy_regression-*"))
    assert len(runs) == len({t.user_attrs["slot"] for ts in first.values() for t in ts})

    assert main(["sweep", "run", str(path), *CLI]) == 0  # a re-run: nothing more
    again = search_trials(study)
    assert {m: len(t) for m, t in again.items()} == {"unit_scal": 4, "famo": 4}
    assert sorted(p.name for p in (tmp_path / "runs").glob("toy_regression-*")) == runs
    capsys.readouterr()
    assert main(["sweep", "status", str(path)]) == 0
    lines = capsys.readouterr().out.split("\n")[2:5]
    rows = {line.split()[0]: line.split()[1:9] for line in lines}
    # planned, completed, diverged, pruned, failed, running, waiting, retried
    assert rows["famo"] == ["4", "4", "0", "0", "0", "0", "0", "0"]
    assert rows["total"] == ["8", "8", "0", "0", "0", "0", "0", "0"]


def test_the_same_sampler_seed_suggests_the_same_configurations(tmp_path):
    def suggested(name: str, seed: int) -> list[dict]:
        directory = tmp_path / name
        directory.mkdir()
        tpe = {"trials": 4, "seed": seed, "startup_trials": 2, "pruner": "none"}
        study = run_sweep(tpe_sweep(directory, name, tpe, fixed=TINY), None, None, SETTINGS, False)
        (trials,) = search_trials(study).values()
        return [t.params for t in trials]

    first = suggested("a", seed=5)
    assert len({p["lr"] for p in first}) == 4  # a continuous range: 4 different suggestions
    assert suggested("b", seed=5) == first  # two at random, two by TPE: all the same
    assert suggested("c", seed=6)[0] != first[0]


def test_the_median_pruner_stops_runs_of_a_bad_region_for_good(tmp_path):
    tpe = {"trials": 8, "seed": 0, "startup_trials": 8, "pruner_startup_trials": 2}
    grid = {"lr": [0.03, 0.01, 1e-7], "dropout": [0.0, 0.1, 0.2]}  # lr 1e-7 does not learn
    study = run_sweep(tpe_sweep(tmp_path, "prune", tpe, grid=grid), None, None, SETTINGS, False)
    (trials,) = search_trials(study).values()
    counts = tally(trials)
    assert counts.results == 8 and counts.failed == 0  # pruned trials count in the budget
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert any(t.params["lr"] == 1e-7 for t in pruned)
    records = {t.user_attrs["slot"]: load_run(tmp_path / "runs" / t.user_attrs["slot"])
               for t in trials}  # fmt: skip
    for trial in trials:
        record = records[trial.user_attrs["slot"]]
        scores = [e["score"] for e in record.history]
        assert trial.intermediate_values == dict(enumerate(scores))  # each epoch reported
        if trial.state.name == "PRUNED":
            assert record.status == "pruned" and len(record.history) < FIXED["epochs"]
            assert trial.user_attrs["status"] == "pruned"
        else:
            assert record.status == "completed" and len(record.history) == FIXED["epochs"]
    budget = sweep_budget(study).methods["unit_scal"]
    assert (budget.planned, budget.completed + budget.pruned, budget.waiting) == (8, 8, 0)
    assert budget.pruned == len(pruned)
    assert budget.epochs == sum(len(r.history) for r in records.values())  # each run once


@pytest.mark.slow
def test_stage_2_after_tpe_continues_the_configuration_of_the_best_delta_m(tmp_path):
    reference = {"T1": {"mse": 0.35}, "T2": {"mse": 30.0}}
    Reference("toy_regression", reference, reference).save(tmp_path / "reference.json")
    tpe = {"trials": 6, "startup_trials": 3, "pruner_startup_trials": 2}
    path = tpe_sweep(
        tmp_path,
        "stages",
        tpe,
        methods=["unit_scal", "cagrad"],
        reference="reference.json",
        seeds={"extra": 2},
        grid={"lr": {"low": 1e-6, "high": 3e-2, "log": True}},
        method_grids={"cagrad": {"alpha": {"low": 0.1, "high": 0.9}}},
    )
    study = run_sweep(path, settings=SETTINGS, progress=False)
    root = tmp_path / "runs"

    def delta_m(run) -> float:  # equation 1 by hand: MSE is lower-is-better
        gains = [-(run.best_val[t]["mse"] - reference[t]["mse"]) / reference[t]["mse"]
                 for t in ("T1", "T2")]  # fmt: skip
        return 100 * sum(gains) / 2

    stage2 = [load_run(root / s.key) for s in study.planned() if s.stage == 2]
    for method, trials in search_trials(study).items():
        assert tally(trials).results == 6
        runs = {t.user_attrs["slot"]: load_run(root / t.user_attrs["slot"]) for t in trials}
        assert all(run.config["reference"] == reference for run in runs.values())
        best = max(runs.values(), key=delta_m)
        chosen = [r for r in stage2 if r.config["method"] == method]
        assert sorted(r.config["seed"] for r in chosen) == [1, 2]
        for run in chosen:
            assert {**run.config, "seed": 0} == best.config


def test_racing_workers_never_run_more_than_the_budget(tmp_path, monkeypatch):
    sweep = load_sweep(tpe_sweep(tmp_path, "race", {"trials": 1}))
    storage = SETTINGS.open(sqlite_url(tmp_path))
    study = SweepStudy.create(storage, sweep, None)
    (search,) = study.searches
    held = search.ask()  # another worker holds the one trial of the budget
    assert held is not None
    import smto.sweep.search as module

    # A worker that looked at the budget before that trial existed asks all the same:
    monkeypatch.setattr(module, "tally", lambda trials: module.Tally())
    assert search.ask() is None  # numbered after the held trial: over budget, retired
    monkeypatch.undo()
    late = search.trials()[1]
    assert late.state.name == "FAIL" and "over budget" in late.user_attrs["retired"]
    assert (tally(search.trials()).running, tally(search.trials()).failed) == (1, 0)
    assert (
        search.run(held, Path(sweep.root), 1, 0.1, Worker(storage, SETTINGS).problems)
        == "completed"
    )
    assert search.settled() and study.finished(study.advance(SETTINGS.grace_period))


def test_a_repeated_configuration_takes_the_earlier_outcome_without_training(tmp_path):
    sweep = load_sweep(tpe_sweep(tmp_path, "repeat", {"trials": 2}))
    storage = SETTINGS.open(sqlite_url(tmp_path))
    (search,) = SweepStudy.create(storage, sweep, None).searches
    problems = Worker(storage, SETTINGS).problems
    first = search.ask()
    assert search.run(first, Path(sweep.root), 1, 0.1, problems) == "completed"
    optuna.load_study(study_name=search.name, storage=storage).enqueue_trial(first.params)
    repeat = search.ask()  # the suggestion again (forced: TPE may or may not repeat one)
    assert repeat.params == first.params
    assert search.run(repeat, Path(sweep.root), 1, 0.1, problems) == "completed"
    one, two = search.trials()
    assert two.user_attrs["copy_of"] == one.number and "progress" not in two.user_attrs
    assert (two.value, two.intermediate_values) == (one.value, one.intermediate_values)
    assert len(list((tmp_path / "runs").glob("toy_regression-*"))) == 1
    assert tally(search.trials()).results == 2 and search.settled()


def test_a_dead_workers_trial_is_failed_and_does_not_count(tmp_path):
    sweep = load_sweep(tpe_sweep(tmp_path, "dead", {"trials": 2}, fixed=TINY))
    storage = SETTINGS.open(sqlite_url(tmp_path))
    study = SweepStudy.create(storage, sweep, None)
    (search,) = study.searches
    orphan = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING)
    orphan.datetime_start = datetime.now() - timedelta(hours=1)  # claimed, worker gone
    storage.create_new_trial(search.study_id, template_trial=orphan)
    trial = search.ask()
    assert trial is not None and search.ask() is None  # the orphan holds a place
    assert (
        search.run(trial, Path(sweep.root), 1, 0.1, Worker(storage, SETTINGS).problems)
        == "completed"
    )
    study = run_sweep(
        tmp_path / "dead.toml", storage_url=sqlite_url(tmp_path), settings=SETTINGS, progress=False
    )
    counts = search.tally()
    assert (counts.results, counts.failed) == (2, 1)  # the orphan failed, and was replaced
    assert sweep_budget(study).methods["unit_scal"].failed_attempts == 1


@pytest.mark.slow
def test_two_worker_processes_share_the_budget(tmp_path):
    fixed = {"epochs": 3, "batch_size": 32, "problem_options": {"sizes": [512, 64, 64]}}
    path = tpe_sweep(tmp_path, "pair", {"trials": 6, "startup_trials": 2},
                     methods=["unit_scal", "cagrad"], fixed=fixed)  # fmt: skip
    storage = SETTINGS.open(sqlite_url(tmp_path))
    study = SweepStudy.create(storage, load_sweep(path), None)
    workers = [start_worker(sqlite_url(tmp_path), "pair", tmp_path / f"w{i}.log") for i in (0, 1)]
    wait_all(workers)
    ran = set()
    for trials in search_trials(study).values():
        counts = tally(trials)
        assert (counts.results, counts.failed, counts.running) == (6, 0, 0)
        ran |= {t.user_attrs["worker"] for t in trials if "retired" not in t.user_attrs}
    assert len(ran) == 2  # both took part
    assert study.finished(study.advance(SETTINGS.grace_period))
