"""The NYUv2 problem on a fake tree: options, losses and metrics by hand, batches, the models,
a small training and ``smto train``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from data import fake_nyuv2 as fake
from smto.errors import ConfigError, MissingError
from smto.problems import Batch
from smto.problems.cityscapes import confusion_matrix, segmentation_scores, task_loss
from smto.problems.nyuv2 import NYUv2, NYUv2Meter, median, normal_loss, nyuv2_loss
from smto.train import RunConfig, train

SMALL = {"shape": [64, 32], "workers": 0, "split": "seed"}
DEEPLAB = {"architecture": "deeplab", "backbone": "resnet18"}


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data directory with a fake tree (12 official train, 4 official test images)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SMTO_CACHE", raising=False)
    monkeypatch.delenv("SMTO_NYUV2", raising=False)
    fake.write_tree(tmp_path / "data" / "nyuv2")
    monkeypatch.setenv("SMTO_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def problem(tasks: str = "S_D_N", **options) -> NYUv2:
    return NYUv2(tasks, **{**SMALL, **options})


# ------------------------------------------------------------------ options and splits


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shape": [64]}, "shape must be"),
        ({"shape": [48, 32]}, "multiples of 32"),
        ({"architecture": "unet"}, "architecture must be one of"),
        ({"backbone": "resnet34", "architecture": "deeplab"}, "backbone must be one of"),
        ({"backbone": "resnet18"}, "apply to architecture='deeplab' only"),
        ({"pretrained": "torchvision"}, "apply to architecture='deeplab' only"),
        ({"aspp_dropout": 0.1}, "apply to architecture='deeplab' only"),
        ({"aspp_dropout": 1.0, "architecture": "deeplab"}, "aspp_dropout"),
        ({"workers": -1}, "workers must be"),
        ({"augment": "yes"}, "augment must be"),
        ({"split": "random"}, "split must be one of"),
        ({"seed": 3}, "no effect with split='libmtl'"),
        ({"limits": (0, None, None)}, "limits"),
        ({"pretrained": 3, "architecture": "deeplab"}, "pretrained must be"),
        ({"colour": 1}, "unknown option"),
    ],
)
def test_options_are_checked_before_any_data_is_loaded(tmp_path, options, message):
    from smto.problems import create_problem

    with pytest.raises(ConfigError, match=message):
        create_problem("nyuv2", "S_D_N", root=str(tmp_path / "absent"), **options)


def test_the_problem_is_registered_with_its_defaults():
    from smto.problems import PROBLEMS, problem_options

    assert PROBLEMS["nyuv2"] is NYUv2 and NYUv2.default_tasks() == "S_D_N"
    defaults = problem_options("nyuv2")
    assert defaults["architecture"] == "segnet" and defaults["split"] == "libmtl"
    assert tuple(defaults["shape"]) == (384, 288) and defaults["augment"] is True


def test_the_splits_seeded_and_libmtls_with_limits(data_dir):
    seeded = problem()
    assert [seeded.split_size(s) for s in ("train", "val", "test")] == [9, 3, 4]
    # LibMTL's list on a 12-image tree: its first 3 train images (0, 1, 2) and first val (3)
    limited = problem(split="libmtl", limits=(3, 1, 2))
    assert [limited.split_size(s) for s in ("train", "val", "test")] == [3, 1, 2]
    val = next(limited.batches("val", 1))
    expected = torch.from_numpy(fake.read(data_dir / "nyuv2", "train", "image", 3))
    assert torch.equal(val.inputs[0], expected.permute(2, 0, 1))
    with pytest.raises(MissingError, match=r"train.image.12\.npy.*files missing in all"):
        problem(split="libmtl")


def test_the_root_comes_from_the_environment(data_dir, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere"
    (data_dir / "nyuv2").rename(moved)
    with pytest.raises(MissingError, match="no NYUv2 directory"):
        problem()
    monkeypatch.setenv("SMTO_NYUV2", str(moved))
    assert problem().split_size("train") == 9
    assert problem(root=str(moved)).split_size("test") == 4


def test_metrics_and_directions():
    names = {t: [(m.name, m.higher_is_better) for m in NYUv2.task_metrics(t)] for t in "SDN"}
    assert names["S"] == [("miou", True), ("pixel_accuracy", True)]
    assert names["D"] == [("abs_err", False), ("rel_err", False)]
    assert names["N"] == [("mean_angle", False), ("median_angle", False), ("within_11.25", True),
                          ("within_22.5", True), ("within_30", True)]  # fmt: skip


def test_loss_types(data_dir):
    assert problem().loss_types() == ("classification", "l1", "cosine")
    assert problem("N_S").loss_types() == ("cosine", "classification")


# ------------------------------------------------------------------ losses and metrics


def test_the_normals_loss_is_one_minus_the_cosine_over_valid_pixels():
    output = torch.zeros(1, 3, 1, 4, requires_grad=True)
    with torch.no_grad():
        output[0, :, 0, 0] = torch.tensor([2.0, 0.0, 0.0])  # along the target: 1 - 1 = 0
        output[0, :, 0, 1] = torch.tensor([0.0, 5.0, 0.0])  # orthogonal: 1 - 0 = 1
        output[0, :, 0, 2] = torch.tensor([-1.0, 1.0, 0.0])  # 135 degrees: 1 + 1/sqrt(2)
        output[0, :, 0, 3] = torch.tensor([3.0, 1.0, 2.0])  # target invalid: ignored
    target = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).repeat(1, 1, 1, 4)
    target[0, :, 0, 3] = math.nan
    loss = normal_loss(output, target)
    assert float(loss.detach()) == pytest.approx((0 + 1 + 1 + 1 / math.sqrt(2)) / 3)
    assert nyuv2_loss("N", output, target) == loss
    loss.backward()
    assert torch.isfinite(output.grad).all() and (output.grad[0, :, 0, 3] == 0).all()
    assert normal_loss(output, torch.full_like(target, math.nan)) == 0


def test_the_depth_and_segmentation_losses_are_cityscapes():
    prediction = torch.tensor([[[[2.0, 100.0], [1.0, 4.0]]]])
    depth = torch.tensor([[[1.0, math.nan], [2.0, 4.0]]])
    assert float(nyuv2_loss("D", prediction, depth)) == pytest.approx(2 / 3)
    logits = torch.randn(2, 13, 3, 3)
    labels = torch.randint(-1, 13, (2, 3, 3))
    assert torch.equal(nyuv2_loss("S", logits, labels), task_loss("S", logits, labels))


def test_the_median_is_numpys():
    for values in (
        [3.0],
        [4.0, 1.0],
        [5.0, 1.0, 2.0, 9.0],
        list(np.random.default_rng(0).random(101)),
    ):
        tensor = torch.tensor(values, dtype=torch.float32)
        assert median(tensor) == pytest.approx(float(np.median(tensor.numpy())), abs=1e-7)
    assert math.isnan(median(torch.zeros(0)))


def normals_at(angles: list[float], scale: float = 3.0) -> torch.Tensor:
    """(1, 3, 1, n) predictions at ``angles`` (degrees) from the target (0, 0, 1), not unit."""
    radians = torch.deg2rad(torch.tensor(angles, dtype=torch.float64))
    vectors = torch.stack([torch.sin(radians), torch.zeros_like(radians), torch.cos(radians)])
    return (scale * vectors).float().view(1, 3, 1, -1)


def test_the_meter_over_a_split_by_hand():
    """Two batches with different numbers of valid pixels: each metric is over the pixels of
    the whole split, not a mean of the batches' values."""
    meter = NYUv2Meter(("S", "D", "N"))
    up = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    # batch 1: angles 5 and 40, one invalid pixel; batch 2: angles 10, 20, 25, 90
    first_n = normals_at([5.0, 40.0, 7.0])
    target_1 = up.repeat(1, 1, 1, 3)
    target_1[..., 2] = math.nan
    second_n = normals_at([10.0, 20.0, 25.0, 90.0], scale=0.5)
    target_2 = up.repeat(1, 1, 1, 4)
    depth_1, prediction_1 = (
        torch.tensor([[[1.0, math.nan, 2.0]]]),
        torch.tensor([[[[2.0, 9.0, 1.0]]]]),
    )
    depth_2 = torch.tensor([[[4.0, 5.0, math.nan, 10.0]]])
    prediction_2 = torch.tensor([[[[4.0, 7.0, 0.0, 5.0]]]])
    labels_1, labels_2 = torch.tensor([[[0, -1, 2]]]), torch.tensor([[[1, 1, 2, -1]]])
    logits_1 = torch.nn.functional.one_hot(torch.tensor([[[0, 5, 1]]]), 13).permute(0, 3, 1, 2)
    logits_2 = torch.nn.functional.one_hot(torch.tensor([[[1, 0, 2, 3]]]), 13).permute(0, 3, 1, 2)
    for logits, prediction, normals, labels, depth, target in (
        (logits_1, prediction_1, first_n, labels_1, depth_1, target_1),
        (logits_2, prediction_2, second_n, labels_2, depth_2, target_2),
    ):
        outputs = {"S": logits.float(), "D": prediction, "N": normals}
        meter.update(outputs, Batch(None, {"S": labels, "D": depth, "N": target}, 1))
    result = meter.compute()
    n = result["N"]
    assert n["mean_angle"] == pytest.approx((5 + 40 + 10 + 20 + 25 + 90) / 6, abs=1e-3)
    assert n["median_angle"] == pytest.approx((20 + 25) / 2, abs=1e-3)
    assert n["within_11.25"] == pytest.approx(2 / 6)
    assert n["within_22.5"] == pytest.approx(3 / 6)
    assert n["within_30"] == pytest.approx(4 / 6)
    # depth: |2-1|, |1-2|; |4-4|, |7-5|, |5-10| over 5 valid pixels
    assert result["D"]["abs_err"] == pytest.approx((1 + 1 + 0 + 2 + 5) / 5)
    assert result["D"]["rel_err"] == pytest.approx((1 / 1 + 1 / 2 + 0 + 2 / 5 + 5 / 10) / 5)
    # segmentation: true/predicted (0, 0), (2, 1); (1, 1), (1, 0), (2, 2)
    confusion = torch.zeros(13, 13, dtype=torch.long)
    for t, p in ((0, 0), (2, 1), (1, 1), (1, 0), (2, 2)):
        confusion[t, p] += 1
    assert confusion_matrix(torch.tensor([0, 1, 1, 0, 2]), torch.tensor([0, 2, 1, 1, 2]), 13).equal(
        confusion
    )
    assert result["S"] == pytest.approx(segmentation_scores(confusion))
    assert result["S"]["pixel_accuracy"] == pytest.approx(3 / 5)
    assert list(result) == ["S", "D", "N"]


