"""A sweep worker with --vectorize: it claims waiting trials of one method that differ only in
seed, lr, dropout or weight decay and trains them as one model, each slot exactly once, with
the numbers of separate runs."""

from __future__ import annotations

import pytest
from sweep_helpers import FAST, assert_exactly_once, sqlite_url, toy_sweep, trials_by_slot

from smto.sweep import load_sweep
from smto.sweep.driver import WorkerSettings, work
from smto.sweep.study import SweepStudy
from smto.train import RunConfig, train


def test_a_vectorizing_worker_groups_one_methods_trials(tmp_path):
    path = toy_sweep(
        tmp_path,
        "grouped",
        methods=["unit_scal", "mgda"],
        grid={"lr": [0.001, 0.01]},
        seeds={"runs": 3, "extra": 0},
        fixed={"epochs": 2, "batch_size": 32, "problem_options": {"sizes": [128, 32, 32]}},
    )
    sweep = load_sweep(path)
    settings = WorkerSettings(**FAST, vectorize=4)
    storage = settings.open(sqlite_url(tmp_path))
    study = SweepStudy.create(storage, sweep, None)
    study.advance(settings.grace_period)
    lines: list[str] = []
    work(sqlite_url(tmp_path), ["grouped"], settings, idle_timeout=5, echo=lines.append)
    assert_exactly_once(storage, study, tmp_path / "runs")
    trials = [t for ts in trials_by_slot(storage, "grouped").values() for t in ts]
    groups: dict[int, list] = {}
    for trial in trials:
        groups.setdefault(trial.user_attrs["vectorized_group"], []).append(trial)
    for members in groups.values():  # one method each, at most 4, the size it says
        methods = {RunConfig.from_dict(t.user_attrs["config"]).method for t in members}
        assert len(methods) == 1
        assert {t.user_attrs["vectorized_with"] for t in members} == {len(members)}
    assert sorted(len(m) for m in groups.values()) == [2, 2, 4, 4]  # 6 slots per method
    assert any("(4 vectorized)" in line for line in lines)
    slot = study.planned()[-1]
    config = RunConfig.from_dict(slot.config)
    separate = train(config, tmp_path / "separate")
    grouped = next(t for t in trials if t.user_attrs["slot"] == slot.key)
    assert grouped.value == pytest.approx(separate.best_score, rel=1e-5)


def test_the_automatic_group_size_follows_the_memory(tmp_path, monkeypatch):
    from smto.sweep import vectorized
    from smto.sweep.execute import ProblemCache

    config = RunConfig(problem="toy_regression", tasks="T1_T2", batch_size=32)
    problems = ProblemCache(None)
    sizes = []
    for available in (0, 10**6, 10**7, 10**15):
        monkeypatch.setattr(vectorized, "_available_memory", lambda device, a=available: a)
        sizes.append(vectorized.auto_group_size(config, problems))
    assert sizes[0] == 1 and sizes[-1] == vectorized.AUTO_MAX_RUNS
    assert sizes == sorted(sizes) and 1 < sizes[1] < vectorized.AUTO_MAX_RUNS


def test_local_workers_are_started_with_the_group_size(tmp_path):
    from smto.sweep.cli import _group_size
    from smto.sweep.pool import worker_command

    def flag(settings):
        command = worker_command("sqlite:///x.db", tmp_path, ["a"], settings, 1)
        return command[command.index("--vectorize") + 1] if "--vectorize" in command else None

    assert flag(WorkerSettings()) is None
    assert flag(WorkerSettings(vectorize=3)) == "3"
    assert flag(WorkerSettings(vectorize=0)) == "auto"
    assert [_group_size(v) for v in ("auto", "1", "8")] == [0, 1, 8]
    with pytest.raises(Exception, match="number of runs"):
        _group_size("0")
