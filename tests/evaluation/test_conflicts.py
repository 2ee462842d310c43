"""smto.evaluation.conflicts and `smto conflicts`: the probed baseline's mean cosine and the
best SMTO's gain, per problem, on real (toy) runs."""

from __future__ import annotations

import math

import pytest

from smto.errors import ConfigError
from smto.evaluation.conflicts import cosine_gap_frame
from smto.evaluation.report import auto_reference, load_records
from smto.evaluation.results import collect_results
from smto.train import RunConfig, train

pytestmark = pytest.mark.filterwarnings("ignore:.*chose their best epoch by the mean validation")

TOY = {"problem": "toy_regression", "batch_size": 64, "lr": 3e-3, "epochs": 2}
OPTIONS = {"sizes": [256, 64, 64]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("conflicts")
    probes = {"cosine_every": 1, "pairs_every": None}
    for method, probed in (("unit_scal", probes), ("mgda", None), ("rlw", None)):
        config = RunConfig(**TOY, tasks="T1_T2", method=method, probes=probed,
                           problem_options=OPTIONS)  # fmt: skip
        assert train(config, root).status == "completed"
    for task in ("T1", "T2"):
        train(RunConfig(**TOY, tasks=task, problem_options=OPTIONS), root)
    return root


def test_the_cosine_is_the_probed_mean_and_the_gap_the_best_smtos_gain(runs):
    (row,) = cosine_gap_frame([("toy", runs)]).to_dict(orient="records")
    records = load_records(runs)
    probed = next(r for r in records if r.config.get("probes"))
    values = [e["probes"]["cosine_to_mean"] for e in probed.history]
    assert row["cosine"] == pytest.approx(sum(values) / len(values))
    assert -1.0 <= row["cosine"] <= 1.0
    reference = auto_reference(records, "toy_regression", "T1_T2", OPTIONS)
    results = collect_results(records, "toy_regression", "T1_T2", reference,
                              ["unit_scal", "mgda", "rlw"], baseline="unit_scal")  # fmt: skip
    means = {r.method: r.mean_delta_m() for r in results}
    best = max((m for m in means if m != "unit_scal"), key=means.get)
    assert row["best_delta_m"] == pytest.approx(means[best])
    assert row["gap"] == pytest.approx(means[best] - means["unit_scal"])
    assert row["tasks"] == "T1_T2" and row["problem"] == "toy"


def test_the_command_writes_the_table_and_the_scatter(runs, tmp_path, capsys):
    from smto.cli import main

    out = tmp_path / "out"
    code = main(["conflicts", "--problem", f"a={runs}", "--problem", f"b={runs}",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"cosine_gap.csv", "cosine_gap.png",
                                                "cosine_gap.pdf"}  # fmt: skip
    import pandas as pd

    table = pd.read_csv(out / "cosine_gap.csv")
    assert list(table["problem"]) == ["a", "b"] and table["cosine"].notna().all()
    assert "cosine" in capsys.readouterr().out


def test_a_problem_without_an_smto_or_without_probes(runs, tmp_path):
    only = tmp_path / "only"
    config = RunConfig(**TOY, tasks="T1_T2", problem_options=OPTIONS)
    train(config, only)
    with pytest.raises(ConfigError, match="at least one SMTO"):
        cosine_gap_frame([("x", only)])
    unprobed = tmp_path / "unprobed"
    for method in ("unit_scal", "mgda"):
        train(RunConfig(**TOY, tasks="T1_T2", method=method, problem_options=OPTIONS), unprobed)
    for task in ("T1", "T2"):
        train(RunConfig(**TOY, tasks=task, problem_options=OPTIONS), unprobed)
    (row,) = cosine_gap_frame([("x", unprobed)]).to_dict(orient="records")
    assert math.isnan(row["cosine"]) and math.isfinite(row["gap"])
    with pytest.raises(ConfigError, match="at least one problem"):
        cosine_gap_frame([])
