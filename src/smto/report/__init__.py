"""Reports of a benchmark: the main study's tables (``smto.report.tables``) and figures
(``smto.report.figures``), with the pure pieces they compute with: the mean rank
(``smto.report.rank``), statistics over seeds (``smto.report.statistics``) and the EMA
(``smto.report.smoothing``).

Reports take results as plain data (:class:`MethodResults`), so this package imports nothing
of smto.evaluation, which builds the results and writes reports with it.

The tables and the mean rank need pandas (``pip install 'smto[bench]'``), the figures
matplotlib (``pip install 'smto[plots]'``); the statistics and the EMA need neither, so the
tables' names below are imported on first use and ``import smto.report.smoothing`` works
without pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smto.report.tables import (
        MethodResults,
        Table,
        all_tables,
        gain_statistics_table,
        metrics_table,
        pairwise_table,
        precision_round,
        relative_gain_table,
        statistics_table,
    )

__all__ = [
    "MethodResults",
    "Table",
    "all_tables",
    "gain_statistics_table",
    "metrics_table",
    "pairwise_table",
    "precision_round",
    "relative_gain_table",
    "statistics_table",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from smto.report import tables

        return getattr(tables, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
