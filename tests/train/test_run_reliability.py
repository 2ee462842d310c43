"""Run directories that cannot run code, get stuck, be doubled or be trusted blindly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import smto.train.records as records_module
from smto.errors import ConfigError, RunStateError
from smto.problems.toy import ToyRegression
from smto.train import RunConfig, load_run, run_dir, train
from smto.train.checkpoint import FORMAT

TOY = {"problem": "toy_regression", "tasks": "T1_T2", "batch_size": 64, "lr": 3e-3}
SRC = str(Path(__file__).resolve().parents[2] / "src")


def history_without_times(record):
    times = ("seconds", "train_seconds")
    return [{k: v for k, v in entry.items() if k not in times} for entry in record.history]


class _Stop(Exception):
    pass


def _stop_after(epochs: int):
    def callback(record):
        if len(record.history) == epochs:
            raise _Stop

    return callback


def _cut_run(config: RunConfig, root: Path, epochs: int) -> Path:
    """A run of ``config`` under ``root`` stopped (resumably) after ``epochs`` epochs."""
    with pytest.raises(_Stop):
        train(config, root, on_epoch_end=_stop_after(epochs))
    return run_dir(config, root)


class _WritesAFile:
    """A pickle that, when unpickled with weights_only=False, writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


# -- loading code -------------------------------------------------------------------------


def test_a_checkpoint_that_would_run_code_is_rejected_and_runs_nothing(tmp_path):
    config = RunConfig(**TOY, method="unit_scal", epochs=3)
    directory = _cut_run(config, tmp_path, 1)
    marker = tmp_path / "written-by-the-checkpoint"
    torch.save({"epochs_done": 1, "record": _WritesAFile(marker)}, directory / "checkpoint.pt")
    with pytest.raises(RunStateError, match="could run code"):
        train(config, tmp_path)
    assert not marker.exists()


