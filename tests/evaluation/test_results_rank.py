"""Delta_m, relative gains and mean rank of methods on hand-made runs, computed by hand.

The fake problem's task A has accuracy (higher is better); task B has accuracy and an error
(lower is better), so Delta_m averages B's two metrics first, with opposite signs.
"""

from __future__ import annotations

import math

import pytest
from eval_records import (
    ACC,
    ERR,
    fake_problem,  # noqa: F401 (autouse fixture)
    multi_record,
)

from smto.evaluation.reference import Reference
from smto.evaluation.report import warn_other_references
from smto.evaluation.results import collect_results, relative_gains
from smto.report.rank import mean_rank
from smto.report.tables import gain_statistics_table, metrics_table, relative_gain_table

REF = Reference(
    "fake",
    val={"A": {"acc": 0.5}, "B": {"acc": 0.5, "err": 0.2}},
    test={"A": {"acc": 0.5}, "B": {"acc": 0.5, "err": 0.2}},
)
METRICS = {"A": (ACC,), "B": (ACC, ERR)}


def values(a: float, b_acc: float, b_err: float) -> dict:
    return {"A": {"acc": a}, "B": {"acc": b_acc, "err": b_err}}


def runs():
    """Test means: unit_scal (0.9, 0.5, 0.1), cagrad (0.8, 0.6, 0.3), famo (0.9, 0.7, 0.2);
    a second cagrad configuration is worse on validation but great on test (not chosen)."""
    u, f = values(0.9, 0.5, 0.1), values(0.9, 0.7, 0.2)
    c0, c1 = values(0.7, 0.6, 0.3), values(0.9, 0.6, 0.3)
    bad_val, great_test = values(0.5, 0.5, 0.2), values(1.0, 1.0, 0.01)
    return [
        multi_record("u0", u, u, method="unit_scal", seed=0),
        multi_record("u1", u, u, method="unit_scal", seed=1),
        multi_record("c0", c0, c0, method="cagrad", seed=0),
        multi_record("c1", c1, c1, method="cagrad", seed=1),
        multi_record("cx", bad_val, great_test, method="cagrad", seed=0, lr=0.01),
        multi_record("f0", f, f, method="famo", seed=0),
        multi_record("f1", f, f, method="famo", seed=1),
        multi_record("other", u, u, method="famo", tasks="A_C"),  # another task set
    ]


def test_relative_gains_signs_by_direction():
    gains = relative_gains(values(0.7, 0.6, 0.3), REF.test, METRICS)
    assert gains["A"]["acc"] == pytest.approx(40.0)
    assert gains["B"]["acc"] == pytest.approx(20.0)
    assert gains["B"]["err"] == pytest.approx(-50.0)


def test_delta_m_per_run_and_chosen_configuration():
    results = collect_results(runs(), "fake", "A_B", REF)
    assert [r.method for r in results] == ["unit_scal", "cagrad", "famo"]
    unit, cagrad, famo = results
    # unit: A +80 %; B (0 % + 50 %)/2 = 25 %; Delta_m (80 + 25)/2 = 52.5 %
    assert unit.delta_m == pytest.approx([52.5, 52.5])
    # cagrad seed 0: A +40 %; B (20 % - 50 %)/2 = -15 %; (40 - 15)/2 = 12.5 %; seed 1: 32.5 %
    assert [r.run_id for r in cagrad.runs] == ["c0", "c1"]
    assert cagrad.delta_m == pytest.approx([12.5, 32.5])
    assert cagrad.mean_delta_m() == pytest.approx(22.5)
    assert famo.delta_m == pytest.approx([50.0, 50.0])
    assert [r.run_id for r in famo.runs] == ["f0", "f1"]


def test_mean_rank_with_ties_by_hand():
    means = {
        "U": values(0.9, 0.5, 0.1),
        "C": values(0.8, 0.6, 0.3),
        "F": values(0.9, 0.7, 0.2),
    }
    # A: U and F tie for first -> 1.5, C 3. B acc: F 1, C 2, U 3. B err: U 1, F 2, C 3.
    # B: U (3+1)/2 = 2, C 2.5, F 1.5. MR: U (1.5+2)/2, C (3+2.5)/2, F (1.5+1.5)/2.
    assert mean_rank(means, METRICS) == pytest.approx({"U": 1.75, "C": 2.75, "F": 1.5})


def test_mean_rank_puts_a_missing_value_last():
    means = {"U": values(0.9, 0.5, 0.1), "C": values(math.nan, 0.6, 0.3)}
    ranks = mean_rank(means, {"A": (ACC,)})
    assert ranks == {"U": 1.0, "C": 2.0}


def test_tables_by_hand():
    results = collect_results(runs(), "fake", "A_B", REF, methods=["famo", "Unit. Scal.", "cagrad"])
    gains = relative_gain_table(results).frame
    assert list(gains.index) == ["FAMO", "Unit. Scal.", "CAGrad"]
    assert list(gains.columns) == ["A", "B-acc", "B-err", "avg"]
    assert gains.loc["CAGrad"].tolist() == pytest.approx([60.0, 20.0, -50.0, 22.5])
    assert gains.loc["Unit. Scal."].tolist() == pytest.approx([80.0, 0.0, 50.0, 52.5])
    stats = gain_statistics_table(results).frame
    # CAGrad's gains 60, 20, -50: mean 10, population std sqrt((50^2 + 10^2 + 60^2)/3)
    expected = [-50.0, 60.0, 20.0, math.sqrt(6200 / 3), 10.0]
    assert stats.loc["CAGrad"].tolist() == pytest.approx(expected)
    table = metrics_table(results)
    assert table.frame.loc["CAGrad"].tolist() == pytest.approx([0.8, 0.6, 0.3, 22.5, 2.75])
    assert table.frame.loc["FAMO", "MR"] == pytest.approx(1.5)
    assert table.higher_is_better == {
        "A": True,
        "B-acc": True,
        "B-err": False,
        "Δm (%)": True,
        "MR": False,
    }
    markdown = table.markdown()
    # the tie on A bolds both; err's best is the lowest; MR's best is the lowest
    assert "| FAMO | **0.900** | **0.700** | 0.200 | 50.00 | **1.50** |" in markdown
    assert "| Unit. Scal. | **0.900** | 0.500 | **0.100** | **52.50** | 1.75 |" in markdown


def test_missing_method_and_reference_errors():
    with pytest.raises(ValueError, match=r"no finished runs of nash_mtl .* runs: cagrad, famo"):
        collect_results(runs(), "fake", "A_B", REF, methods=["unit_scal", "nash-mtl"])
    with pytest.raises(ValueError, match="reference is of"):
        collect_results(runs(), "toy_regression", "T1_T2", REF)
    excluded = collect_results(runs(), "fake", "A_B", REF, exclude=["famo"])
    assert [r.method for r in excluded] == ["unit_scal", "cagrad"]


def test_runs_not_chosen_against_the_reference_are_warned_about():
    results = collect_results(runs(), "fake", "A_B", REF)
    with pytest.warns(
        UserWarning, match="6 run\\(s\\) chose their best epoch by the mean validation"
    ):
        warn_other_references(results, REF)
    for result in results:
        for run in result.runs:
            run.config["reference"] = REF.val
    results[0].runs[0].config["reference"] = {"A": {"acc": 0.6}, "B": {"acc": 0.5, "err": 0.2}}
    with pytest.warns(UserWarning, match="1 run\\(s\\) chose .* another single-task reference"):
        warn_other_references(results, REF)
