"""The single-task reference values M^ST of one problem, and their JSON file.

Only the data: how a reference is built from single-task runs is smto.evaluation.reference
(which builds on configuration selection, smto.evaluation.selection; selection in turn reads
a reference's values to score multi-task runs, so the data lives here, below both).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from smto.errors import ConfigError, MissingError
from smto.train.records import atomic_write_text

Values = dict[str, dict[str, float]]


@dataclass
class Reference:
    """Single-task reference values of one problem, by task and metric."""

    problem: str
    val: Values
    """Mean validation value of the chosen configuration (what a run's best epoch is picked
    against: ``RunConfig(reference=reference.val)``)."""
    test: Values
    """Mean test value of the chosen configuration (what test Delta_m is computed against)."""
    sources: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """The run ids each value is the mean of."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the reference as JSON."""
        atomic_write_text(Path(path), json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Reference:
        """Reads a reference written by :meth:`save`; a clear error if missing or corrupt."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(
                problem=data["problem"],
                val=data["val"],
                test=data["test"],
                sources=data.get("sources", {}),
            )
        except FileNotFoundError:
            raise MissingError(
                f"no single-task reference at {path}: build one with `smto report` from "
                "single-task runs, or Reference.save"
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ConfigError(
                f"the single-task reference {path} is corrupt or of another format "
                f"(expected JSON with problem, val, test, sources): {error!r}"
            ) from None
