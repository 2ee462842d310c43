"""smto.evaluation.robustness (Elich et al., App. A6): the Eq. 26 scores on hand values, and
the whole protocol on runs trained on a fake CelebA tree: the frozen backbone, the resume,
the runs left out, and `smto robustness`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data import fake_celeba as fake
from smto.errors import ConfigError
from smto.evaluation import robustness as R
from smto.problems import Metric, create_problem
from smto.train import RunConfig, train
from smto.train.records import BEST_MODEL

UP, DOWN = Metric("miou", True), Metric("abs_err", False)
METRICS = {"S": (UP,), "D": (DOWN,)}


def result(tasks, method, seed, clean, corrupted):
    config = {"problem": "p", "tasks": tasks, "method": method, "seed": seed}
    return R.RunRobustness(f"{method}-{tasks}-{seed}", config, clean, "completed",
                           corrupted=corrupted)  # fmt: skip


def hand_results():
    """MTL (two seeds) and the two STL models: corrupted values chosen so that every relative
    change is simple (module docstring of the test: r = (M_c - M) / M)."""
    mtl = [
        result("S_D", "unit_scal", seed, {"S": {"miou": 0.5}, "D": {"abs_err": 0.1}}, {
            "fog": {"1": {"S": {"miou": 0.4}, "D": {"abs_err": 0.2}}},
            "snow": {"1": {"S": {"miou": 0.3}, "D": {"abs_err": 0.3}}},
        })
        for seed in (0, 1)
    ]  # fmt: skip
    mtl[1].corrupted["fog"]["1"]["S"]["miou"] = 0.2  # seed 1: r = -0.6 on fog
    stl = [
        result("S", "unit_scal", 0, {"S": {"miou": 0.6}}, {
            "fog": {"1": {"S": {"miou": 0.3}}}, "snow": {"1": {"S": {"miou": 0.3}}}}),
        result("D", "unit_scal", 0, {"D": {"abs_err": 0.1}}, {
            "fog": {"1": {"D": {"abs_err": 0.15}}}, "snow": {"1": {"D": {"abs_err": 0.15}}}}),
    ]  # fmt: skip
    return mtl + stl


def test_eq26_is_the_signed_difference_of_mean_relative_changes():
    scores = R.scores_frame(hand_results(), METRICS)
    assert len(scores) == 2 * 2 * 2 + 2 + 2  # MTL: 2 seeds x 2 corruptions x 2 metrics
    frame = R.eq26_frame(scores, METRICS)
    # S: MTL r = mean(-0.2, -0.4, -0.6, -0.4) = -0.4, STL -0.5; higher is better: +0.1.
    assert frame.loc["unit_scal", "S/miou"] == pytest.approx(0.1)
    # D: MTL r = mean(1, 2, 1, 2) = 1.5, STL 0.5; lower is better: -(1.5 - 0.5) = -1.
    assert frame.loc["unit_scal", "D/abs_err"] == pytest.approx(-1.0)
    assert frame.loc["unit_scal", R.MEAN] == pytest.approx(-0.45)
    by = R.eq26_frame(scores, METRICS, by=("corruption",))
    # fog: S MTL mean(-0.2, -0.6) = -0.4 vs -0.5; D 1.0 vs 0.5.
    assert by.loc[("unit_scal", "fog"), "S/miou"] == pytest.approx(0.1)
    assert by.loc[("unit_scal", "fog"), "D/abs_err"] == pytest.approx(-0.5)
    assert by.loc[("unit_scal", "snow"), "D/abs_err"] == pytest.approx(-1.5)


def test_a_task_without_a_single_task_run_is_nan_and_absolute_scores_are_means():
    results = [r for r in hand_results() if r.config["tasks"] != "D"]
    scores = R.scores_frame(results, METRICS)
    frame = R.eq26_frame(scores, METRICS)
    assert math.isnan(frame.loc["unit_scal", "D/abs_err"])
    assert math.isnan(frame.loc["unit_scal", R.MEAN])
    absolute = R.absolute_frame(R.scores_frame(hand_results(), METRICS))
    assert absolute.loc["unit_scal", "S/miou"] == pytest.approx((0.4 + 0.3 + 0.2 + 0.3) / 4)
    assert absolute.loc["STL", "D/abs_err"] == pytest.approx(0.15)
    tables = R.robustness_tables(R.scores_frame(hand_results(), METRICS), METRICS)
    names = ["robustness_relative", "robustness_relative_by_corruption", "robustness_absolute"]
    assert [t.name for t in tables] == names
    assert "| unit_scal: fog |" in tables[1].markdown()
    assert tables[2].higher_is_better == {"S/miou": True, "D/abs_err": False}


def test_unfinished_results_are_not_scored_and_settings_are_checked():
    results = hand_results()
    results[0].status = "diverged"
    assert len(R.scores_frame(results, METRICS)) == 2 * 2 + 2 + 2
    with pytest.raises(ConfigError, match="no completed"):
        R.eq26_frame(R.scores_frame([], METRICS), METRICS)
    with pytest.raises(ConfigError, match="unknown corruption"):
        R.RobustnessSettings(corruptions=("rain",))
    with pytest.raises(ConfigError, match="severity"):
        R.RobustnessSettings(severities=(6,))
    with pytest.raises(ConfigError, match="repeat"):
        R.RobustnessSettings(corruptions=("fog", "fog"))
    with pytest.raises(ConfigError, match="epochs"):
        R.RobustnessSettings(epochs=-1)
    assert R.RobustnessSettings().key() != R.RobustnessSettings(seed=1).key()


# ------------------------------------------------------------------ on trained runs

SMALL = {"size": 32, "workers": 0}
SETTINGS = R.RobustnessSettings(corruptions=("impulse_noise", "fog"), severities=(1, 5), epochs=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One multi-task run (Smiling_Male) and the two single-task runs, on a fake tree."""
    tmp = tmp_path_factory.mktemp("robustness")
    fake.write_tree(tmp / "data" / "celeba")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMTO_DATA", str(tmp / "data"))
        patch.setenv("SMTO_CACHE", str(tmp / "cache"))
        for tasks in ("Smiling_Male", "Smiling", "Male"):
            config = RunConfig(problem="celeba", tasks=tasks, epochs=1, batch_size=10,
                               eval_batch_size=10, problem_options=SMALL)  # fmt: skip
            assert train(config, tmp / "runs").status == "completed"
    return tmp


