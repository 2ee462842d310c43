"""The comparison of ``smto reproduce`` on hand-made Multi-MNIST CL_RR records: task gains
and Delta_m per run against a hand-made reference, the t interval, the mark exactly where the
published value is outside it, and Spearman's correlation on a hand case."""

from __future__ import annotations

import json
import math

import pytest

from smto.evaluation.published import DELTA_M, published_problem
from smto.evaluation.reference_values import Reference
from smto.evaluation.reproduction import MARK, QUICK_NOTE, Row, compare, interval, spearman
from smto.evaluation.results import collect_results
from smto.train.records import RunRecord

REFERENCE = Reference("multi_mnist", val={"CL": {"accuracy": 0.9}, "RR": {"mse": 0.1}},
                      test={"CL": {"accuracy": 0.9}, "RR": {"mse": 0.1}})  # fmt: skip
T_975_2 = 4.302652729911275
"""Student's t quantile 0.975 with 2 degrees of freedom (tables: 4.303)."""


def record(method: str, seed: int, accuracy: float, mse: float) -> RunRecord:
    values = {"CL": {"accuracy": accuracy}, "RR": {"mse": mse}}
    config = {"problem": "multi_mnist", "tasks": "CL_RR", "method": method, "seed": seed,
              "lr": 0.001}  # fmt: skip
    return RunRecord(f"{method}-{seed}", config, "test", "completed", best_epoch=0,
                     best_val=values, best_test=values)  # fmt: skip


def comparison(quick: bool = False):
    records = [
        # CL gains -1, -2, -3 %; RR gains -10, -20, -30 %; Delta_m -5.5, -11, -16.5 %.
        *(
            record("unit_scal", s, 0.9 * (1 - (s + 1) / 100), 0.1 * (1 + (s + 1) / 10))
            for s in range(3)
        ),
        # The single-task values exactly: every gain 0, std 0, the interval [0, 0].
        *(record("cagrad", s, 0.9, 0.1) for s in range(3)),
    ]
    results = collect_results(records, "multi_mnist", "CL_RR", REFERENCE, ["unit_scal", "cagrad"])
    return compare(published_problem("multi_mnist-CL_RR"), results, quick=quick, seeds=3)


def test_the_interval_is_students_t_of_the_mean():
    mean, std, low, high = interval([1.0, 2.0, 3.0, math.nan])  # nan: a run without a value
    assert (mean, std) == (2.0, 1.0)
    assert (low, high) == pytest.approx((2 - T_975_2 / math.sqrt(3), 2 + T_975_2 / math.sqrt(3)))
    assert all(math.isnan(v) for v in interval([5.0])[1:])  # one run: no interval


def test_rows_hold_our_per_run_gains_and_delta_m_beside_the_published_values():
    rows = {(r.method, r.quantity): r for r in comparison().rows}
    unit = rows["unit_scal", DELTA_M]
    assert unit.values == pytest.approx([-5.5, -11.0, -16.5])
    assert (unit.mean, unit.std) == pytest.approx((-11.0, 5.5))
    assert unit.published == -8.952  # Table 3
    assert rows["unit_scal", "CL"].values == pytest.approx([-1.0, -2.0, -3.0])
    assert rows["unit_scal", "RR"].values == pytest.approx([-10.0, -20.0, -30.0])
    assert rows["cagrad", "RR"].published == -2.590


def test_the_mark_appears_exactly_where_the_published_value_is_outside_the_interval():
    result = comparison()
    outside = {(r.method, r.quantity) for r in result.rows if r.outside}
    # unit_scal's intervals ([-24.7, 2.66], [-4.48, 0.48], [-44.8, 4.84]) hold the published
    # values; cagrad's are [0, 0], and its published values are all below 0.
    assert outside == {("cagrad", "CL"), ("cagrad", "RR"), ("cagrad", DELTA_M)}
    table = result.markdown()
    marked = [line for line in table.splitlines() if line.endswith(f"| {MARK} |")]
    assert len(marked) == 3 and all(line.startswith("| CAGrad |") for line in marked)
    assert QUICK_NOTE not in table


def test_the_mark_at_the_interval_edges():
    def row(published):
        return Row("m", "M", DELTA_M, published, [], 0.0, 1.0, -1.0, 1.0)

    assert not row(-1.0).outside and not row(1.0).outside and not row(0.0).outside
    assert row(-1.0001).outside and row(1.0001).outside
    assert not row(None).outside


def test_spearman_on_a_hand_case():
    # Ranks 1 2 3 4 against 1 3 2 4: rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8.
    assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0]) == pytest.approx(0.8)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1.0, 2.0], [1.0, 2.0]))  # under three methods


def test_a_quick_comparison_says_it_is_not_comparable_and_the_json_has_no_nan():
    result = comparison(quick=True)
    assert QUICK_NOTE in result.markdown()
    data = json.loads(result.to_json())
    assert data["quick"] is True
    assert data["spearman"][DELTA_M] is None  # two methods: no correlation
    assert {r["method"] for r in data["rows"] if r["outside"]} == {"cagrad"}
