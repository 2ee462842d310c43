"""What a user expects of a command line: --version, python -m smto, --json, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import smto
from smto.cli import build_parser, main

SRC = str(Path(__file__).resolve().parents[1] / "src")
TOY = ["--problem", "toy_regression", "--tasks", "T1_T2", "--epochs", "2", "--quiet"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"smto {smto.__version__}"


def test_python_dash_m_smto_is_the_same_command_line():
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run(
        [sys.executable, "-m", "smto", "--version"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == f"smto {smto.__version__}"


def test_train_json_prints_the_record(tmp_path, capsys):
    assert main(["train", *TOY, "--out", str(tmp_path), "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["status"] == "completed" and len(record["history"]) == 2
    assert record["config"]["problem"] == "toy_regression"


def test_compare_json_prints_one_record_per_method(tmp_path, capsys):
    args = ["compare", *TOY, "--methods", "unit_scal", "famo", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["config"]["method"] for r in records] == ["unit_scal", "famo"]


def test_exit_codes_are_documented_in_the_help():
    epilog = build_parser().epilog
    for code in ("0 done", "1 the run did not complete", "2 a usage error", "130 / 143"):
        assert code in epilog


def test_a_diverged_train_run_exits_1(tmp_path, capsys):
    args = ["train", *TOY, "--optimizer", "sgd", "--lr", "1e30", "--out", str(tmp_path)]
    assert main(args) == 1
    assert "run diverged" in capsys.readouterr().out
