"""Run records: what a run leaves behind, and loading many of them into pandas.

A run directory holds ``record.json`` (configuration, smto version, per-epoch history, best
epoch and its metrics, status), ``checkpoint.pt`` (everything needed to resume) and
``best_model.pt`` (the model of the best validation epoch).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from smto._optional import require
from smto.data.paths import set_default_mode
from smto.errors import DataError, MissingError

RECORD = "record.json"
CHECKPOINT = "checkpoint.pt"
BEST_MODEL = "best_model.pt"
STATUSES = ("running", "completed", "diverged", "pruned", "failed", "interrupted")


@dataclass
class RunRecord:
    """The self-describing record of one run.

    ``history`` has one entry per finished epoch: ``epoch``, ``train_loss`` and ``weights``
    (per task, epoch means), ``info`` (the epoch means of the method's step diagnostics,
    ``StepResult.info``: solver iterations and convergence, RotoGrad's rotation loss, ...),
    ``val`` and ``val_loss`` (per task), ``test`` (per task, only
    for epochs that improved the selection score), ``score`` (the selection score), ``lr``,
    ``train_seconds`` (the training part's wall time) and ``seconds`` (the whole epoch's,
    with evaluation and checkpointing); with ``RunConfig.probes``, ``probes`` (the epoch's
    gradient statistics and their cost, :class:`smto.train.probes.GradientProbe`).
    """

    run_id: str
    config: dict[str, Any]
    smto_version: str
    status: str = "running"
    reason: str | None = None
    selection: str = "mean_val_loss"
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    best_val: dict[str, dict[str, float]] | None = None
    best_test: dict[str, dict[str, float]] | None = None
    best_by_metric: dict[str, dict[str, float]] = field(default_factory=dict)
    """Single-task runs: for each "task/metric", the epoch of its best validation value, that
    value and the test value at that epoch (PROTOCOL.md: single-task best epochs per metric)."""
    diverged_epoch: int | None = None
    diverged_step: int | None = None
    """The batch index, within ``diverged_epoch``, of the step that was not finite."""
    solver_failures: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """The record of a dict written by :meth:`to_dict`."""
        return cls(**data)

    def save(self, run_dir: Path) -> None:
        """Writes the record to ``run_dir/record.json`` (atomically: a temporary file and a
        rename)."""
        atomic_write_text(run_dir / RECORD, json.dumps(self.to_dict(), indent=1, allow_nan=True))


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes ``path`` through a unique temporary file in the same directory and a rename,
    so readers (and a killed writer) never see a partial file; the usual permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        set_default_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(text.encode()))


def load_run(path: str | os.PathLike[str]) -> RunRecord:
    """The record of one run, from its directory or its ``record.json``."""
    path = Path(path)
    file = path / RECORD if path.is_dir() else path
    try:
        return RunRecord.from_dict(json.loads(file.read_text()))
    except FileNotFoundError:
        raise MissingError(f"no run record at {file}") from None
    except (ValueError, TypeError) as error:  # JSONDecodeError, UnicodeDecodeError, fields
        raise DataError(f"the run record {file} is corrupt or of another format: {error}") from None


def find_runs(root: str | os.PathLike[str]) -> list[Path]:
    """Every run directory under ``root`` (directories holding a record.json)."""
    return sorted(p.parent for p in Path(root).rglob(RECORD))


def load_runs(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]):
    """Loads runs into two pandas DataFrames: one row per run, one row per run and epoch.

    ``paths`` is a root directory (searched recursively) or an iterable of run directories.
    Nested values are flattened into dotted columns: ``config.lr``, ``best_test.CL.accuracy``,
    ``val.RR.mse``, ``weights.CL``.
    """
    pd = require("pandas", "bench", "smto.train.load_runs")

    if isinstance(paths, (str, os.PathLike)):
        root = Path(paths)
        dirs = [root] if (root / RECORD).exists() else find_runs(root)
    else:
        dirs = [Path(p) for p in paths]
    runs, epochs = [], []
    for d in dirs:
        record = load_run(d)
        row = {k: v for k, v in record.to_dict().items() if k != "history"}
        row["path"] = str(d)
        row["epochs_done"] = len(record.history)
        runs.append(_flatten(row))
        for entry in record.history:
            epochs.append(_flatten({"run_id": record.run_id, **entry}))
    return pd.DataFrame(runs), pd.DataFrame(epochs)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
