"""Single-task references, configuration keys and configuration selection on hand-made runs."""

from __future__ import annotations

import math

import pytest
from eval_records import (
    fake_problem,  # noqa: F401 (autouse fixture)
    multi_record,
    single_record,
)

from smto.evaluation.reference import Reference, single_task_reference
from smto.evaluation.selection import (
    configuration_key,
    group_runs,
    run_delta_m,
    select_configurations,
)


def test_configuration_key_ignores_seed_reference_device_and_spelling():
    base = {"problem": "fake", "tasks": "A_B", "method": "cagrad", "lr": 0.01, "seed": 0}
    key = configuration_key(base)
    assert key.startswith("cagrad-")
    assert configuration_key({**base, "seed": 3, "device": "cuda"}) == key
    assert configuration_key({**base, "reference": {"A": {"acc": 0.5}}}) == key
    assert configuration_key({**base, "method": "CAGrad"}) == key
    assert configuration_key({**base, "method_params": {"alpha": 0.5}}) == key  # the default
    assert configuration_key({**base, "method_params": {"alpha": 0.4}}) != key
    assert configuration_key({**base, "lr": 0.001}) != key
    assert configuration_key({**base, "tasks": "A"}) != key


def test_group_runs_by_configuration():
    runs = [
        single_record("a0", "A", {"acc": (0.5, 0.5)}, lr=0.01, seed=0),
        single_record("b0", "A", {"acc": (0.5, 0.5)}, lr=0.001, seed=0),
        single_record("a1", "A", {"acc": (0.5, 0.5)}, lr=0.01, seed=1),
    ]
    groups = group_runs(runs)
    assert [[r.run_id for r in g] for g in groups.values()] == [["a0", "a1"], ["b0"]]


def reference_runs():
    """Task B: lr 0.01 has the better mean val acc (0.85 vs 0.83), lr 0.001 the better mean
    val err (0.15 vs 0.25); task A has one configuration."""
    return [
        single_record("B-hi-0", "B", {"acc": (0.90, 0.70), "err": (0.30, 0.40)}, lr=0.01, seed=0),
        single_record("B-hi-1", "B", {"acc": (0.80, 0.60), "err": (0.20, 0.40)}, lr=0.01, seed=1),
        single_record("B-lo-0", "B", {"acc": (0.82, 0.90), "err": (0.10, 0.12)}, lr=0.001, seed=0),
        single_record("B-lo-1", "B", {"acc": (0.84, 0.90), "err": (0.20, 0.18)}, lr=0.001, seed=1),
        single_record("A-0", "A", {"acc": (0.5, 0.4)}, lr=0.01, seed=0),
        single_record("A-1", "A", {"acc": (0.7, 0.6)}, lr=0.01, seed=1),
    ]


def test_reference_picks_a_configuration_per_metric():
    ref = single_task_reference(reference_runs())
    assert ref.problem == "fake"
    assert ref.val["B"]["acc"] == pytest.approx(0.85)
    assert ref.test["B"]["acc"] == pytest.approx(0.65)
    assert ref.sources["B"]["acc"] == ["B-hi-0", "B-hi-1"]
    assert ref.val["B"]["err"] == pytest.approx(0.15)
    assert ref.test["B"]["err"] == pytest.approx(0.15)
    assert ref.sources["B"]["err"] == ["B-lo-0", "B-lo-1"]
    assert ref.val["A"] == {"acc": pytest.approx(0.6)}
    assert ref.test["A"] == {"acc": pytest.approx(0.5)}


def test_single_task_selection_deduplicates_in_metric_order():
    runs = reference_runs()
    hi, lo, a = (configuration_key(runs[i].config) for i in (0, 2, 4))
    assert select_configurations(runs) == [hi, lo, a]
    only_b_acc = [r for r in runs if r.config["tasks"] == "B"]
    for r in only_b_acc:
        r.best_by_metric["B/err"] = {"epoch": 0, "val": 0.1, "test": 0.1}
    tied = min(hi, lo)  # err tied: the first key in sorted order
    assert select_configurations(only_b_acc) == list(dict.fromkeys([hi, tied]))


