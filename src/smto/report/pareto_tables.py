"""The tables of Elich et al.'s optimizer study, from the frames of
``smto.evaluation.pareto.OptimizerStudy``:

1. :func:`pareto_totals_table`: per optimizer, the Pareto-optimal configurations ("PO
   (full)") and those no configuration of another optimizer dominates ("PO w.r.t. SGD"),
   their Table 2;
2. :func:`pareto_counts_table`: the Pareto-optimal configurations per optimizer and method,
   with the total, their Table A2;
3. :func:`best_table`: the best configuration per (method, optimizer) with its mean test
   metrics and Delta_m +- its std over seeds, below the single-task reference ("STL"), their
   Tables A4-A7.

Each is a :class:`smto.report.tables.Table` (LaTeX and Markdown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from smto._optional import require
from smto.errors import ConfigError
from smto.problems.base import Metric
from smto.report.tables import MISSING, Table, precision_round

pd = require("pandas", "bench", "smto.report.pareto_tables")

PO_FULL = "PO (full)"
"""The counts' column of the Pareto-optimal configurations."""
TOTAL = "Total"
"""Table A2's column of the sum over the methods."""
STL = "STL"
"""The row label of the single-task reference in the best-per-optimizer table."""


def _count(value: float) -> str:
    return MISSING if not math.isfinite(float(value)) else str(int(value))


def _check_counts(counts: pd.DataFrame) -> None:
    if counts.empty or PO_FULL not in counts.columns:
        raise ConfigError(f"counts must be OptimizerStudy.counts()'s frame (with {PO_FULL!r})")
    if list(counts.index.names) != ["method", "optimizer"]:
        raise ConfigError("counts must be indexed by (method, optimizer)")


def pareto_totals_table(
    counts: pd.DataFrame, optimizer_names: Mapping[str, str] | None = None
) -> Table:
    """Table 2: per optimizer (rows), the configurations, "PO (full)" and each "PO w.r.t.
    <optimizer>" column, summed over the methods (– for an optimizer against itself)."""
    _check_counts(counts)
    names = dict(optimizer_names or {})
    order = list(dict.fromkeys(counts.index.get_level_values("optimizer")))
    totals = counts.groupby(level="optimizer", sort=False).sum(min_count=1).reindex(order)
    totals.index = [names.get(o, o) for o in totals.index]
    return Table(
        "pareto_totals",
        "Configurations per optimizer on the Pareto front of all runs (PO (full)) and not "
        "dominated by any configuration of another optimizer (PO w.r.t. ...)",
        totals,
        {},
        dict.fromkeys(totals.columns, _count),
    )


def pareto_counts_table(
    counts: pd.DataFrame,
    optimizer_names: Mapping[str, str] | None = None,
    column: str = PO_FULL,
) -> Table:
    """Table A2: per optimizer (rows) and method (columns), the count of ``column`` (the
    Pareto-optimal configurations by default), and their total (– where the method has no
    configuration with that optimizer)."""
    _check_counts(counts)
    if column not in counts.columns:
        raise ConfigError(f"counts has no column {column!r}; it has {list(counts.columns)}")
    names = dict(optimizer_names or {})
    methods = list(dict.fromkeys(counts.index.get_level_values("method")))
    optimizers = list(dict.fromkeys(counts.index.get_level_values("optimizer")))
    grid = counts[column].unstack("method").reindex(index=optimizers, columns=methods)
    grid[TOTAL] = grid.sum(axis=1, min_count=1)
    grid.index = [names.get(o, o) for o in grid.index]
    grid.columns = [str(c) for c in grid.columns]
    return Table(
        "pareto_counts",
        f"{column} configurations per optimizer and method",
        grid,
        {},
        dict.fromkeys(grid.columns, _count),
    )


def _metric_labels(metrics: Mapping[str, tuple[Metric, ...]]) -> list[tuple[str, str, str, bool]]:
    return [
        (task if len(ms) == 1 else f"{task}-{m.name}", task, m.name, m.higher_is_better)
        for task, ms in metrics.items()
        for m in ms
    ]


def best_table(
    best: pd.DataFrame,
    metrics: Mapping[str, tuple[Metric, ...]],
    reference_test: Mapping[str, Mapping[str, float]],
    delta_m_label: str,
    delta_m_higher_is_better: bool,
    optimizer_names: Mapping[str, str] | None = None,
) -> Table:
    """Tables A4-A7: the single-task reference's test values ("STL"), then per (method,
    optimizer) the best configuration's optimizer, lr, mean test metrics, mean test Delta_m
    and its std over seeds ("±"). ``best`` is ``OptimizerStudy.best()``'s frame; the best
    value of each metric and of Delta_m (in its direction) is bold."""
    required = {"method", "optimizer", "lr", "delta_m", "delta_m_std"}
    if best.empty or not required <= set(best.columns):
        raise ConfigError(
            f"best must be OptimizerStudy.best()'s frame (columns {sorted(required)})"
        )
    names = dict(optimizer_names or {})
    labels = _metric_labels(metrics)
    rows = [
        {
            "Optimizer": "",
            "lr": math.nan,
            **{label: float(reference_test[task][metric]) for label, task, metric, _ in labels},
            delta_m_label: math.nan,
            "±": math.nan,
        }
    ]
    index = [STL]
    for _, row in best.iterrows():
        rows.append(
            {
                "Optimizer": names.get(row["optimizer"], row["optimizer"]),
                "lr": float(row["lr"]),
                **{label: float(row[f"test.{task}.{metric}"]) for label, task, metric, _ in labels},
                delta_m_label: float(row["delta_m"]),
                "±": float(row["delta_m_std"]),
            }
        )
        index.append(str(row["method"]))
    frame = pd.DataFrame(rows, index=index)
    directions: dict[str, bool | None] = {label: hib for label, _, _, hib in labels}
    directions[delta_m_label] = delta_m_higher_is_better
    formats = {"Optimizer": str, "lr": lambda v: MISSING if not math.isfinite(v) else f"{v:g}"}
    formats["±"] = lambda v: precision_round(v, 3)
    return Table(
        "best_per_optimizer",
        f"Best configuration per method and optimizer (by mean validation {delta_m_label}): "
        f"mean test metrics and test {delta_m_label} (%) ± its std over seeds",
        frame,
        directions,
        formats,
    )
