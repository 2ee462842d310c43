"""The Cityscapes problem on a fake tree: options, losses, metrics by hand, training, resuming,
``smto train`` and ``smto report``."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from data import fake_cityscapes as fake
from smto.errors import ConfigError
from smto.problems import Batch, create_problem
from smto.problems.cityscapes import (
    Cityscapes,
    CityscapesMeter,
    confusion_matrix,
    segmentation_scores,
    task_loss,
)
from smto.problems.delta_m import delta_m
from smto.train import RunConfig, load_run, run_dir, train

SMALL = {"shape": [64, 32], "workers": 0}


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data directory with a fake tree (10 official train, 4 val images) and split files."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SMTO_CACHE", raising=False)
    monkeypatch.delenv("SMTO_CITYSCAPES", raising=False)
    tree = fake.write_tree(tmp_path / "data" / "cityscapes")
    fake.write_split_files(tmp_path / "data" / "seed_splits" / "cityscapes", tree)
    monkeypatch.setenv("SMTO_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def quiet_problem(tasks: str = "S_D_I", **options) -> Cityscapes:
    return Cityscapes(tasks, **{**SMALL, **options})


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shape": [64]}, "shape must be"),
        ({"shape": [4, 32]}, "shape must be"),
        ({"classes": 20}, "classes must be one of"),
        ({"backbone": "resnet34"}, "backbone must be one of"),
        ({"workers": -1}, "workers must be"),
        ({"aspp_dropout": 1.0}, "aspp_dropout"),
        ({"augment": True}, "augment must be one of"),
        ({"seed": 3}, "no effect with split='original'"),
        ({"split": "seed", "split_dir": "x"}, "split_dir is read only"),
        ({"pretrained": 3}, "pretrained must be"),
        ({"colour": 1}, "unknown option"),
        ({"architecture": "unet"}, "architecture must be one of"),
        ({"architecture": "segnet", "backbone": "resnet50"}, "backbone apply to"),
        ({"architecture": "segnet", "pretrained": "w.pth"}, "pretrained apply to"),
        ({"architecture": "segnet", "shape": [80, 32]}, "multiples of 32"),
    ],
)
def test_options_are_checked_before_any_data_is_loaded(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        create_problem("cityscapes", "S_D_I", root=str(tmp_path / "absent"), **options)


def test_the_splits_are_the_split_files_and_limits(data_dir):
    problem = quiet_problem()
    assert [problem.split_size(s) for s in ("train", "val", "test")] == [8, 2, 4]
    limited = quiet_problem(limits=(3, 1, None))
    assert [limited.split_size(s) for s in ("train", "val", "test")] == [3, 1, 4]


def test_the_root_comes_from_the_environment(data_dir, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere"
    (data_dir / "cityscapes").rename(moved)
    with pytest.raises(Exception, match="no Cityscapes directory"):
        quiet_problem()
    monkeypatch.setenv("SMTO_CITYSCAPES", str(moved))
    assert quiet_problem().split_size("train") == 8


def test_the_five_metrics_of_delta_m():
    metrics = {t: Cityscapes.task_metrics(t) for t in Cityscapes.all_tasks}
    assert [m.name for m in metrics["S"]] == ["pixel_accuracy", "miou"]
    assert [m.name for m in metrics["D"]] == ["abs_err", "rel_err"]
    assert [m.name for m in metrics["I"]] == ["abs_err"]
    reference = {"S": {"pixel_accuracy": 0.8, "miou": 0.5}, "D": {"abs_err": 2, "rel_err": 1},
                 "I": {"abs_err": 4}}  # fmt: skip
    values = {"S": {"pixel_accuracy": 0.88, "miou": 0.45}, "D": {"abs_err": 1, "rel_err": 1},
              "I": {"abs_err": 5}}  # fmt: skip
    # S: (+10 % - 10 %) / 2 = 0; D: (+50 % + 0) / 2 = 25 %; I: -25 %; mean 0
    assert delta_m(values, reference, metrics) == pytest.approx(0.0, abs=1e-12)
    values["D"]["rel_err"] = 0.4  # D: (50 + 60) / 2 = 55; (0 + 55 - 25) / 3 = 10
    assert delta_m(values, reference, metrics) == pytest.approx(10.0)


# ------------------------------------------------------------------ losses and metrics


def test_segmentation_scores_from_a_hand_computed_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1], [2, -1, 0, 1]])
    prediction = torch.tensor([[0, 1, 1, 1], [0, 3, 0, 3]])
    confusion = confusion_matrix(prediction, target, 5)
    expected = torch.zeros(5, 5, dtype=torch.long)
    for t, p in ((0, 0), (0, 1), (1, 1), (1, 1), (2, 0), (0, 0), (1, 3)):
        expected[t, p] += 1
    assert torch.equal(confusion, expected)
    scores = segmentation_scores(confusion)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 7)
    # IoU: class 0: 2 / (3 + 3 - 2) = 1/2; 1: 2 / (3 + 3 - 2) = 1/2; 2: 0 / 1; 3 (only
    # predicted): 0 / 1; 4 (absent from both): no IoU, left out of the mean
    assert scores["miou"] == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)


def test_the_meter_uses_one_confusion_matrix_over_the_split_not_per_batch_means():
    classes = 3
    meter = CityscapesMeter(("S", "D", "I"), classes)
    batches = []
    for size, seed in ((1, 0), (3, 1)):
        g = torch.Generator().manual_seed(seed)
        target_s = torch.randint(-1, classes, (size, 4, 5), generator=g)
        target_d = torch.rand(size, 4, 5, generator=g)
        target_d[target_d < 0.2] = math.nan
        target_i = torch.randn(size, 2, 4, 5, generator=g)
        target_i[:, :, :2] = math.nan
        outputs = {
            "S": torch.randn(size, classes, 4, 5, generator=g),
            "D": torch.rand(size, 1, 4, 5, generator=g),
            "I": torch.randn(size, 2, 4, 5, generator=g),
        }
        batch = Batch(None, {"S": target_s, "D": target_d, "I": target_i}, size)
        meter.update(outputs, batch)
        batches.append((outputs, batch))
    whole = {k: torch.cat([o[k] for o, _ in batches]) for k in "SDI"}
    targets = {k: torch.cat([b.targets[k] for _, b in batches]) for k in "SDI"}
    result = meter.compute()
    expected_s = segmentation_scores(confusion_matrix(whole["S"].argmax(1), targets["S"], classes))
    assert result["S"] == pytest.approx(expected_s)
    d, td = whole["D"][:, 0], targets["D"]
    valid = ~torch.isnan(td)
    assert result["D"]["abs_err"] == pytest.approx(float((d - td).abs()[valid].mean()))
    assert result["D"]["rel_err"] == pytest.approx(float(((d - td).abs() / td)[valid].mean()))
    valid_i = ~torch.isnan(targets["I"])
    expected_i = float((whole["I"] - targets["I"]).abs()[valid_i].mean())
    assert result["I"]["abs_err"] == pytest.approx(expected_i)


def test_losses_ignore_unlabelled_pixels_and_are_zero_without_any():
    logits = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    target[0, 0] = -1
    kept = target >= 0
    expected = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[kept], target[kept])
    assert task_loss("S", logits, target) == pytest.approx(float(expected))
    assert task_loss("S", logits, torch.full_like(target, -1)) == 0
    prediction = torch.randn(2, 1, 3, 3, requires_grad=True)
    disparity = torch.rand(2, 3, 3)
    disparity[1] = math.nan
    loss = task_loss("D", prediction, disparity)
    expected_d = float((prediction.detach()[0, 0] - disparity[0]).abs().mean())
    assert float(loss.detach()) == pytest.approx(expected_d)
    loss.backward()
    assert torch.isfinite(prediction.grad).all() and (prediction.grad[1] == 0).all()
    assert task_loss("I", torch.randn(1, 2, 3, 3), torch.full((1, 2, 3, 3), math.nan)) == 0


# ------------------------------------------------------------------ batches


def test_training_batches_are_augmented_and_the_same_with_workers(data_dir):
    serial, parallel = quiet_problem(), quiet_problem(workers=2)

    def epoch(problem, seed=None, split="train"):
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return list(problem.batches(split, 3, generator))

    plain = epoch(serial)
    assert [b.size for b in plain] == [3, 3, 2]
    assert plain[0].inputs.shape == (3, 3, 32, 64) and plain[0].targets["I"].shape == (3, 2, 32, 64)
    first, again, other = epoch(serial, 1), epoch(parallel, 1), epoch(serial, 2)
    for a, b in zip(first, again):
        assert torch.equal(a.inputs, b.inputs)
        assert all(
            torch.equal(a.targets[t].nan_to_num(7), b.targets[t].nan_to_num(7)) for t in "SDI"
        )
    assert any(not torch.equal(a.inputs, b.inputs) for a, b in zip(first, other))
    ignored = sum(int((b.targets["S"] == -1).sum()) for b in first)
    assert ignored > sum(int((b.targets["S"] == -1).sum()) for b in plain)  # rotated-in pixels
    # val batches may be shuffled but are never augmented: the same images as unshuffled
    sums = [
        sorted(float(x.sum()) for b in epoch(serial, s, "val") for x in b.inputs) for s in (None, 1)
    ]
    assert sums[0] == sums[1]


def test_a_last_training_batch_of_one_is_dropped(data_dir):
    """BatchNorm cannot train on one sample (the ASPP's image pooling): training batches drop
    a last batch of one; evaluation keeps every sample."""
    problem = quiet_problem(limits=(5, None, None))
    training = problem.batches("train", 4, torch.Generator().manual_seed(0))
    assert [b.size for b in training] == [4]
    assert [b.size for b in problem.batches("train", 4)] == [4, 1]
    assert [b.size for b in problem.batches("train", 3, torch.Generator())] == [3, 2]


def test_the_model_and_the_dropout_option(data_dir):
    problem = quiet_problem("S_D", classes=7)
    with pytest.warns(UserWarning, match="scratch"):
        model = problem.make_model()
    batch = next(problem.batches("val", 2))
    model.eval()
    _, outputs = model(batch.inputs)
    assert outputs["S"].shape == (2, 7, 32, 64) and outputs["D"].shape == (2, 1, 32, 64)
    assert set(outputs) == {"S", "D"}
    with pytest.raises(ConfigError, match="aspp_dropout"):
        problem.make_model(dropout=0.1)


def test_elich_et_als_segnet_on_cityscapes(data_dir):
    problem = quiet_problem("S_D", classes=7, architecture="segnet", augment="scale_crop")
    model = problem.make_model()
    assert type(model.encoder).__name__ == "SegNetEncoder"
    batch = next(problem.batches("train", 2, torch.Generator().manual_seed(0)))
    _, outputs = model(batch.inputs)
    assert outputs["S"].shape == (2, 7, 32, 64) and outputs["D"].shape == (2, 1, 32, 64)
    problem.losses(outputs, batch.targets).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ConfigError, match="SegNet has no dropout"):
        problem.make_model(dropout=0.1)


# ------------------------------------------------------------------ training


def config(method: str = "unit_scal", epochs: int = 2, tasks: str = "S_D_I", **extra) -> RunConfig:
    return RunConfig(
        problem="cityscapes",
        tasks=tasks,
        method=method,
        epochs=epochs,
        batch_size=4,
        eval_batch_size=4,
        lr=1e-3,
        problem_options=dict(SMALL, **extra.pop("problem_options", {})),
        **extra,
    )


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_training_learns_and_a_resumed_run_gives_identical_numbers(data_dir, tmp_path):
    warnings.simplefilter("ignore", UserWarning)
    problem = quiet_problem()
    run = config("imtl", epochs=3)
    full = train(run, tmp_path / "full", problem=problem)
    assert full.status == "completed"
    losses = [sum(e["train_loss"].values()) for e in full.history]
    assert losses[-1] < losses[0], losses
    assert set(full.history[-1]["val"]) == {"S", "D", "I"}

    def stop_after_one(record):
        if len(record.history) == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train(run, tmp_path / "cut", problem=problem, on_epoch_end=stop_after_one)
    assert load_run(run_dir(run, tmp_path / "cut")).status == "failed"
    resumed = train(run, tmp_path / "cut", problem=problem)
    times = ("seconds", "train_seconds")
    strip = lambda r: [{k: v for k, v in e.items() if k not in times} for e in r.history]  # noqa: E731
    assert strip(resumed) == strip(full)
    assert resumed.best_test == full.best_test


def test_smto_train_reference_multi_task_and_report(data_dir, tmp_path):
    from smto.cli import main

    root = tmp_path / "runs"
    common = ["--problem", "cityscapes", "--epochs", "1", "--batch-size", "4",
              "--eval-batch-size", "4", "--problem-option", "shape=(64,32)",
              "--problem-option", "workers=0", "--out", str(root), "--quiet"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for task in ("S", "D"):
            assert main(["train", "--tasks", task, "--method", "unit_scal", *common]) == 0
        for method in ("unit_scal", "imtl"):
            assert main(["train", "--tasks", "S_D", "--method", method, *common]) == 0
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match="by the mean validation loss"):  # no --reference
        code = main(["report", str(root), "--problem", "cityscapes", "--tasks", "S_D",
                     "--out", str(out), "--no-figures"])  # fmt: skip
    assert code == 0
    header = (out / "test_metrics.md").read_text().splitlines()[0]
    assert "pixel_accuracy" in header and "miou" in header and "rel_err" in header
    assert "Δm" in header


def test_pretrained_weights_given_on_the_command_line_are_the_problem_option(data_dir, tmp_path):
    from smto.cli import main

    code = main(["train", "--problem", "cityscapes", "--tasks", "S", "--epochs", "1",
                 "--pretrained", str(tmp_path / "absent.pth"), "--problem-option",
                 "shape=(64,32)", "--out", str(tmp_path / "runs"), "--quiet"])  # fmt: skip
    assert code == 2  # a missing weights file is a one-line error


@pytest.mark.slow
def test_the_progression_figure_from_two_small_steps(data_dir, tmp_path):
    """Two steps as the study's progression has them (7 classes S_D, then 19 classes S_D_I),
    each with its single-task references and two seeds of Unit. Scal. and IMTL, then
    ``smto progression``: one Delta_m row and one row per task for each step."""
    import pandas as pd

    from smto.cli import main
    from smto.evaluation.reference import single_task_reference
    from smto.train.records import find_runs

    warnings.simplefilter("ignore", UserWarning)
    steps = {"7c-S_D": ("S_D", 7), "19c-S_D_I": ("S_D_I", 19)}
    for label, (tasks, classes) in steps.items():
        root = tmp_path / label
        options = {"classes": classes}
        problems = {t: quiet_problem(t, **options) for t in [*tasks.split("_"), tasks]}
        for task in tasks.split("_"):
            train(
                config(tasks=task, epochs=1, problem_options=options), root, problem=problems[task]
            )
        reference = single_task_reference([load_run(d) for d in find_runs(root)])
        for method in ("unit_scal", "imtl"):
            for seed in (0, 1):
                run = config(method, 1, tasks, seed=seed, reference=reference.val,
                             problem_options=options)  # fmt: skip
                assert train(run, root, problem=problems[tasks]).status == "completed"
    out = tmp_path / "progression"
    args = ["progression", "--problem", "cityscapes", "--out", str(out)]
    for label in steps:
        args += ["--step", f"{label}={tmp_path / label}"]
    assert main(args) == 0
    assert (out / "progression.csv").is_file() and (out / "progression.png").is_file()
    frame = pd.read_csv(out / "progression.csv")
    assert list(frame["step"]) == ["7c-S_D"] * 3 + ["19c-S_D_I"] * 4
    assert list(frame["quantity"]) == ["delta_m", "S", "D", "delta_m", "S", "D", "I"]
    assert (frame["n_method"] == 2).all() and frame["gain_se"].notna().all()
    rows = frame.set_index(["step", "quantity"])
    gain = rows.loc[("19c-S_D_I", "delta_m")]
    assert gain["gain"] == pytest.approx(gain["method_mean"] - gain["baseline_mean"])
