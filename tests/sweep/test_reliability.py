"""What a sweep refuses or reports instead of doing harm: a run root taken from the storage,
a device the machine lacks, a stage 1 that failed entirely, a name that leaves the run root,
and storages that are mistyped, corrupt or missing (one line and exit status 2)."""

from __future__ import annotations

import json

import pytest
import torch
from sweep_helpers import FAST, sqlite_url, states, toy_sweep, trials_by_slot

from smto.cli import main
from smto.errors import ConfigError, DataError, MissingError
from smto.sweep import SweepError, load_sweep
from smto.sweep.driver import WorkerSettings, work, worker_root
from smto.sweep.storage import open_storage
from smto.sweep.study import STAGE2_ATTR, SWEEP_ATTR, SweepStudy

SETTINGS = WorkerSettings(**FAST)
CLI = ["--no-progress", "--heartbeat", "1", "--grace", "3", "--poll", "0.1"]
ONE_RUN = {"grid": {"lr": [0.01]}, "seeds": {"runs": 1, "extra": 0}}


def planned(path):
    sweep = load_sweep(path)
    storage = SETTINGS.open(f"sqlite:///{sweep.root}/sweeps.db")
    study = SweepStudy.create(storage, sweep, None)
    study.advance(SETTINGS.grace_period)
    return storage, study


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("smto: error: ") and err.count("\n") == 1, err
    return err


# -- the run root is the worker's own ---------------------------------------------------------


def test_a_worker_runs_a_trial_under_its_own_root_whatever_the_storage_says(tmp_path):
    storage, study = planned(toy_sweep(tmp_path, "own", **ONE_RUN))
    crafted = tmp_path / "crafted"
    for trial in storage.get_all_trials(study.study_id):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study.study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "root", str(crafted))
    stored = storage.get_study_user_attrs(study.study_id)[SWEEP_ATTR]
    storage.set_study_user_attr(study.study_id, SWEEP_ATTR, {**stored, "root": str(crafted)})
    notes: list[str] = []
    assert work(sqlite_url(tmp_path), ["own"], SETTINGS, echo=notes.append) == 1
    (trials,) = trials_by_slot(storage, "own").values()
    assert states(trials) == ["COMPLETE"]
    assert trials[0].user_attrs["run_dir"] == str(tmp_path / "runs" / study.stage1[0].key)
    assert (tmp_path / "runs" / study.stage1[0].key / "record.json").exists()
    assert not crafted.exists()
    assert f"own: planned with run root {crafted}; this worker's is {tmp_path / 'runs'}" in notes


def test_planned_trials_do_not_carry_a_root(tmp_path):
    storage, study = planned(toy_sweep(tmp_path, "plain", **ONE_RUN))
    (trial,) = storage.get_all_trials(study.study_id)
    assert "root" not in trial.user_attrs


def test_a_worker_root_is_given_or_the_sqlite_storages_directory(tmp_path):
    assert worker_root(f"sqlite:///{tmp_path}/runs/sweeps.db", None) == tmp_path / "runs"
    assert worker_root("postgresql://u@host/db", tmp_path / "shared") == tmp_path / "shared"
    with pytest.raises(ConfigError, match="needs --root"):
        worker_root("postgresql://u@host/db", None)


# -- devices ---------------------------------------------------------------------------------


def test_an_unknown_device_fails_check_naming_its_field(tmp_path, capsys):
    fixed = {"epochs": 1, "device": "foo"}
    path = toy_sweep(tmp_path, "foo", fixed=fixed, grid={"lr": [0.01], "dropout": [0.0]})
    with pytest.raises(SweepError, match=r"fixed\.device = 'foo': unknown device 'foo'"):
        load_sweep(path)
    swept = toy_sweep(tmp_path, "swept", grid={"device": ["cpu", "foo"]})
    assert main(["sweep", "check", str(path), str(swept)]) == 2
    err = capsys.readouterr().err
    assert "fixed.device = 'foo': unknown device 'foo'" in err
    assert "grid.device[1] = 'foo': unknown device 'foo'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_worker_without_the_sweeps_device_stops_before_any_trial(tmp_path, capsys):
    fixed = {"epochs": 1, "batch_size": 64, "device": "cuda"}
    path = toy_sweep(tmp_path, "gpu", fixed=fixed)
    assert main(["sweep", "run", str(path), *CLI]) == 2
    err = one_line_error(capsys)
    assert "sweep 'gpu': device 'cuda': CUDA is not available on this machine" in err
    storage = open_storage(sqlite_url(tmp_path))
    assert all(states(t) == ["WAITING"] for t in trials_by_slot(storage, "gpu").values())
    assert not list((tmp_path / "runs").glob("toy_regression-*"))
    with pytest.raises(ConfigError, match="CUDA is not available"):
        work(sqlite_url(tmp_path), ["gpu"], SETTINGS, echo=lambda line: None)
    assert all(states(t) == ["WAITING"] for t in trials_by_slot(storage, "gpu").values())


# -- failures --------------------------------------------------------------------------------


def failing(monkeypatch, method: str | None = None) -> None:
    """Every run (of ``method``, if given) raises."""
    import smto.sweep.execute as execute

    real_train = execute.train

    def train(config, root, **kwargs):
        if method is None or config.method == method:
            raise RuntimeError("boom (simulated)")
        return real_train(config, root, **kwargs)

    monkeypatch.setattr(execute, "train", train)