@pytest.fixture
def env(runs, monkeypatch):
    monkeypatch.setenv("SMTO_DATA", str(runs / "data"))
    monkeypatch.setenv("SMTO_CACHE", str(runs / "cache"))
    return runs


def run_dirs(root):
    return sorted(p.parent for p in (root / "runs").rglob("record.json"))


def test_the_heads_are_fine_tuned_on_a_frozen_backbone_and_resume_is_free(env, monkeypatch):
    directory = next(d for d in run_dirs(env) if "Smiling_Male" in str(d))
    first = R.evaluate_run(directory, SETTINGS)
    assert first.status == "completed"
    assert set(first.corrupted) == {"impulse_noise", "fog"}
    assert all(set(v) == {"1", "5"} for v in first.corrupted.values())
    best = torch.load(directory / BEST_MODEL, weights_only=True)
    tuned = torch.load(directory / f"robustness-{SETTINGS.key()}-model.pt", weights_only=True)
    encoder = [k for k in best if k.startswith("encoder.")]
    heads = [k for k in best if k.startswith("heads.") and best[k].is_floating_point()]
    assert encoder and heads
    assert all(torch.equal(best[k], tuned[k]) for k in encoder), "the backbone changed"
    assert any(not torch.equal(best[k], tuned[k]) for k in heads), "the heads did not train"
    # Stronger corruption, lower accuracy is not guaranteed on a tiny model; the scores differ.
    fog = first.corrupted["fog"]
    assert fog["1"] != fog["5"]
    monkeypatch.setattr(R, "finetune_heads", lambda *a, **k: pytest.fail("fine-tuned again"))
    monkeypatch.setattr(R, "evaluate_split", lambda *a, **k: pytest.fail("evaluated again"))
    again = R.evaluate_run(directory, SETTINGS)
    assert again.corrupted == first.corrupted


def test_with_no_fine_tuning_the_clean_score_is_the_runs_own(env):
    directory = next(d for d in run_dirs(env) if "Smiling_Male" in str(d))
    settings = R.RobustnessSettings(corruptions=("fog",), severities=(1,), epochs=0)
    out = R.evaluate_run(directory, settings)
    for task, values in out.clean.items():
        for name, value in values.items():
            assert out.finetuned_clean[task][name] == pytest.approx(value, abs=1e-6)


def test_a_killed_evaluation_resumes_without_redoing_what_is_done(env, monkeypatch):
    directory = next(d for d in run_dirs(env) if "Smiling_Male" not in str(d))
    settings = R.RobustnessSettings(corruptions=("impulse_noise", "fog"), severities=(1, 5),
                                    epochs=1, seed=3)  # fmt: skip
    real = R.evaluate_split
    calls = []

    def dies_at_the_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "evaluate_split", dies_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        R.evaluate_run(directory, settings)
    partial = R.RunRobustness.load(R.result_path(directory, settings))
    assert partial.status == "running" and len(partial.corrupted["impulse_noise"]) == 2
    monkeypatch.setattr(R, "finetune_heads", lambda *a, **k: pytest.fail("fine-tuned again"))
    calls.clear()
    monkeypatch.setattr(R, "evaluate_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    done = R.evaluate_run(directory, settings)
    assert done.status == "completed" and len(calls) == 2  # fog 1 and 5 only


def test_runs_that_cannot_be_evaluated_are_left_out_with_a_reason(env, tmp_path):
    directory = run_dirs(env)[0]
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "record.json").write_text((directory / "record.json").read_text())
    with pytest.warns(UserWarning, match="no saved best model"):
        assert R.robustness_of_runs([tmp_path / "copy"], SETTINGS) == []
    toy = train(RunConfig(problem="toy_regression", tasks="T1_T2", epochs=1), tmp_path / "toy")
    toy_dir = next((tmp_path / "toy").rglob("record.json")).parent
    assert toy.status == "completed"
    with pytest.raises(ConfigError, match="not an image problem"):
        R.evaluate_run(toy_dir, SETTINGS)


