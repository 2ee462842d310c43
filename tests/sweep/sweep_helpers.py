"""Helpers of the sweep tests: toy sweep files, worker processes, trials by slot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from smto.train import load_run

TABLES_OF_TABLES = ("method_grids", "method_params")
FAST = {"heartbeat": 1, "grace": 3, "poll": 0.1}


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(value)


def toml_text(data: dict[str, Any]) -> str:
    """A TOML document of ``data``: scalars first, then tables (method_grids/method_params as
    tables of tables)."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if not isinstance(value, dict):
            continue
        tables = value.items() if key in TABLES_OF_TABLES else [(None, value)]
        for sub, table in tables:
            lines.append(f"[{key}.{sub}]" if sub else f"[{key}]")
            lines += [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_sweep(directory: Path, name: str, **fields: Any) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(toml_text(fields))
    return path


def toy_sweep(directory: Path, name: str, **overrides: Any) -> Path:
    """A toy-regression sweep file (seconds per run) under ``directory``, runs in
    ``directory/runs``."""
    fields: dict[str, Any] = {
        "problem": "toy_regression",
        "tasks": "T1_T2",
        "methods": ["unit_scal"],
        "root": str(directory / "runs"),
        "seeds": {"runs": 2, "extra": 0},
        "fixed": {"epochs": 2, "batch_size": 64, "problem_options": {"sizes": [256, 64, 64]}},
        "grid": {"lr": [0.001, 0.01]},
    }
    fields.update(overrides)
    return write_sweep(directory, name, **fields)


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'runs' / 'sweeps.db'}"


def start_worker(url: str, name: str, log: Path, root: Path | None = None) -> subprocess.Popen:
    """``smto sweep work`` on one sweep, in a new process, with short heartbeats (its run
    root ``root``, by default the SQLite storage's directory)."""
    command = [
        sys.executable, "-m", "smto.cli", "sweep", "work", "--storage", url, "--sweep", name,
        "--heartbeat", str(FAST["heartbeat"]), "--grace", str(FAST["grace"]),
        "--poll", str(FAST["poll"]), *(["--root", str(root)] if root else []),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)


def trials_by_slot(storage: Any, name: str) -> dict[str, list[Any]]:
    """Every trial of the sweep ``name``, by slot key, oldest first."""
    study_id = storage.get_study_id_from_name(name)
    slots: dict[str, list[Any]] = {}
    for trial in storage.get_all_trials(study_id):
        slots.setdefault(trial.user_attrs["slot"], []).append(trial)
    return slots


def states(trials: list[Any]) -> list[str]:
    return [t.state.name for t in trials]


def wait_all(processes, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
        assert process.returncode == 0


def assert_exactly_once(storage, study, root: Path) -> None:
    """Every planned slot has one COMPLETE trial (others only PRUNED duplicates or FAILs),
    and one run directory with one finished record of all its epochs."""
    trials = trials_by_slot(storage, study.name)
    assert sorted(trials) == sorted(s.key for s in study.planned())
    for slot in study.planned():
        slot_states = states(trials[slot.key])
        assert slot_states.count("COMPLETE") == 1, slot_states
        assert set(slot_states) <= {"COMPLETE", "PRUNED", "FAIL"}, slot_states
        record = load_run(root / slot.key)
        assert record.status == "completed"
        assert [e["epoch"] for e in record.history] == list(range(slot.config["epochs"]))
    assert len(list(root.glob("toy_regression-*"))) == len(study.planned())


def claim_all(url: str, study_id: int) -> list[int]:
    """Claims trials of ``study_id`` until none is waiting (run in a separate process)."""
    from smto.sweep.storage import open_storage
    from smto.sweep.trials import claim

    storage = open_storage(url)
    numbers = []
    while (trial := claim(storage, study_id)) is not None:
        numbers.append(trial.number)
    return numbers
