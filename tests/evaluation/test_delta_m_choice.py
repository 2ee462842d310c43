"""The Delta_m convention in every choice that uses Delta_m: the best epoch in training, the
configuration of a method, and the tables. Configurations X and Y below are ordered one way
by the study's per-task mean and the other way by Elich et al.'s flat mean (task B's two
metrics weigh twice there)."""

from __future__ import annotations

import pytest
from eval_records import (
    fake_problem,  # noqa: F401 (autouse fixture)
    multi_record,
)

from smto.errors import ConfigError
from smto.evaluation.reference import Reference
from smto.evaluation.results import collect_results
from smto.evaluation.selection import (
    configuration_key,
    records_convention,
    run_delta_m,
    select_configurations,
)
from smto.report.tables import metrics_table, relative_gain_table, statistics_table
from smto.train import RunConfig, train

REF = Reference(
    "fake",
    val={"A": {"acc": 0.8}, "B": {"acc": 0.5, "err": 0.2}},
    test={"A": {"acc": 0.8}, "B": {"acc": 0.5, "err": 0.2}},
)
# X: A +10 %, B acc 0 %, B err +10 % (a loss): study (10 + (0 - 10)/2)/2 = 2.5; Elich (-10 + 0
# + 10)/3 = 0. Y: A -6 %, B acc +12 %, B err 0: study (-6 + 6)/2 = 0; Elich (6 - 12 + 0)/3 = -2.
X = {"A": {"acc": 0.88}, "B": {"acc": 0.5, "err": 0.22}}
Y = {"A": {"acc": 0.752}, "B": {"acc": 0.56, "err": 0.2}}


def grid(**fields):
    return [
        multi_record("x0", X, X, lr=0.01, seed=0, **fields),
        multi_record("x1", X, X, lr=0.01, seed=1, **fields),
        multi_record("y0", Y, Y, lr=0.001, seed=0, **fields),
    ]


def test_run_delta_m_in_both_conventions_by_hand():
    x, y = grid()[0], grid()[2]
    assert run_delta_m(x, REF, "val") == pytest.approx(2.5)
    assert run_delta_m(x, REF, "val", "elich") == pytest.approx(0.0)
    assert run_delta_m(y, REF, "test", "study") == pytest.approx(0.0)
    assert run_delta_m(y, REF, "test", "elich") == pytest.approx(-2.0)


def test_the_configuration_choice_follows_the_convention_and_its_direction():
    runs = grid()
    x_key, y_key = configuration_key(runs[0].config), configuration_key(runs[2].config)
    assert select_configurations(runs, REF) == [x_key]  # highest study Delta_m
    assert select_configurations(runs, REF, "elich") == [y_key]  # lowest Elich Delta_M
    # by default, the convention the runs chose their best epochs by
    elich_runs = grid(delta_m_convention="elich")
    assert select_configurations(elich_runs, REF) == [configuration_key(elich_runs[2].config)]
    assert select_configurations(elich_runs, REF, "study") == [
        configuration_key(elich_runs[0].config)
    ]


def test_runs_of_several_conventions_need_one_named():
    runs = [*grid(), multi_record("e", X, X, lr=0.1, delta_m_convention="elich")]
    with pytest.raises(ConfigError, match="different Delta_m conventions"):
        records_convention(runs)
    assert records_convention(runs, "elich") == "elich"
    with pytest.raises(ConfigError, match="study, elich"):
        select_configurations(runs, REF, "flat")


def test_the_convention_is_in_the_configuration_key_only_when_set():
    plain = grid()[0].config
    assert configuration_key({**plain, "delta_m_convention": None}) == configuration_key(plain)
    assert configuration_key({**plain, "delta_m_convention": "elich"}) != configuration_key(plain)


def test_tables_name_the_convention_and_bold_by_its_direction():
    records = [*grid(method="unit_scal"), *grid(method="cagrad")[:1]]  # cagrad: X only
    study = collect_results(records, "fake", "A_B", REF)
    elich = collect_results(records, "fake", "A_B", REF, convention="elich")
    assert [r.convention for r in elich] == ["elich", "elich"]
    # unit_scal's choice flips from X (study) to Y (Elich); cagrad has X only
    assert [r.run_id for r in study[0].runs] == ["x0", "x1"]
    assert [r.run_id for r in elich[0].runs] == ["y0"]
    table = metrics_table(elich)
    assert "ΔM (Elich) (%)" in table.frame.columns and "Δm (%)" not in table.frame.columns
    assert table.higher_is_better["ΔM (Elich) (%)"] is False
    assert "Δm (%)" in metrics_table(study).frame.columns
    assert table.frame.loc["Unit. Scal.", "ΔM (Elich) (%)"] == pytest.approx(-2.0)
    gains = relative_gain_table(elich)
    assert gains.frame.columns[-1] == "ΔM (Elich) (%)" and "avg" in relative_gain_table(study).frame
    stats = statistics_table(study, baseline=None)
    assert stats.higher_is_better["mean"] is True
    assert statistics_table(elich, baseline=None).higher_is_better["mean"] is False
    assert r"$\Delta_M$ (Elich)" in table.latex()
    # the best value (bold) is the lowest Elich Delta_M (unit_scal's Y, -2 against cagrad's 0)
    assert float(table.best()["ΔM (Elich) (%)"]) == pytest.approx(-2.0)
    assert "**-2.000**" in table.markdown()


TOY = {
    "problem": "toy_regression",
    "tasks": "T1_T2",
    "batch_size": 64,
    "lr": 3e-3,
    "problem_options": {"sizes": [128, 64, 64]},
}


def test_the_best_epoch_in_training_follows_the_convention(tmp_path):
    reference = {"T1": {"mse": 0.2}, "T2": {"mse": 40.0}}
    config = RunConfig(
        **TOY, method="unit_scal", epochs=3, reference=reference, delta_m_convention="elich"
    )
    assert (
        config.run_id()
        != RunConfig(**TOY, method="unit_scal", epochs=3, reference=reference).run_id()
    )
    record = train(config, tmp_path)
    assert record.selection == "-delta_m_elich"
    elich = [
        50 * ((e["val"]["T1"]["mse"] - 0.2) / 0.2 + (e["val"]["T2"]["mse"] - 40) / 40)
        for e in record.history
    ]
    assert len(set(elich)) == len(elich)  # the epochs differ, so the direction matters
    assert [e["score"] for e in record.history] == pytest.approx([-v for v in elich])
    assert record.best_epoch == min(range(len(elich)), key=elich.__getitem__)


def test_the_study_convention_is_the_default_spelling():
    base = RunConfig(**TOY, method="unit_scal")
    assert RunConfig(**TOY, method="unit_scal", delta_m_convention="study") == base
    assert (
        base.run_id()
        == RunConfig.from_dict(
            {k: v for k, v in base.to_dict().items() if k != "delta_m_convention"}
        ).run_id()
    )
    with pytest.raises(ConfigError, match="study, elich"):
        RunConfig(**TOY, method="unit_scal", delta_m_convention="maninis")
