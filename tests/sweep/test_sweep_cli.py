"""The sweep commands: run, status, check, and the error without Optuna."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from sweep_helpers import sqlite_url, toy_sweep

from smto.cli import main
from smto.sweep.storage import open_storage

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
FAST = ["--heartbeat", "1", "--grace", "3", "--poll", "0.1"]


def test_run_then_status_report_the_budget_per_method(tmp_path, capsys):
    path = toy_sweep(tmp_path, "cli", methods=["unit_scal", "famo"], seeds={"runs": 2})
    assert main(["sweep", "run", str(path), "--no-progress", *FAST]) == 0
    out = capsys.readouterr().out
    assert "sweep cli (toy_regression, T1_T2): 8 of 8 runs finished; stage 2: none" in out
    assert main(["sweep", "status", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:7] for line in lines[2:5]}
    # planned, completed, diverged, failed, running, waiting
    assert rows == {
        "unit_scal": ["4", "4", "0", "0", "0", "0"],
        "famo": ["4", "4", "0", "0", "0", "0"],
        "total": ["8", "8", "0", "0", "0", "0"],
    }
    url = f"sqlite:///{tmp_path / 'runs' / 'sweeps.db'}"
    assert main(["sweep", "status", "--storage", url]) == 0
    assert "sweep cli " in capsys.readouterr().out
    assert main(["sweep", "status", str(path), "--json"]) == 0
    (budget,) = json.loads(capsys.readouterr().out)
    assert budget["name"] == "cli" and budget["started"] is True
    assert {m: b["completed"] for m, b in budget["methods"].items()} == {"unit_scal": 4, "famo": 4}
    assert budget["total"]["planned"] == 8 and budget["failures"] == {}


def test_status_of_a_sweep_not_started(tmp_path, capsys):
    path = toy_sweep(tmp_path, "later")
    open_storage(sqlite_url(tmp_path))  # a storage holding other sweeps, or none yet
    assert main(["sweep", "status", str(path)]) == 0
    assert "sweep later: not started in this storage" in capsys.readouterr().out


def test_status_never_creates_a_storage(tmp_path, capsys):
    path = toy_sweep(tmp_path, "typo")
    missing = tmp_path / "runs" / "sweeps.db"
    assert main(["sweep", "status", str(path)]) == 2
    assert f"smto: error: no sweep storage at {missing}" in capsys.readouterr().err
    typo = tmp_path / "elsewhere" / "sweep.db"
    assert main(["sweep", "status", "--storage", f"sqlite:///{typo}"]) == 2
    assert f"no sweep storage at {typo}" in capsys.readouterr().err
    assert not missing.exists() and not typo.parent.exists()


def test_check_validates_every_file_and_fails_on_any_error(tmp_path, capsys):
    good = toy_sweep(tmp_path, "good", method_grids={}, methods=["unit_scal"])
    bad = toy_sweep(
        tmp_path, "bad", methods=["unit_scal", "famo"], method_grids={"famo": {"lr": [1.0]}}
    )
    assert main(["sweep", "check", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert "sweep good: 2 configurations x 2 seeds = 4 runs" in captured.out
    assert "method_grids.famo.lr: unknown hyperparameter of famo; valid: logit_lr" in captured.err
    assert main(["sweep", "check", str(SWEEPS / "multi_mnist-small.toml")]) == 0


def test_without_optuna_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    path = toy_sweep(tmp_path, "no-optuna")
    assert main(["sweep", "run", str(path), "--no-progress"]) == 2
    assert "pip install 'smto[sweep]'" in capsys.readouterr().err


def test_work_on_an_empty_storage_returns_at_once(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["sweep", "work", "--storage", url]) == 0
    assert "ran 0 trial(s)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "work", "status", "check"])
def test_help(command, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", command, "--help"])
    assert "usage: smto sweep" in capsys.readouterr().out