def test_a_payload_that_would_run_code_is_rejected_even_with_a_valid_digest(tmp_path):
    import hashlib
    import io

    config = RunConfig(**TOY, method="unit_scal", epochs=3)
    directory = _cut_run(config, tmp_path, 1)
    marker = tmp_path / "written-by-the-payload"
    buffer = io.BytesIO()
    torch.save({"model": _WritesAFile(marker)}, buffer)
    payload = buffer.getvalue()
    envelope = {
        "format": FORMAT,
        "run_id": config.run_id(),
        "config": config.to_dict(),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    torch.save(envelope, directory / "checkpoint.pt")
    with pytest.raises(RunStateError, match="could run code"):
        train(config, tmp_path)
    assert not marker.exists()


def test_every_checkpoint_loads_with_weights_only(tmp_path):
    config = RunConfig(**TOY, method="famo", epochs=2, optimizer="signsgd", scheduler="plateau")
    directory = _cut_run(config, tmp_path, 1)
    envelope = torch.load(directory / "checkpoint.pt", weights_only=True)
    assert envelope["format"] == FORMAT and envelope["run_id"] == config.run_id()


# -- stuck runs ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["deleted", "says running"])
def test_a_run_whose_checkpoint_holds_every_epoch_finishes_as_completed(tmp_path, damage):
    config = RunConfig(**TOY, method="cagrad", epochs=3)
    full = train(config, tmp_path / "full")
    cut = train(config, tmp_path / "cut")
    directory = run_dir(config, tmp_path / "cut")
    path = directory / "record.json"
    if damage == "deleted":
        path.unlink()
    else:
        edited = json.loads(path.read_text())
        edited["status"] = "running"
        path.write_text(json.dumps(edited))
    record = train(config, tmp_path / "cut")
    assert record.status == "completed"
    assert history_without_times(record) == history_without_times(full)
    assert record.history == cut.history  # the checkpoint's record, times too: not retrained
    assert load_run(directory).to_dict() == record.to_dict()


def test_a_corrupt_record_is_rebuilt_from_the_checkpoint_when_asked(tmp_path):
    config = RunConfig(**TOY, method="unit_scal", epochs=3)
    full = train(config, tmp_path / "full")
    directory = _cut_run(config, tmp_path / "cut", 2)
    (directory / "record.json").write_bytes(b"\x00\xffnot json")
    with pytest.raises(RunStateError, match="--rebuild-record"):
        train(config, tmp_path / "cut")
    record = train(config, tmp_path / "cut", rebuild_record=True)
    assert record.status == "completed"
    assert history_without_times(record) == history_without_times(full)
    assert (directory / "record.json.corrupt").read_bytes() == b"\x00\xffnot json"


def test_a_corrupt_record_without_a_checkpoint_says_so(tmp_path):
    config = RunConfig(**TOY, method="unit_scal", epochs=1)
    directory = run_dir(config, tmp_path)
    directory.mkdir(parents=True)
    (directory / "record.json").write_text("{")
    with pytest.raises(RunStateError, match="no checkpoint to rebuild it from"):
        train(config, tmp_path)


# -- state checked before it is trusted ----------------------------------------------------


def test_a_checkpoint_with_a_flipped_bit_is_a_clear_error_and_nothing_is_overwritten(tmp_path):
    config = RunConfig(**TOY, method="unit_scal", epochs=3)
    directory = _cut_run(config, tmp_path, 1)
    path = directory / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    record_before = (directory / "record.json").read_bytes()
    with pytest.raises(RunStateError, match=r"corrupt|unreadable"):
        train(config, tmp_path)
    assert path.read_bytes() == bytes(data)
    assert (directory / "record.json").read_bytes() == record_before


def test_a_checkpoint_of_another_run_is_refused_naming_both(tmp_path):
    mine = RunConfig(**{**TOY, "lr": 0.0025}, method="unit_scal", epochs=3)
    other = RunConfig(**{**TOY, "lr": 0.001}, method="unit_scal", epochs=3)
    directory = _cut_run(mine, tmp_path, 1)
    other_dir = _cut_run(other, tmp_path, 1)
    shutil.copy(other_dir / "checkpoint.pt", directory / "checkpoint.pt")
    record_before = (directory / "record.json").read_bytes()
    with pytest.raises(RunStateError) as error:
        train(mine, tmp_path)
    assert other.run_id() in str(error.value) and mine.run_id() in str(error.value)
    assert (directory / "record.json").read_bytes() == record_before


def test_a_checkpoint_of_the_first_format_still_resumes(tmp_path):
    """smto 0.1's checkpoints held the state itself: they load safely and resume."""
    config = RunConfig(**TOY, method="famo", epochs=3)
    full = train(config, tmp_path / "full")
    directory = _cut_run(config, tmp_path / "cut", 1)
    path = directory / "checkpoint.pt"
    envelope = torch.load(path, weights_only=True)
    import io

    state = torch.load(io.BytesIO(envelope["payload"].numpy().tobytes()), weights_only=True)
    torch.save(state, path)
    resumed = train(config, tmp_path / "cut")
    assert history_without_times(resumed) == history_without_times(full)


# -- one process per run directory ----------------------------------------------------------

_TRAINER = """
import sys, time
from pathlib import Path
from smto.train import RunConfig, train
config = RunConfig.from_dict(__import__("json").loads(sys.argv[1]))
started = Path(sys.argv[3])
def slow(record):
    started.write_text("epoch")
    time.sleep(0.4)
train(config, sys.argv[2], on_epoch_end=slow)
"""


def test_a_second_process_on_a_run_directory_is_told_who_holds_it(tmp_path):
    config = RunConfig(**TOY, method="unit_scal", epochs=6)
    started = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen(
        [sys.executable, "-c", _TRAINER, json.dumps(config.to_dict()), str(tmp_path), started],
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert holder.poll() is None, "the training process ended early"
            assert time.monotonic() < deadline, "the training process never started"
            time.sleep(0.05)
        with pytest.raises(RunStateError, match=f"in use by process {holder.pid} "):
            train(config, tmp_path)
        waited = train(config, tmp_path, wait=True)  # returns once the holder is done
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
    assert waited.status == "completed" and len(waited.history) == 6
    assert load_run(run_dir(config, tmp_path)).to_dict() == waited.to_dict()


# -- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code", "says"),
    [(signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGINT, 130, "interrupted")],
)
def test_sigterm_and_sigint_record_interrupted_and_print_one_line(tmp_path, signum, code, says):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "smto.cli", "train", "--problem", "toy_regression"]
    command += ["--tasks", "T1_T2", "--epochs", "100000", "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("*/record.json")):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == code
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert says in stderr
    (record,) = [load_run(p.parent) for p in out.glob("*/record.json")]
    assert record.status == "interrupted"


# -- input validated before any work ------------------------------------------------------------


def _cli(*args: str) -> int:
    from smto.cli import main

    return main(["train", "--problem", "toy_regression", "--tasks", "T1_T2", "--quiet", *args])


@pytest.mark.parametrize("device", ["foo", "cuda:7", "xla"])
def test_a_bad_device_is_one_line_and_leaves_no_run_directory(tmp_path, capsys, device):
    out = tmp_path / "runs"
    assert _cli("--device", device, "--out", str(out)) == 2
    assert f"device {device!r}" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"T1": {"mse": "low"}, "T2": {"mse": 1.0}}, "T1/mse must be a finite number"),
        ({"T1": {"mse": 1.0}, "T9": {"mse": 1.0}}, r"unknown task\(s\) \['T9'\]"),
        ({"T1": {"mse": 1.0}}, "no metrics for task 'T2'"),
        ({"T1": {"mse": 1.0, "mae": 2.0}, "T2": {"mse": 1.0}}, r"unknown \['mae'\]"),
    ],
)
def test_a_bad_reference_is_refused_before_training(tmp_path, capsys, content, message):
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(content))
    out = tmp_path / "runs"
    assert _cli("--reference", str(path), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match=message):
        RunConfig(**TOY, reference=content)
    assert not out.exists()