def test_a_meter_of_some_tasks_reports_only_those():
    meter = NYUv2Meter(("N",))
    target = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).repeat(1, 1, 1, 2)
    meter.update({"N": normals_at([30.0, 60.0])}, Batch(None, {"N": target}, 1))
    result = meter.compute()
    assert list(result) == ["N"] and result["N"]["median_angle"] == pytest.approx(45, abs=1e-3)
    assert result["N"]["within_30"] in (0.0, 0.5)  # 30 itself: strictly below, up to rounding


# ------------------------------------------------------------------ batches and models


def test_training_batches_are_augmented_and_the_same_with_workers(data_dir):
    serial, parallel = problem(), problem(workers=2)

    def epoch(p, seed=None, split="train"):
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return list(p.batches(split, 4, generator))

    plain = epoch(serial)
    assert [b.size for b in plain] == [4, 4, 1]
    assert plain[0].inputs.shape == (4, 3, 32, 64) and plain[0].targets["N"].shape == (4, 3, 32, 64)
    assert plain[0].targets["S"].dtype == torch.int64 and plain[0].targets["D"].shape == (4, 32, 64)
    first, again, other = epoch(serial, 1), epoch(parallel, 1), epoch(serial, 2)
    for a, b in zip(first, again):
        assert torch.equal(a.inputs, b.inputs)
        assert all(
            torch.equal(a.targets[t].nan_to_num(7), b.targets[t].nan_to_num(7)) for t in "SDN"
        )
    assert any(not torch.equal(a.inputs, b.inputs) for a, b in zip(first, other))
    sums = [
        sorted(float(x.sum()) for b in epoch(serial, s, "val") for x in b.inputs) for s in (None, 1)
    ]
    assert sums[0] == sums[1]  # val batches are never augmented
    quiet = problem(augment=False)  # batches of 3: no last batch of one to drop
    shuffled = quiet.batches("train", 3, torch.Generator().manual_seed(1))
    unshuffled = sorted(float(x.sum()) for b in shuffled for x in b.inputs)
    assert unshuffled == sorted(float(x.sum()) for b in plain for x in b.inputs)


