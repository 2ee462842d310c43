"""Statistics over seeds (moved to :mod:`smto.report.statistics`, which the tables use; kept
here)."""

from smto.report.statistics import (
    CONFIDENCE,
    N_RESAMPLES,
    Summary,
    TestResult,
    bootstrap_ci,
    compare,
    summarize,
)

__all__ = [
    "CONFIDENCE",
    "N_RESAMPLES",
    "Summary",
    "TestResult",
    "bootstrap_ci",
    "compare",
    "summarize",
]