def test_a_reference_directory_an_out_file_and_a_bad_param_are_one_line(tmp_path, capsys):
    assert _cli("--reference", str(tmp_path), "--out", str(tmp_path / "runs")) == 2
    assert "is a directory" in capsys.readouterr().err
    file = tmp_path / "a-file"
    file.write_text("")
    assert _cli("--out", str(file)) == 2
    assert "is a file" in capsys.readouterr().err
    bad = "weights=(-1,float('nan'))"
    code = _cli("--method", "fixed", "--param", bad, "--out", str(tmp_path / "runs"))
    assert code == 2
    err = capsys.readouterr().err
    assert "not a literal value" in err and "weights=(0.3,0.7)" in err


def test_an_internal_error_keeps_its_traceback(monkeypatch):
    import smto.cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(smto.cli, "_cmd_methods", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        smto.cli.main(["methods"])


# -- finite but absurd ----------------------------------------------------------------------------


class _ExplodingToy(ToyRegression):
    """The toy problem whose losses are multiplied by ``scale`` (set between epochs)."""

    scale = 1.0

    def losses(self, outputs, targets):
        return super().losses(outputs, targets) * self.scale


def test_a_finite_but_absurd_loss_ends_the_run_as_diverged(tmp_path):
    config = RunConfig(**TOY, method="unit_scal", epochs=5, divergence_factor=100.0)
    problem = _ExplodingToy("T1_T2")

    def explode(record):
        problem.scale = 1e6

    record = train(config, tmp_path, problem=problem, on_epoch_end=explode)
    assert record.status == "diverged" and record.diverged_epoch == 1
    assert "divergence_factor = 100" in record.reason and "first epoch" in record.reason
    problem.scale = 1.0
    off = RunConfig(**TOY, method="unit_scal", epochs=3)
    assert train(off, tmp_path, problem=problem, on_epoch_end=explode).status == "completed"


def test_the_divergence_bound_at_its_default_keeps_older_run_ids():
    import hashlib

    config = RunConfig(**TOY, method="unit_scal")
    later = ("divergence_factor", "step_size", "step_factor", "delta_m_convention", "probes")
    later += ("compile",)
    without = {k: v for k, v in config.to_dict().items() if k not in later}
    digest = hashlib.sha1(json.dumps(without, sort_keys=True, default=str).encode()).hexdigest()
    assert config.run_id().endswith(digest[:10])
    assert RunConfig(**TOY, divergence_factor=100.0).run_id() != config.run_id()
    with pytest.raises(ConfigError, match="divergence_factor"):
        RunConfig(**TOY, divergence_factor=0.5)


# -- fault injection ------------------------------------------------------------------------------


class _Killed(BaseException):
    """A kill at a file write: nothing after it runs (no status is recorded)."""


WRITES = ("checkpoint.pt", "record.json", "best_model.pt")


def _count_writes(config: RunConfig, root: Path, monkeypatch) -> list[str]:
    names: list[str] = []
    real = os.replace

    def counting(src, dst):
        if Path(dst).name in WRITES:
            names.append(Path(dst).name)
        return real(src, dst)

    monkeypatch.setattr(records_module.os, "replace", counting)
    train(config, root)
    monkeypatch.setattr(records_module.os, "replace", real)
    return names


def test_a_kill_at_any_file_write_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    config = RunConfig(**TOY, method="famo", epochs=3)
    writes = _count_writes(config, tmp_path / "full", monkeypatch)
    full = load_run(run_dir(config, tmp_path / "full"))
    assert set(writes) == set(WRITES)
    real = os.replace
    for index, name in enumerate(writes):
        for after in (False, True):
            root = tmp_path / f"kill-{index}-{'after' if after else 'before'}"
            seen = []

            def killing(src, dst, index=index, after=after, seen=seen):
                if Path(dst).name in WRITES:
                    seen.append(Path(dst).name)
                    if len(seen) == index + 1:
                        if after:
                            real(src, dst)
                        raise _Killed
                return real(src, dst)

            monkeypatch.setattr(records_module.os, "replace", killing)
            with pytest.raises(_Killed):
                train(config, root)
            monkeypatch.setattr(records_module.os, "replace", real)
            resumed = train(config, root)
            where = f"killed {'after' if after else 'before'} write {index} ({name})"
            assert resumed.status == "completed", where
            assert history_without_times(resumed) == history_without_times(full), where
            assert resumed.best_epoch == full.best_epoch, where
            assert load_run(run_dir(config, root)).to_dict() == resumed.to_dict(), where


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_finished_run_is_returned_on_a_machine_without_its_device(tmp_path, monkeypatch):
    import dataclasses

    import smto.train.engine as engine

    config = RunConfig(**TOY, method="unit_scal", epochs=1)
    done = train(config, tmp_path)
    cuda = dataclasses.replace(config, device="cuda")
    shutil.copytree(run_dir(config, tmp_path), run_dir(cuda, tmp_path))
    record = json.loads((run_dir(cuda, tmp_path) / "record.json").read_text())
    record["config"]["device"] = "cuda"
    (run_dir(cuda, tmp_path) / "record.json").write_text(json.dumps(record))
    monkeypatch.setattr(engine, "_problem_for", lambda *a: pytest.fail("no problem is built"))
    assert train(cuda, tmp_path).history == done.history
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train(dataclasses.replace(cuda, seed=1), tmp_path)
