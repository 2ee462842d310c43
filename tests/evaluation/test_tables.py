"""Table rendering: the study's rounding, LaTeX (booktabs) and Markdown with the best in bold."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from smto.report.tables import Table, precision_round


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (-8.9521, "-8.952"),  # published numbers of the main study
        (-135.68, "-135.7"),
        (0.24612, "0.246"),
        (-8.28, "-8.280"),
        (-0.0544, "-0.054"),
        (-11.5649, "-11.56"),
        (229.44, "229.4"),
        (-849.3, "-849.3"),
        (12345.6, "12345.6"),  # at least one decimal
        (0.0, "0.000"),
        (math.nan, "–"),
    ],
)
def test_precision_round_as_the_study(value, text):
    assert precision_round(value) == text


def test_mean_rank_rounding_uses_three_digits():
    assert precision_round(4.449, 3) == "4.45"
    assert precision_round(2.0, 3) == "2.00"
    assert precision_round(10.25, 3) == "10.2"


def table() -> Table:
    frame = pd.DataFrame(
        {"acc": [0.91, 0.95, 0.95], "err_%": [0.30, 0.10, 0.20], "note": [1.0, 2.0, 3.0]},
        index=["Unit. Scal.", "A & B", "C_D"],
    )
    return Table("t", "A caption with 50% & Δm", frame, {"acc": True, "err_%": False})


def test_latex_booktabs_bold_best_and_escaping():
    latex = table().latex()
    lines = latex.splitlines()
    assert lines[:4] == [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{A caption with 50\% \& $\Delta_m$}",
        r"\begin{tabular}{lrrr}",
    ]
    assert r"\toprule" in lines and r"\midrule" in lines and r"\bottomrule" in lines
    assert r"Method & acc $\uparrow$ & err\_\% $\downarrow$ & note \\" in lines
    assert r"Unit. Scal. & 0.910 & 0.300 & 1.000 \\" in lines
    assert r"A \& B & \textbf{0.950} & \textbf{0.100} & 2.000 \\" in lines
    assert r"C\_D & \textbf{0.950} & 0.200 & 3.000 \\" in lines


def test_markdown_bold_best_and_arrows():
    markdown = table().markdown().splitlines()
    assert markdown[0] == "| Method | acc ↑ | err_% ↓ | note |"
    assert markdown[1] == "|:---|---:|---:|---:|"
    assert markdown[3] == "| A & B | **0.950** | **0.100** | 2.000 |"
    assert markdown[4] == "| C_D | **0.950** | 0.200 | 3.000 |"


def test_best_ignores_missing_values():
    frame = pd.DataFrame({"x": [math.nan, -3.0, -1.0]}, index=["a", "b", "c"])
    assert Table("t", "", frame, {"x": True}).best() == {"x": "-1.000"}
    assert Table("t", "", frame, {"x": False}).best() == {"x": "-3.000"}
