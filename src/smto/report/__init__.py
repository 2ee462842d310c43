"""Reports of a benchmark: the main study's tables (``smto.report.tables``) and figures
(``smto.report.figures``, which needs matplotlib: ``pip install 'smto[plots]'``)."""

from smto.report.tables import (
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
    "Table",
    "all_tables",
    "gain_statistics_table",
    "metrics_table",
    "pairwise_table",
    "precision_round",
    "relative_gain_table",
    "statistics_table",
]
