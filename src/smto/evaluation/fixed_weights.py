"""Fixed task weights extracted from a method's recorded weights ("FwLe0.9", main study
Section 3.5), and the fixed-weights runs that train with them.

The extraction follows the study's code (``show_weights.py`` of its release): each epoch's
mean weights are normalized to sum 1, w_t; the exponential moving average is m_0 = w_0,
m_t = beta m_{t-1} + (1 - beta) w_t; the last m is renormalized to sum 1 (it already does up
to rounding). Options beyond the study: ``beta``, and the epochs used (``"all"``, as the
study, or ``"best"``: epochs up to and including the run's best epoch). The study extracted
from one run of the chosen configuration; with several runs, each run's weights are
extracted and their mean is renormalized (for runs of equal length this equals the EMA of
the seed-averaged weights, the EMA being linear).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from smto import registry
from smto._optional import require
from smto.errors import ConfigError, MissingError
from smto.evaluation.reference import Reference
from smto.evaluation.results import method_runs
from smto.evaluation.selection import (
    configuration_key,
    group_runs,
    run_delta_m,
    select_configurations,
)
from smto.report.smoothing import ema
from smto.train.config import RunConfig
from smto.train.records import RunRecord, atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

EPOCH_RULES = ("all", "best")
SOURCES = ("best", "all")
"""Which configurations of a method fixed weights are extracted from: the chosen one (the
study's FwLe) or each of its grid (the study's Fig. 5); :func:`source_runs` also takes an lr."""


def ema_weights(epochs: Sequence[Mapping[str, float]], beta: float = 0.9) -> dict[str, float]:
    """The renormalized last EMA value of per-epoch weights (each normalized to sum 1)."""
    if not 0 <= beta < 1:
        raise ConfigError(f"beta must be in [0, 1), got {beta}")
    if not epochs:
        raise ConfigError("no epochs with recorded weights to extract fixed weights from")
    tasks = list(epochs[0])
    normalized = [
        _normalized(index, [float(w[t]) for t in tasks], tasks) for index, w in enumerate(epochs)
    ]
    last = ema(normalized, beta)[-1]
    return {t: float(m / last.sum()) for t, m in zip(tasks, last)}


def _normalized(index: int, values: list[float], tasks: list[str]) -> list[float]:
    total = sum(values)
    if not all(math.isfinite(v) for v in values) or total <= 0:
        raise ConfigError(
            f"epoch {index}'s weights {dict(zip(tasks, values))} cannot be normalized to "
            "sum 1 (non-finite or not positive in sum)"
        )
    return [v / total for v in values]


def run_weights(record: RunRecord, beta: float = 0.9, epochs: str = "all") -> dict[str, float]:
    """The fixed weights of one run's recorded per-epoch weights.

    Epochs with non-finite weights (a diverging last epoch) are left out.
    """
    if epochs not in EPOCH_RULES:
        raise ConfigError(f"epochs must be one of {EPOCH_RULES}, got {epochs!r}")
    history = record.history
    if epochs == "best":
        if record.best_epoch is None:
            raise ConfigError(f"run {record.run_id} has no best epoch")
        history = [e for e in history if e["epoch"] <= record.best_epoch]
    weights = [
        e["weights"]
        for e in history
        if e.get("weights") and all(math.isfinite(float(v)) for v in e["weights"].values())
    ]
    if not weights:
        raise ConfigError(f"run {record.run_id} has no epoch with recorded finite weights")
    return ema_weights(weights, beta)


@dataclass
class FixedWeights:
    """Fixed weights by task and where they came from."""

    problem: str
    tasks: str
    method: str
    weights: dict[str, float]
    beta: float = 0.9
    epochs: str = "all"
    sources: list[str] = field(default_factory=list)
    configuration: str | None = None
    """The configuration key of the source runs (None in files of older versions)."""

    def as_list(self) -> list[float]:
        """The weights in task order, as the fixed-weights method takes them."""
        return [self.weights[t] for t in self.tasks.split("_")]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the weights to ``path`` as JSON (atomically: a temporary file and a rename)."""
        atomic_write_text(Path(path), json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FixedWeights:
        """The weights saved at ``path``; a MissingError if there are none, a ConfigError if the
        file is corrupt or lacks a task's weight."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            weights = cls(**data)
        except FileNotFoundError:
            raise MissingError(f"no fixed weights at {path}") from None
        except (json.JSONDecodeError, TypeError) as error:
            raise ConfigError(f"the fixed weights file {path} is corrupt: {error}") from None
        missing = [t for t in weights.tasks.split("_") if t not in weights.weights]
        if missing:
            raise ConfigError(f"the fixed weights file {path} has no weight for task(s) {missing}")
        return weights


def extract_fixed_weights(
    runs: Sequence[RunRecord], beta: float = 0.9, epochs: str = "all"
) -> FixedWeights:
    """The fixed weights of the runs of one configuration: each run's, averaged, renormalized."""
    if not runs:
        raise ConfigError("no runs to extract fixed weights from")
    configs = {
        (r.config["problem"], r.config["tasks"], registry.spec(r.config["method"]).name)
        for r in runs
    }
    if len(configs) != 1:
        raise ConfigError(f"runs of one problem, task set and method expected, got {configs}")
    problem, tasks, method = configs.pop()
    per_run = [run_weights(r, beta, epochs) for r in runs]
    mean = {t: sum(w[t] for w in per_run) / len(per_run) for t in per_run[0]}
    total = sum(mean.values())
    return FixedWeights(
        problem=problem,
        tasks=tasks,
        method=method,
        weights={t: v / total for t, v in mean.items()},
        beta=beta,
        epochs=epochs,
        sources=[r.run_id for r in runs],
        configuration=configuration_key(runs[0].config),
    )


def chosen_runs(
    records: Sequence[RunRecord],
    problem: str,
    tasks: str,
    method: str,
    reference: Reference | None = None,
    convention: str | None = None,
) -> list[RunRecord]:
    """The runs of ``method``'s chosen configuration (best mean validation Delta_m; a lone
    configuration needs no reference), failed runs left out."""
    runs = method_runs(records, problem, tasks).get(registry.spec(method).name)
    if not runs:
        raise ConfigError(f"no finished runs of {method} on {problem} {tasks}")
    groups = group_runs(runs)
    if len(groups) > 1 and reference is None:
        raise ConfigError(
            f"{method} has {len(groups)} configurations on {problem} {tasks}: choosing one "
            "needs the single-task reference"
        )
    key = (
        next(iter(groups))
        if len(groups) == 1
        else select_configurations(runs, reference, convention)[0]
    )
    return [r for r in groups[key] if r.status != "failed"]


def fixed_weights_config(config: Mapping | RunConfig, weights: FixedWeights) -> RunConfig:
    """``config`` (a run's configuration) with the fixed-weights method and ``weights``: the
    study trains fixed weights with the source method's chosen hyperparameters."""
    base = config if isinstance(config, RunConfig) else RunConfig.from_dict(dict(config))
    if base.tasks != weights.tasks or base.problem != weights.problem:
        raise ConfigError(
            f"weights for {weights.problem} {weights.tasks} do not fit a run of "
            f"{base.problem} {base.tasks}"
        )
    return replace(base, method="fixed", method_params={"weights": weights.as_list()})


def source_runs(
    records: Sequence[RunRecord],
    problem: str,
    tasks: str,
    method: str,
    reference: Reference | None = None,
    source: str = "best",
    lr: float | None = None,
    convention: str | None = None,
) -> dict[str, list[RunRecord]]:
    """The runs (failed ones left out) of each source configuration of ``method``, by
    configuration key: with ``lr``, every configuration of that learning rate; else
    ``source`` "best" (the chosen configuration, :func:`chosen_runs`) or "all" (each one of
    the grid). A source without a run left is skipped; none at all is an error."""
    if source not in SOURCES:
        raise ConfigError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    runs = method_runs(records, problem, tasks).get(registry.spec(method).name)
    if not runs:
        raise ConfigError(f"no finished runs of {method} on {problem} {tasks}")
    if lr is None and source == "best":
        chosen = chosen_runs(records, problem, tasks, method, reference, convention)
        return {configuration_key(chosen[0].config): chosen} if chosen else {}
    groups = group_runs(runs)
    if lr is not None:
        lrs = sorted({float(r.config.get("lr", RunConfig.lr)) for r in runs})
        groups = {
            key: group
            for key, group in groups.items()
            if math.isclose(float(group[0].config.get("lr", RunConfig.lr)), lr, rel_tol=1e-9)
        }
        if not groups:
            raise ConfigError(
                f"{method} has no runs at lr {lr:g} on {problem} {tasks}; its lrs: {lrs}"
            )
    result = {key: [r for r in group if r.status != "failed"] for key, group in groups.items()}
    return {key: group for key, group in result.items() if group}


def fixed_weights_frame(
    records: Sequence[RunRecord],
    sources: Mapping[str, tuple[FixedWeights, Sequence[RunRecord]]],
    reference: Reference,
    convention: str | None = None,
) -> pd.DataFrame:
    """One row per run for :func:`smto.report.fixed_weights_figure.fixed_weights_spread`:
    for each source (label -> its weights and runs), the source runs (kind "source") and the
    fixed-weights runs trained from them (kind "fixed": the runs in ``records`` of the
    configuration of :func:`fixed_weights_config` of a source run, any seed), with test
    Delta_m in ``convention`` (None: the study's). Failed runs are left out."""
    pd = require("pandas", "bench", "the fixed-weights frame")
    by_key = group_runs(r for r in records if r.status != "failed")
    rows = []
    for label, (weights, runs) in sources.items():
        keys = {configuration_key(_fixed_config(r.config, weights)) for r in runs}
        fixed = [r for key in keys for r in by_key.get(key, [])]
        for kind, group in (("source", runs), ("fixed", fixed)):
            for record in group:
                value = run_delta_m(record, reference, "test", convention or "study")
                row = {"source": label, "kind": kind, "run_id": record.run_id, "delta_m": value}
                rows.append(row)
    return pd.DataFrame(rows, columns=["source", "kind", "run_id", "delta_m"])


def _fixed_config(config: Mapping, weights: FixedWeights) -> dict:
    """The configuration dict :func:`fixed_weights_config` makes, without building a
    RunConfig (so records of any smto version or problem compare)."""
    return {**config, "method": "fixed", "method_params": {"weights": weights.as_list()}}