def test_the_deeplab_model(data_dir):
    p = problem("S_N", **DEEPLAB)
    with pytest.warns(UserWarning, match="scratch"):
        model = p.make_model()
    batch = next(p.batches("val", 2))
    model.eval()
    _, outputs = model(batch.inputs)
    assert outputs["S"].shape == (2, 13, 32, 64) and outputs["N"].shape == (2, 3, 32, 64)
    assert set(outputs) == {"S", "N"}
    assert torch.isfinite(p.losses(outputs, batch.targets)).all()
    with pytest.raises(ConfigError, match="aspp_dropout"):
        p.make_model(dropout=0.1)


def test_the_segnet_model(data_dir):
    pytest.importorskip("smto.models.segnet")
    p = problem()
    model = p.make_model()
    batch = next(p.batches("val", 2))
    model.eval()
    with torch.no_grad():
        _, outputs = model(batch.inputs)
    assert outputs["S"].shape == (2, 13, 32, 64) and outputs["D"].shape == (2, 1, 32, 64)
    assert outputs["N"].shape == (2, 3, 32, 64)
    with pytest.raises(ConfigError, match="no dropout"):
        p.make_model(dropout=0.1)


# ------------------------------------------------------------------ training


@pytest.mark.slow
def test_training_learns_on_the_fake_tree(data_dir, tmp_path):
    warnings.simplefilter("ignore", UserWarning)
    run = RunConfig(problem="nyuv2", tasks="S_D_N", method="unit_scal", epochs=3, batch_size=3,
                    eval_batch_size=4, lr=1e-3, problem_options={**SMALL, **DEEPLAB})  # fmt: skip
    record = train(run, tmp_path / "runs", problem=problem(**DEEPLAB))
    assert record.status == "completed"
    losses = [sum(e["train_loss"].values()) for e in record.history]
    assert losses[-1] < losses[0], losses
    assert set(record.history[-1]["val"]) == {"S", "D", "N"}
    assert set(record.best_test["N"]) == {"mean_angle", "median_angle", "within_11.25",
                                          "within_22.5", "within_30"}  # fmt: skip


def test_smto_train_on_the_fake_tree(data_dir, tmp_path):
    from smto.cli import main

    args = ["train", "--problem", "nyuv2", "--tasks", "S_D_N", "--method", "unit_scal",
            "--epochs", "1", "--batch-size", "3", "--eval-batch-size", "4",
            "--problem-option", "shape=(64,32)", "--problem-option", "workers=0",
            "--problem-option", "split=seed", "--problem-option", "architecture=deeplab",
            "--problem-option", "backbone=resnet18", "--out", str(tmp_path / "runs"),
            "--quiet"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(args) == 0
    (record,) = (tmp_path / "runs").rglob("record.json")
    text = record.read_text()
    assert "median_angle" in text and '"completed"' in text