def test_an_image_problem_reads_replaced_images_for_one_split_only(env):
    problem = create_problem("celeba", "Smiling", **SMALL)
    images = problem.split_images("test")
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
    dark = np.zeros_like(images)
    copy = problem.with_split_images("test", dark)
    batch = next(copy.batches("test", 100))
    clean = next(problem.batches("test", 100))
    assert not torch.equal(batch.inputs, clean.inputs)
    assert torch.allclose(batch.inputs, batch.inputs[:1].expand_as(batch.inputs))  # all black
    assert torch.equal(batch.targets["Smiling"], clean.targets["Smiling"])
    assert np.array_equal(problem.split_images("test"), images), "the original changed"
    val = next(problem.batches("val", 100)).inputs
    assert torch.equal(next(copy.batches("val", 100)).inputs, val)
    with pytest.raises(ConfigError, match="shape"):
        problem.with_split_images("test", dark[:1])
    with pytest.raises(ConfigError, match="uint8"):
        problem.with_split_images("test", dark.astype(np.float32))


def test_the_command_writes_the_tables(env, capsys):
    from smto.cli import main

    out = env / "report"
    code = main(["robustness", str(env / "runs"), "--corruptions", "impulse_noise", "fog",
                 "--severities", "1", "5", "--epochs", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Eq. 26" in printed and "| unit_scal |" in printed
    assert {p.name for p in out.iterdir()} >= {
        "scores.csv", "robustness_relative.csv", "robustness_relative.md",
        "robustness_absolute.tex", "robustness_relative_by_corruption.md"}  # fmt: skip
    import pandas as pd

    relative = pd.read_csv(out / "robustness_relative.csv", index_col=0)
    assert list(relative.index) == ["unit_scal"]
    assert {"Smiling/accuracy", "Male/f1", "mean"} <= set(relative.columns)
    assert relative.notna().all().all()


def test_the_chosen_configurations_are_evaluated_and_a_mix_is_refused(tmp_path, monkeypatch):
    import eval_records as E

    from smto.evaluation.reference_values import Reference
    from smto.problems import PROBLEMS

    monkeypatch.setitem(PROBLEMS, "fake", E.FakeProblem)
    good = {"A": {"acc": 0.9}, "C": {"err": 0.1}}
    bad = {"A": {"acc": 0.1}, "C": {"err": 0.9}}
    runs = {
        "good": E.multi_record("good", good, good, lr=0.01),
        "bad": E.multi_record("bad", bad, bad, lr=0.1),
        "st1": E.single_record("st1", "A", {"acc": (0.5, 0.5)}, lr=0.01),
        "st2": E.single_record("st2", "A", {"acc": (0.4, 0.4)}, lr=0.1),
        "left": E.single_record("left", "C", {"err": (0.5, 0.5)}, status="failed"),
    }
    for name, record in runs.items():
        (tmp_path / name).mkdir()
        record.save(tmp_path / name)
    directories = [tmp_path / n for n in runs]
    with pytest.raises(ConfigError, match="method unit_scal on A_C has 2 configurations"):
        R.chosen_runs(directories)
    values = {"A": {"acc": 0.5}, "C": {"err": 0.5}}
    reference = Reference("fake", values, values, {"A": {"acc": ["st1"]}, "C": {"err": []}})
    chosen = {p.name for p in R.chosen_runs(directories, reference)}
    assert chosen == {"good", "st1", "left"}  # "left" is left out later, with its reason
    assert {p.name for p in R.chosen_runs([tmp_path / "bad", tmp_path / "st2"])} == {
        "bad", "st2"}  # fmt: skip


def test_the_command_says_when_no_run_can_be_evaluated(env, tmp_path, capsys):
    from smto.cli import main

    (tmp_path / "runs" / "copy").mkdir(parents=True)
    record = run_dirs(env)[0] / "record.json"
    (tmp_path / "runs" / "copy" / "record.json").write_text(record.read_text())
    with pytest.warns(UserWarning, match="no saved best model"):
        assert main(["robustness", str(tmp_path / "runs"), "--corruptions", "fog"]) == 2
    assert "could be evaluated" in capsys.readouterr().err
