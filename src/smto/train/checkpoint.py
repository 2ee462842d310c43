"""Checkpoints that are checked before they are trusted.

A checkpoint file holds the run's id and configuration, a SHA-256 of its payload, and the
payload: the state (model, method, optimizer, scheduler, RNG states, the record) serialized
with ``torch.save``. Loading uses ``weights_only=True`` at both levels, so a crafted file
cannot run code; then the digest catches a corrupt file and the configuration a checkpoint of
another run. Each is a :class:`smto.errors.RunStateError` that names the file and what to do,
raised before anything is written.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from smto.errors import RunStateError
from smto.train.config import RunConfig
from smto.train.records import atomic_write

FORMAT = "smto-checkpoint/1"


def save_checkpoint(path: Path, state: dict[str, Any], config: RunConfig) -> None:
    """Writes ``state`` of the run of ``config`` to ``path``, atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    envelope = {
        "format": FORMAT,
        "run_id": config.run_id(),
        "config": config.to_dict(),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    atomic_write(path, lambda handle: torch.save(envelope, handle))


def load_checkpoint(path: Path, config: RunConfig) -> dict[str, Any]:
    """The state saved at ``path``, after checking that it is intact and belongs to the run
    of ``config``."""
    restart = f"delete {path} to restart the run from its first epoch"
    envelope = _load_plain(path, restart)
    if isinstance(envelope, dict) and "epochs_done" in envelope and "record" in envelope:
        return _checked_legacy(path, envelope, config, restart)
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise RunStateError(f"{path} is not an smto checkpoint: {restart}")
    if not config.same_run(envelope["config"]):
        raise RunStateError(
            f"{path} is the checkpoint of run {envelope['run_id']}, not of run "
            f"{config.run_id()} (whose "
            f"directory it is in): nothing was loaded or overwritten; move it back to its own "
            f"run directory, or {restart}"
        )
    payload = envelope["payload"]
    digest = hashlib.sha256(payload.numpy().tobytes()).hexdigest()
    if digest != envelope["sha256"]:
        raise RunStateError(
            f"{path} is corrupt (its content does not match its SHA-256): {restart}"
        )
    return _load_plain(io.BytesIO(payload.numpy().tobytes()), restart, name=str(path))


def _checked_legacy(
    path: Path, state: dict[str, Any], config: RunConfig, restart: str
) -> dict[str, Any]:
    """A checkpoint of smto 0.1's first format (the state itself, no digest): loaded safely
    all the same, and trusted only if its record is of this run."""
    record = state["record"] if isinstance(state["record"], dict) else {}
    if not config.same_run(record.get("config", {})):
        raise RunStateError(
            f"{path} is the checkpoint of run {record.get('run_id')}, not of run "
            f"{config.run_id()}: nothing was loaded or overwritten; {restart}"
        )
    return state


def _load_plain(source: Path | io.BytesIO, restart: str, name: str | None = None) -> Any:
    """``torch.load`` of tensors and plain values only, on the CPU (RNG states must be CPU
    byte tensors; ``load_state_dict`` moves the rest)."""
    name = name or str(source)
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise RunStateError(
            f"{name} holds objects other than tensors and plain values, which could run code "
            f"when loaded; it was not loaded ({_first_line(error)}): {restart}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
        raise RunStateError(f"{name} is unreadable ({_first_line(error)}): {restart}") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