def test_a_failed_or_valueless_run_keeps_a_configuration_out():
    runs = reference_runs()
    runs[1].status = "failed"  # lr 0.01 of B: its better acc no longer counts
    ref = single_task_reference(runs)
    assert ref.sources["B"]["acc"] == ["B-lo-0", "B-lo-1"]
    runs[1].status = "completed"
    del runs[3].best_by_metric["B/err"]  # lr 0.001 seed 1 never had a finite err
    ref = single_task_reference(runs)
    assert ref.sources["B"]["err"] == ["B-hi-0", "B-hi-1"]
    assert ref.val["B"]["err"] == pytest.approx(0.25)


def test_unfinished_runs_are_left_out_and_no_value_is_an_error():
    runs = reference_runs()
    runs[1].status = "running"
    assert single_task_reference(runs).sources["B"]["acc"] == ["B-hi-0"]
    a_runs = [r for r in reference_runs() if r.config["tasks"] == "A"]
    a_runs[0].status = "failed"
    with pytest.raises(ValueError, match="no single-task configuration of A"):
        single_task_reference(a_runs)
    with pytest.raises(ValueError, match="single-task runs"):
        single_task_reference([multi_record("m", {"A": {"acc": 1.0}}, None, tasks="A_B")])


def test_reference_round_trips_and_load_errors(tmp_path):
    ref = single_task_reference(reference_runs())
    ref.save(tmp_path / "ref.json")
    assert Reference.load(tmp_path / "ref.json") == ref
    with pytest.raises(FileNotFoundError, match="no single-task reference"):
        Reference.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"problem": "fake"')
    with pytest.raises(ValueError, match="corrupt"):
        Reference.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"problem": "fake"}')
    with pytest.raises(ValueError, match="corrupt"):
        Reference.load(tmp_path / "other.json")


REF = Reference(
    "fake",
    val={"A": {"acc": 0.8}, "B": {"acc": 0.5, "err": 0.2}},
    test={"A": {"acc": 0.4}, "B": {"acc": 0.5, "err": 0.1}},
)


def test_run_delta_m_by_hand():
    values = {"A": {"acc": 0.72}, "B": {"acc": 0.55, "err": 0.25}}
    run = multi_record("r", values, values)
    # val: A: (0.72-0.8)/0.8 = -0.1; B: (+0.1 - 0.25)/2 = -0.075; mean -0.0875
    assert run_delta_m(run, REF, "val") == pytest.approx(-8.75)
    # test: A: (0.72-0.4)/0.4 = 0.8; B: ((0.55-0.5)/0.5 - (0.25-0.1)/0.1)/2 = (0.1-1.5)/2 = -0.7
    assert run_delta_m(run, REF, "test") == pytest.approx(5.0)
    assert math.isnan(run_delta_m(multi_record("d", None, None, tasks="A_B"), REF, "val"))
    with pytest.raises(ValueError, match="no task"):
        run_delta_m(multi_record("c", {"C": {"err": 1.0}}, None), REF, "val")


def test_multi_task_selection_by_mean_validation_delta_m():
    good = {"A": {"acc": 0.88}, "B": {"acc": 0.5, "err": 0.2}}  # +5 %
    ok = {"A": {"acc": 0.84}, "B": {"acc": 0.5, "err": 0.2}}  # +2.5 %
    bad = {"A": {"acc": 0.72}, "B": {"acc": 0.5, "err": 0.2}}  # -5 %
    runs = [
        multi_record("x0", good, good, lr=0.01, seed=0),
        multi_record("x1", bad, bad, lr=0.01, seed=1),  # mean 0 %
        multi_record("y0", ok, ok, lr=0.001, seed=0),
        multi_record("y1", ok, ok, lr=0.001, seed=1),  # mean 2.5 %
        multi_record("z0", good, good, lr=0.005, seed=0),
        multi_record("z1", None, None, lr=0.005, seed=1, tasks="A_B", status="diverged"),
    ]
    assert select_configurations(runs, REF) == [configuration_key(runs[2].config)]
    with pytest.raises(ValueError, match="reference"):
        select_configurations(runs)
