"""Fixed weights from any source configuration (the main study's Fig. 5) and its figure."""

from __future__ import annotations

import pytest
from eval_records import (
    fake_problem,  # noqa: F401 (autouse fixture)
    multi_record,
)

from smto.errors import ConfigError
from smto.evaluation.fixed_weights import (
    extract_fixed_weights,
    fixed_weights_frame,
    source_runs,
)
from smto.evaluation.reference import Reference
from smto.evaluation.selection import configuration_key
from smto.report.fixed_weights_figure import fixed_weights_spread

REF = Reference(
    "fake",
    val={"A": {"acc": 0.5}, "B": {"acc": 0.5, "err": 0.2}},
    test={"A": {"acc": 0.5}, "B": {"acc": 0.5, "err": 0.2}},
)
GOOD = {"A": {"acc": 0.75}, "B": {"acc": 0.5, "err": 0.2}}  # Delta_m +25 %
POOR = {"A": {"acc": 0.55}, "B": {"acc": 0.5, "err": 0.2}}  # +5 %


def history(a: float, b: float) -> list[dict]:
    return [{"epoch": i, "weights": {"A": a, "B": b}} for i in range(3)]


def grid():
    """cagrad at lr 0.01 (chosen: better on validation, weights 0.2 / 0.8) and at lr 0.001
    (weights 0.6 / 0.4), two seeds each."""
    return [
        multi_record(f"g{s}", GOOD, GOOD, method="cagrad", lr=0.01, seed=s, history=history(1, 4))
        for s in (0, 1)
    ] + [
        multi_record(f"p{s}", POOR, POOR, method="cagrad", lr=0.001, seed=s, history=history(3, 2))
        for s in (0, 1)
    ]


def test_a_non_best_lr_gives_that_lrs_runs_and_weights():
    runs = grid()
    best = source_runs(runs, "fake", "A_B", "cagrad", REF)
    assert [[r.run_id for r in group] for group in best.values()] == [["g0", "g1"]]
    chosen = source_runs(runs, "fake", "A_B", "cagrad", REF, lr=0.001)
    assert list(chosen) == [configuration_key(runs[2].config)]
    assert [r.run_id for r in chosen[configuration_key(runs[2].config)]] == ["p0", "p1"]
    weights = extract_fixed_weights(next(iter(chosen.values())))
    assert weights.weights == pytest.approx({"A": 0.6, "B": 0.4})
    assert weights.configuration == configuration_key(runs[2].config)
    every = source_runs(runs, "fake", "A_B", "cagrad", REF, source="all")
    assert len(every) == 2
    with pytest.raises(ConfigError, match=r"no runs at lr 0\.1"):
        source_runs(runs, "fake", "A_B", "cagrad", REF, lr=0.1)
    with pytest.raises(ConfigError, match="source must be"):
        source_runs(runs, "fake", "A_B", "cagrad", REF, source="worst")


def fixed_run(source, weights, values):
    """A fixed-weights run trained from ``source`` (its configuration, the fixed method)."""
    fields = {k: v for k, v in source.config.items() if k not in ("problem", "tasks")}
    fields.update(method="fixed", method_params={"weights": weights.as_list()})
    return multi_record(f"f-{source.run_id}", values, values, tasks="A_B", **fields)


def test_the_frame_pairs_each_source_with_its_fixed_weights_runs(tmp_path):
    runs = grid()
    sources = {}
    records = list(runs)
    for lr, label, fixed_values in ((0.01, "lr=0.01", POOR), (0.001, "lr=0.001", GOOD)):
        group = next(iter(source_runs(runs, "fake", "A_B", "cagrad", REF, lr=lr).values()))
        weights = extract_fixed_weights(group)
        sources[label] = (weights, group)
        records += [fixed_run(r, weights, fixed_values) for r in group]
    frame = fixed_weights_frame(records, sources, REF)
    counts = frame.groupby(["source", "kind"]).size().to_dict()
    assert counts == {("lr=0.001", "fixed"): 2, ("lr=0.001", "source"): 2,
                      ("lr=0.01", "fixed"): 2, ("lr=0.01", "source"): 2}  # fmt: skip
    fixed = frame[frame["kind"] == "fixed"].groupby("source")["delta_m"].mean()
    assert fixed["lr=0.01"] == pytest.approx(5.0) and fixed["lr=0.001"] == pytest.approx(25.0)

    files = fixed_weights_spread(frame, tmp_path / "fig", label="test Δm (%)")
    assert [f.suffix for f in files] == [".png", ".pdf"]
    assert all(f.stat().st_size > 1000 for f in files)
    from smto.report.fixed_weights_figure import _draw

    fig = _draw(frame, "test Δm (%)")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "test Δm (%)" and "source" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lr=0.01", "lr=0.001"]
    lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
    assert list(lines["fixed:lr=0.01"].get_ydata()) == pytest.approx([5.0, 5.0])
    assert list(lines["source:lr=0.01"].get_ydata()) == pytest.approx([25.0])
    assert list(lines["source:lr=0.001"].get_ydata()) == pytest.approx([5.0])


def test_the_figure_needs_fixed_runs(tmp_path):
    import pandas as pd

    frame = pd.DataFrame([{"source": "x", "kind": "source", "delta_m": 1.0}])
    with pytest.raises(ConfigError, match="no fixed-weights runs"):
        fixed_weights_spread(frame, tmp_path / "fig")


@pytest.mark.slow
def test_the_command_extracts_from_each_lr_trains_and_draws(tmp_path, capsys):
    import pandas as pd

    from smto.cli import main
    from smto.evaluation.fixed_weights import FixedWeights
    from smto.train import RunConfig, train

    runs = tmp_path / "runs"
    toy = {"problem": "toy_regression", "epochs": 1, "batch_size": 64}
    toy["problem_options"] = {"sizes": [128, 64, 64]}
    for tasks in ("T1", "T2"):
        train(RunConfig(**toy, tasks=tasks, method="unit_scal"), runs)
    for lr in (0.01, 0.001):
        train(RunConfig(**toy, tasks="T1_T2", method="cagrad", lr=lr), runs)
    args = ["fixed-weights", str(runs), "--problem", "toy_regression", "--tasks", "T1_T2"]
    args += ["--method", "cagrad", "--quiet"]
    assert main([*args, "--source-lr", "0.001", "--save", str(tmp_path / "w.json")]) == 0
    assert FixedWeights.load(tmp_path / "w.json").sources[0].startswith("toy_regression")
    out = tmp_path / "fig" / "spread"
    assert main([*args, "--source", "all", "--train", "--figure", str(out)]) == 0
    assert "lr=0.01:" in capsys.readouterr().out
    rows = pd.read_csv(out.with_suffix(".csv"))
    assert sorted(set(rows["source"])) == ["lr=0.001", "lr=0.01"]
    assert (rows.groupby("source")["kind"].apply(set) == {"fixed", "source"}).all()
    assert out.with_suffix(".png").stat().st_size > 1000
