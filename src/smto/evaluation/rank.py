"""The mean rank MR (moved to :mod:`smto.report.rank`, which the tables use; kept here)."""

from smto.report.rank import mean_rank

__all__ = ["mean_rank"]
