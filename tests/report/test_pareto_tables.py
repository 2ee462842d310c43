"""The optimizer study's tables: Table 2's totals, Table A2's counts per method and the best
configuration per (method, optimizer) below the single-task reference."""

from __future__ import annotations

import math

import pytest

pd = pytest.importorskip("pandas")

from smto.errors import ConfigError  # noqa: E402
from smto.problems.base import Metric  # noqa: E402
from smto.report.pareto_tables import (  # noqa: E402
    best_table,
    pareto_counts_table,
    pareto_totals_table,
)

NAMES = {"adam": "Adam", "sgd": "SGD"}


@pytest.fixture
def counts() -> pd.DataFrame:
    rows = {
        ("Unit. Scal.", "adam"): (2, 2, math.nan, 2),
        ("Unit. Scal.", "sgd"): (1, 0, 0, math.nan),
        ("CAGrad", "adam"): (1, 1, math.nan, 1),
        ("CAGrad", "sgd"): (3, 2, 3, math.nan),
        ("FAMO", "adam"): (2, 0, math.nan, 1),
    }
    frame = pd.DataFrame.from_dict(
        rows,
        orient="index",
        columns=["configurations", "PO (full)", "PO w.r.t. Adam", "PO w.r.t. SGD"],
    )
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["method", "optimizer"])
    return frame


def test_totals_per_optimizer(counts):
    table = pareto_totals_table(counts, NAMES)
    assert list(table.frame.index) == ["Adam", "SGD"]
    assert table.frame.loc["Adam", ["configurations", "PO (full)", "PO w.r.t. SGD"]].tolist() == [
        5,
        3,
        4,
    ]
    assert table.frame.loc["SGD", ["configurations", "PO (full)", "PO w.r.t. Adam"]].tolist() == [
        4,
        2,
        3,
    ]
    assert math.isnan(table.frame.loc["Adam", "PO w.r.t. Adam"])
    markdown = table.markdown()
    assert "| Adam | 5 | 3 | – | 4 |" in markdown
    assert "| SGD | 4 | 2 | 3 | – |" in markdown
    assert r"PO w.r.t. SGD \\" in table.latex()


def test_counts_per_method(counts):
    table = pareto_counts_table(counts, NAMES)
    assert list(table.frame.columns) == ["Unit. Scal.", "CAGrad", "FAMO", "Total"]
    assert "| Adam | 2 | 1 | 0 | 3 |" in table.markdown()
    assert "| SGD | 0 | 2 | – | 2 |" in table.markdown()  # FAMO has no SGD configuration
    by_sgd = pareto_counts_table(counts, NAMES, column="PO w.r.t. SGD")
    assert by_sgd.frame.loc["Adam", "Total"] == 4
    with pytest.raises(ConfigError, match="no column"):
        pareto_counts_table(counts, NAMES, column="PO w.r.t. signSGD")
    with pytest.raises(ConfigError, match="counts"):
        pareto_counts_table(counts.reset_index(), NAMES)


def test_best_table_rows_and_bold():
    metrics = {"A": (Metric("acc", True),), "C": (Metric("err", False),)}
    best = pd.DataFrame(
        {
            "method": ["Unit. Scal.", "Unit. Scal.", "CAGrad"],
            "optimizer": ["adam", "sgd", "adam"],
            "lr": [1e-3, 0.1, 5e-4],
            "test.A.acc": [0.88, 0.76, 0.8],
            "test.C.err": [0.18, 0.25, 0.2],
            "delta_m": [-10.0, 15.0, 0.0],
            "delta_m_std": [5.303, 0.0, math.nan],
        }
    )
    reference = {"A": {"acc": 0.8}, "C": {"err": 0.2}}
    table = best_table(best, metrics, reference, "ΔM (Elich)", False, NAMES)
    assert list(table.frame.index) == ["STL", "Unit. Scal.", "Unit. Scal.", "CAGrad"]
    assert list(table.frame.columns) == ["Optimizer", "lr", "A", "C", "ΔM (Elich)", "±"]
    lines = table.markdown().splitlines()
    assert lines[0] == "| Method | Optimizer | lr | A ↑ | C ↓ | ΔM (Elich) ↓ | ± |"
    assert lines[2] == "| STL |  | – | 0.800 | 0.200 | – | – |"
    assert lines[3] == "| Unit. Scal. | Adam | 0.001 | **0.880** | **0.180** | **-10.00** | 5.30 |"
    assert lines[4] == "| Unit. Scal. | SGD | 0.1 | 0.760 | 0.250 | 15.00 | 0.00 |"
    assert r"$\Delta_M$ (Elich) $\downarrow$" in table.latex()
    higher = best_table(best, metrics, reference, "Δm", True, NAMES)
    assert "**15.00**" in higher.markdown()
    with pytest.raises(ConfigError, match="best must be"):
        best_table(best.drop(columns="delta_m_std"), metrics, reference, "Δm", True)
