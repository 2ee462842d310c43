"""The optimizer study's analysis (smto.evaluation.pareto) on hand-made runs: the Pareto
front (mixed directions, ties, duplicates, a run without a result), "PO w.r.t. SGD", the
counts of Elich et al.'s Table 2 / A2, the best configuration per (method, optimizer) in each
Delta_m convention's direction, and the paired Adam-vs-SGD Delta_m of Fig. A3."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pandas")

from eval_records import fake_problem, multi_record  # noqa: F401 (autouse fixture)

from smto.errors import ConfigError
from smto.evaluation.pareto import (
    PO_FULL,
    dominates,
    optimizer_study,
    pareto_optimal,
    po_against,
    undominated_by,
)
from smto.evaluation.reference_values import Reference

UP_DOWN = (True, False)  # task A's acc (higher is better), task C's err (lower is better)


def test_dominates_is_strict_and_directional():
    assert dominates([0.9, 0.1], [0.8, 0.1], UP_DOWN)  # tie in err, better acc
    assert not dominates([0.8, 0.1], [0.9, 0.1], UP_DOWN)
    assert not dominates([0.9, 0.1], [0.9, 0.1], UP_DOWN)  # equal points
    assert not dominates([0.9, 0.2], [0.8, 0.1], UP_DOWN)  # a trade-off
    assert dominates([0.8, 0.2], [0.9, 0.1], (False, True))  # both directions flipped
    assert dominates([0.1, 0.9], [math.nan, 0.0], UP_DOWN)  # no result is dominated
    assert not dominates([math.nan, 0.0], [0.1, 0.9], UP_DOWN)
    with pytest.raises(ConfigError, match="2 metrics"):
        dominates([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], UP_DOWN)


def test_pareto_front_of_hand_made_points():
    points = [
        (0.90, 0.30),  # 0 front: best acc among err 0.30
        (0.80, 0.10),  # 1 front
        (0.80, 0.30),  # 2 dominated by 0 (tie in err)
        (0.90, 0.30),  # 3 a duplicate of 0: both on the front
        (0.70, 0.10),  # 4 dominated by 1 (tie in err)
        (0.95, 0.50),  # 5 front: the best acc
        (math.nan, 0.0),  # 6 no result: never optimal
        (0.50, 0.05),  # 7 front: the best err
    ]
    front = pareto_optimal(points, UP_DOWN)
    assert front.tolist() == [True, True, False, True, False, True, False, True]


def test_pareto_front_properties_on_random_points():
    rng = np.random.default_rng(0)
    points = np.round(rng.random((60, 3)), 1)  # coarse values: many ties and duplicates
    directions = (True, False, True)
    front = pareto_optimal(points, directions)
    assert front.any()
    for i in np.flatnonzero(~front):  # every dominated point is dominated by a front point
        assert any(dominates(points[j], points[i], directions) for j in np.flatnonzero(front))
    for i in np.flatnonzero(front):  # no front point is dominated by anything
        assert not any(dominates(p, points[i], directions) for p in points)
    flipped = points * np.array([1.0, -1.0, 1.0])  # err negated is a higher-is-better metric
    assert (pareto_optimal(flipped, (True, True, True)) == front).all()


def test_undominated_by_rivals():
    rivals = [(0.88, 0.20), (0.80, 0.05)]
    points = [(0.91, 0.20), (0.84, 0.11), (0.87, 0.20), (0.79, 0.06), (math.nan, 0.0)]
    assert undominated_by(points, rivals, UP_DOWN).tolist() == [True, True, False, False, False]
    assert undominated_by(points, [], UP_DOWN).tolist() == [True] * 4 + [False]


REFERENCE = Reference(
    "fake",
    val={"A": {"acc": 0.8}, "C": {"err": 0.2}},
    test={"A": {"acc": 0.8}, "C": {"err": 0.2}},
)


def run(method, optimizer, lr, seed, test, val=None, status="completed", convention="elich"):
    """A run on tasks A (acc) and C (err) with test values (acc, err), val = test unless
    given; trained against the reference in ``convention``."""
    acc, err = test
    vacc, verr = val or test
    return multi_record(
        f"{method}-{optimizer}-{lr}-{seed}",
        None if status == "failed" else {"A": {"acc": vacc}, "C": {"err": verr}},
        None if status == "failed" else {"A": {"acc": acc}, "C": {"err": err}},
        status=status,
        tasks="A_C",
        method=method,
        optimizer=optimizer,
        lr=lr,
        seed=seed,
        reference=REFERENCE.val,
        delta_m_convention=convention,
    )


def sweep():
    """Means over the two seeds (acc, err), and what they are on the test split:

    adam: unit_scal 1e-3 (0.91, 0.20) PO; unit_scal 1e-2 (0.85, 0.10) PO; cagrad 1e-3
    (0.91, 0.20) a duplicate, PO; famo 1e-3 (0.84, 0.11) dominated by unit_scal 1e-2 but not
    by any SGD run; famo 1e-2 a failed seed: no result.
    sgd: unit_scal 0.1 (0.88, 0.20) dominated by Adam; cagrad 0.1 (0.80, 0.05) PO; cagrad
    0.01 (0.86, 0.12) PO; cagrad 0.05 (0.79, 0.06) dominated by cagrad 0.1 only.
    """
    means = {
        ("unit_scal", "adam", 1e-3): (0.91, 0.20),
        ("unit_scal", "adam", 1e-2): (0.85, 0.10),
        ("cagrad", "adam", 1e-3): (0.91, 0.20),
        ("famo", "adam", 1e-3): (0.84, 0.11),
        ("unit_scal", "sgd", 0.1): (0.88, 0.20),
        ("cagrad", "sgd", 0.1): (0.80, 0.05),
        ("cagrad", "sgd", 0.01): (0.86, 0.12),
        ("cagrad", "sgd", 0.05): (0.79, 0.06),
    }
    records = []
    for (method, optimizer, lr), (acc, err) in means.items():
        records.append(run(method, optimizer, lr, 0, (acc - 0.01, err + 0.01)))
        records.append(run(method, optimizer, lr, 1, (acc + 0.01, err - 0.01)))
    records.append(run("famo", "adam", 1e-2, 0, (0.99, 0.01)))
    records.append(run("famo", "adam", 1e-2, 1, (0.0, 0.0), status="failed"))
    return records


def flags(study, column_values):
    frame = study.frame()
    return {
        (row.method_name, row.optimizer, row.lr): column_values(row) for row in frame.itertuples()
    }


def test_study_pareto_and_po_against_sgd():
    study = optimizer_study(sweep(), "fake", "A_C", REFERENCE)
    assert len(study.configurations) == 9
    frame = study.frame()
    assert frame["runs"].tolist() == [2] * 9
    pareto = dict(zip(zip(frame["method_name"], frame["optimizer"], frame["lr"]), frame["pareto"]))
    assert {k for k, v in pareto.items() if v} == {
        ("unit_scal", "adam", 1e-3),
        ("unit_scal", "adam", 1e-2),
        ("cagrad", "adam", 1e-3),
        ("cagrad", "sgd", 0.1),
        ("cagrad", "sgd", 0.01),
    }
    adam = frame[frame["optimizer"] == "adam"]
    not_by_sgd = set(zip(adam["method_name"], adam["lr"], adam["undominated_by.sgd"]))
    assert not_by_sgd == {
        ("unit_scal", 1e-3, True),
        ("unit_scal", 1e-2, True),
        ("cagrad", 1e-3, True),
        ("famo", 1e-3, True),  # dominated, but only by an Adam configuration
        ("famo", 1e-2, False),  # a failed seed: no result
    }
    sgd = frame[frame["optimizer"] == "sgd"]
    not_by_adam = dict(zip(zip(sgd["method_name"], sgd["lr"]), sgd["undominated_by.adam"]))
    assert not_by_adam == {
        ("unit_scal", 0.1): False,
        ("cagrad", 0.1): True,
        ("cagrad", 0.01): True,
        ("cagrad", 0.05): True,  # dominated by an SGD configuration only
    }
    means = frame.set_index(["method_name", "optimizer", "lr"])
    assert means.loc[("famo", "adam", 1e-3), "test.A.acc"] == pytest.approx(0.84)
    assert math.isnan(means.loc[("famo", "adam", 1e-2), "test.A.acc"])


def test_counts_per_method_and_optimizer():
    counts = optimizer_study(sweep(), "fake", "A_C", REFERENCE).counts()
    sgd, adam = po_against("sgd"), po_against("adam")
    assert list(counts.columns) == ["configurations", PO_FULL, adam, sgd]
    expected = {
        ("Unit. Scal.", "adam"): (2, 2, 2),
        ("Unit. Scal.", "sgd"): (1, 0, 0),
        ("CAGrad", "adam"): (1, 1, 1),
        ("CAGrad", "sgd"): (3, 2, 3),
        ("FAMO", "adam"): (2, 0, 1),
    }
    assert set(counts.index) == set(expected)
    for (method, optimizer), (n, full, against) in expected.items():
        row = counts.loc[(method, optimizer)]
        rival = sgd if optimizer == "adam" else adam
        own = adam if optimizer == "adam" else sgd
        assert (row["configurations"], row[PO_FULL], row[rival]) == (n, full, against)
        assert math.isnan(row[own])
    totals = counts.groupby(level="optimizer").sum()
    assert totals.loc["adam", PO_FULL] == 3 and totals.loc["adam", sgd] == 4
    assert totals.loc["sgd", PO_FULL] == 2 and totals.loc["sgd", adam] == 3


def test_split_option_takes_the_front_on_validation_values():
    records = [
        run("unit_scal", "adam", 1e-3, 0, test=(0.9, 0.1), val=(0.5, 0.5)),
        run("unit_scal", "sgd", 1e-1, 0, test=(0.5, 0.5), val=(0.9, 0.1)),
    ]
    on_test = optimizer_study(records, "fake", "A_C", REFERENCE)
    on_val = optimizer_study(records, "fake", "A_C", REFERENCE, split="val")
    assert on_test.pareto.tolist() == [True, False]
    assert on_val.pareto.tolist() == [False, True]
    assert "val.A.acc" in on_val.frame().columns
    with pytest.raises(ConfigError, match="split"):
        optimizer_study(records, "fake", "A_C", REFERENCE, split="train")


THREE = Reference(
    "fake",
    val={"A": {"acc": 0.5}, "B": {"acc": 0.5, "err": 0.5}},
    test={"A": {"acc": 0.5}, "B": {"acc": 0.5, "err": 0.5}},
)


def three_metric_run(lr, seed, val, test, convention):
    return multi_record(
        f"run-{lr}-{seed}",
        {"A": {"acc": val[0]}, "B": {"acc": val[1], "err": val[2]}},
        {"A": {"acc": test[0]}, "B": {"acc": test[1], "err": test[2]}},
        method="unit_scal",
        optimizer="adam",
        lr=lr,
        seed=seed,
        reference=THREE.val,
        delta_m_convention=convention,
    )


@pytest.mark.parametrize("convention", ["study", "elich"])
def test_best_per_method_optimizer_in_each_conventions_direction(convention):
    # Validation gains (%): lr 0.1: A +10, B.acc 0, B.err 0 -> study (10 + 0) / 2 = 5,
    # Elich -(10 + 0 + 0) / 3 = -3.33; lr 0.01: A 0, B.acc +6, B.err +6 -> study
    # (0 + 6) / 2 = 3, Elich -12 / 3 = -4. The study picks lr 0.1 (highest), Elich lr 0.01
    # (lowest); lr 0.001 is worse in both.
    val = {0.1: (0.55, 0.50, 0.50), 0.01: (0.50, 0.53, 0.47), 0.001: (0.45, 0.45, 0.55)}
    test = {0.1: (0.6, 0.5, 0.5), 0.01: (0.5, 0.6, 0.4), 0.001: (0.5, 0.5, 0.5)}
    records = [
        three_metric_run(
            lr, seed, val[lr], tuple(t + 0.01 * (2 * seed - 1) for t in test[lr]), convention
        )
        for lr in val
        for seed in (0, 1)
    ]
    study = optimizer_study(records, "fake", "A_B", THREE, convention=convention)
    best = study.best()
    assert len(best) == 1
    row = best.iloc[0]
    chosen = 0.1 if convention == "study" else 0.01
    assert row["lr"] == chosen
    assert row["val_delta_m"] == pytest.approx({0.1: 5.0, 0.01: -4.0}[chosen])
    assert (row["test.A.acc"], row["test.B.acc"], row["test.B.err"]) == pytest.approx(test[chosen])
    # Seeds at test - 0.01 and + 0.01 on every metric; Elich, lr 0.01, drops (%) of seed 0
    # and seed 1: A (0.49: +2, 0.51: -2), B.acc (0.59: -18, 0.61: -22), B.err (0.39: -22,
    # 0.41: -18); per seed -38/3 and -42/3, their mean -40/3.
    if convention == "elich":
        assert row["delta_m"] == pytest.approx(-40.0 / 3)
        assert row["delta_m_std"] == pytest.approx(np.std([-38 / 3, -42 / 3], ddof=1))


def test_best_chooses_against_a_failed_run_and_warns_of_other_conventions():
    records = [
        run("unit_scal", "adam", 1e-3, 0, (0.99, 0.01)),
        run("unit_scal", "adam", 1e-3, 1, (0.0, 0.0), status="failed"),
        run("unit_scal", "adam", 1e-2, 0, (0.81, 0.19)),
    ]
    best = optimizer_study(records, "fake", "A_C", REFERENCE).best()
    assert best["lr"].tolist() == [1e-2]
    with pytest.warns(UserWarning, match="1 of 1 run"):
        optimizer_study(
            [run("unit_scal", "adam", 1e-3, 0, (0.9, 0.1), convention="study")],
            "fake",
            "A_C",
            REFERENCE,
        )


def test_paired_adam_against_sgd_on_hand_values():
    # Reference acc 0.8, err 0.2. Elich's drop of a run (acc, err) is the mean of
    # -(acc - 0.8) / 0.8 and (err - 0.2) / 0.2, in %.
    # Unit. Scal. + Adam, seeds (0.86, 0.16) and (0.90, 0.20): (-7.5 - 20) / 2 = -13.75 and
    # (-12.5 + 0) / 2 = -6.25, mean -10. + SGD, (0.76, 0.25) twice: (5 + 25) / 2 = 15.
    # CAGrad + Adam (0.8, 0.2): 0; + SGD (0.72, 0.22): (10 + 10) / 2 = 10.
    # FAMO has no SGD run: left out.
    records = [
        run("unit_scal", "adam", 1e-3, 0, (0.86, 0.16)),
        run("unit_scal", "adam", 1e-3, 1, (0.90, 0.20)),
        run("unit_scal", "adam", 1e-2, 0, (0.5, 0.5)),  # worse on validation: not chosen
        run("unit_scal", "sgd", 1e-1, 0, (0.76, 0.25)),
        run("unit_scal", "sgd", 1e-1, 1, (0.76, 0.25)),
        run("cagrad", "adam", 1e-3, 0, (0.8, 0.2)),
        run("cagrad", "sgd", 1e-1, 0, (0.72, 0.22)),
        run("famo", "adam", 1e-3, 0, (0.8, 0.2)),
    ]
    study = optimizer_study(records, "fake", "A_C", REFERENCE)
    paired = study.paired().set_index("method_name")
    assert sorted(paired.index) == ["cagrad", "unit_scal"]
    us, ca = paired.loc["unit_scal"], paired.loc["cagrad"]
    assert (us["delta_m_first"], us["delta_m_second"], us["difference"]) == pytest.approx(
        (-10.0, 15.0, -25.0)
    )
    assert us["std_first"] == pytest.approx(7.5 / math.sqrt(2))
    assert us["std_second"] == pytest.approx(0.0)
    assert (ca["delta_m_first"], ca["delta_m_second"], ca["difference"]) == pytest.approx(
        (0.0, 10.0, -10.0)
    )
    assert math.isnan(ca["std_first"])  # one seed
    with pytest.warns(UserWarning, match="'study' convention"):  # the runs chose by Elich's
        gains = optimizer_study(records, "fake", "A_C", REFERENCE, convention="study")
    # two tasks of one metric each: the study's gain is minus Elich's drop
    assert gains.paired().set_index("method_name").loc["unit_scal", "difference"] == (
        pytest.approx(25.0)
    )
    with pytest.raises(ConfigError, match="signsgd"):
        study.paired("adam", "signsgd")


def test_clear_errors():
    with pytest.raises(ConfigError, match="no finished multi-task runs"):
        optimizer_study([], "fake", "A_C", REFERENCE)
    partial = Reference("fake", val={"A": {"acc": 0.8}}, test={"A": {"acc": 0.8}})
    with pytest.raises(ConfigError, match="C/err"):
        optimizer_study(sweep(), "fake", "A_C", partial)
    with pytest.raises(ConfigError, match="convention"):
        optimizer_study(sweep(), "fake", "A_C", REFERENCE, convention="maninis")