def test_a_stage_1_whose_runs_all_failed_is_an_error(tmp_path, capsys, monkeypatch):
    failing(monkeypatch)
    path = toy_sweep(tmp_path, "doomed", tasks="T1", retries=0, seeds={"runs": 1, "extra": 2})
    assert main(["sweep", "run", str(path), *CLI]) == 2
    assert "sweep 'doomed': every stage-1 run failed" in one_line_error(capsys)
    storage = open_storage(sqlite_url(tmp_path))
    study_id = storage.get_study_id_from_name("doomed")
    assert STAGE2_ATTR not in storage.get_study_user_attrs(study_id)
    assert main(["sweep", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sweep doomed: 2 run(s) failed for good:" in out
    assert out.count("RuntimeError: boom (simulated)") == 2


def test_run_exits_1_naming_the_failed_runs_and_stage_2_skips_their_method(
    tmp_path, capsys, monkeypatch
):
    failing(monkeypatch, "famo")
    path = toy_sweep(
        tmp_path,
        "partly",
        tasks="T1",
        retries=0,
        methods=["unit_scal", "famo"],
        grid={"lr": [0.01]},
        seeds={"runs": 1, "extra": 1},
    )
    assert main(["sweep", "run", str(path), *CLI]) == 1
    captured = capsys.readouterr()
    assert "3 of 3 runs finished" in captured.out  # famo's stage 2 is not chosen
    study = SweepStudy(open_storage(sqlite_url(tmp_path)), "partly", tmp_path / "runs")
    (famo,) = [s for s in study.stage1 if s.method == "famo"]
    assert [s.method for s in study.stage2() or []] == ["unit_scal"]
    assert f"sweep partly: 1 run(s) failed for good:\n  {famo.key}: RuntimeError: boom" in (
        captured.err
    )
    assert "smto: 1 run(s) failed for good (reasons above; `smto sweep status" in captured.err


# -- names -----------------------------------------------------------------------------------


def named(path, name: str):
    """The sweep file at ``path`` with the name ``name``."""
    path.write_text(f"name = {json.dumps(name)}\n" + path.read_text())
    return path


@pytest.mark.parametrize("name", ["../escaped", "a/b", "/tmp/abs", "..", "a\\b"])
def test_a_name_that_would_leave_the_run_root_is_rejected(tmp_path, capsys, name):
    path = named(toy_sweep(tmp_path, "named"), name)
    with pytest.raises(SweepError, match=r"name: .* must be a plain name"):
        load_sweep(path)
    assert main(["sweep", "check", str(path)]) == 2
    assert f"name: {name!r} must be a plain name" in capsys.readouterr().err


def test_an_empty_name_is_rejected(tmp_path):
    with pytest.raises(SweepError, match="name: must be a non-empty string"):
        load_sweep(named(toy_sweep(tmp_path, "empty"), ""))


# -- storages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://bar", "storage 'foo://bar' cannot be used: Can't load plugin"),
        ("not a url", "storage 'not a url' is not a database URL"),
    ],
)
def test_a_storage_url_sqlalchemy_cannot_use_is_one_line(url, message, capsys):
    with pytest.raises(ConfigError, match=message):
        open_storage(url)
    assert main(["sweep", "status", "--storage", url]) == 2
    assert message in one_line_error(capsys)
    assert main(["sweep", "work", "--storage", url, "--root", "unused"]) == 2
    assert message in one_line_error(capsys)


def test_a_garbage_or_truncated_storage_file_is_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is no database " * 64)
    with pytest.raises(DataError, match=f"{garbage} is not a readable sweep storage"):
        open_storage(f"sqlite:///{garbage}")
    path = toy_sweep(tmp_path, "cut", seeds={"runs": 4, "extra": 0})
    planned(path)
    store = tmp_path / "runs" / "sweeps.db"
    store.write_bytes(store.read_bytes()[: store.stat().st_size // 2])
    for command in (["run", str(path), *CLI], ["status", str(path)]):
        assert main(["sweep", *command]) == 2
        err = one_line_error(capsys)
        assert f"{store} is not a readable sweep storage (database disk image is malformed)" in err
        assert "move it away" in err


def test_a_read_only_look_at_a_missing_storage_creates_nothing(tmp_path):
    missing = tmp_path / "typo" / "sweeps.db"
    with pytest.raises(MissingError, match=f"no sweep storage at {missing}"):
        open_storage(f"sqlite:///{missing}", create=False)
    assert not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(DataError, match="no such table"):
        open_storage(f"sqlite:///{empty}", create=False)
    assert empty.stat().st_size == 0


def test_a_trial_whose_run_another_process_holds_waits_for_it_and_completes(tmp_path):
    """Two trials of one configuration (a TPE search can suggest a point twice) share one
    run directory: the second waits for the lock instead of failing."""
    import threading
    import time

    from smto.train.lock import RunLock

    storage, study = planned(toy_sweep(tmp_path, "held", **ONE_RUN))
    directory = tmp_path / "runs" / study.stage1[0].key
    directory.mkdir(parents=True)
    holding = RunLock(directory).__enter__()
    released = threading.Event()

    def release_later() -> None:
        time.sleep(1.5)
        holding.__exit__(None, None, None)
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    assert work(sqlite_url(tmp_path), ["held"], SETTINGS) == 1
    assert released.is_set()  # the worker could only train after the lock was released
    (trials,) = trials_by_slot(storage, "held").values()
    assert states(trials) == ["COMPLETE"]
