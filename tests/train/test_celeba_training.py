"""The CelebA problem on a fake tree: options, the BCE loss and the metrics by hand, the
model, a tiny training, and ``smto train``."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional

from data import fake_celeba as fake
from smto.data.celeba import TASKS
from smto.errors import ConfigError
from smto.problems import Batch, create_problem
from smto.problems.celeba import CelebA, CelebAMeter, binary_scores, task_loss
from smto.train import RunConfig, train

SMALL = {"size": 32, "workers": 0}


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data directory with a fake tree (20 / 5 / 5 images), caches kept in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SMTO_CACHE", raising=False)
    monkeypatch.delenv("SMTO_CELEBA", raising=False)
    fake.write_tree(tmp_path / "data" / "celeba")
    monkeypatch.setenv("SMTO_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


# ------------------------------------------------------------------ options and tasks


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 8}, "size must be an integer >= 16"),
        ({"size": 64.0}, "size must be"),
        ({"workers": -1}, "workers must be"),
        ({"pretrained": 3}, "pretrained must be"),
        ({"limits": (5, 0, None)}, "limits="),
        ({"data_dir": 3}, "data_dir must be a path"),
        ({"colour": 1}, "unknown option"),
    ],
)
def test_options_are_checked_before_any_data_is_loaded(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        create_problem("celeba", "Smiling", root=str(tmp_path / "absent"), **options)


def test_the_default_tasks_are_all_40_and_names_join_with_underscores():
    assert CelebA.default_tasks() == "_".join(TASKS) and CelebA.all_tasks == TASKS
    with pytest.raises(ConfigError, match="unknown task"):
        CelebA("Bags_Under_Eyes", root="absent")  # the official name splits into 3 tasks


def test_the_splits_the_limits_and_the_root_from_the_environment(data_dir, tmp_path, monkeypatch):
    problem = CelebA("Smiling_Male", **SMALL)
    assert problem.n_tasks == 2
    assert [problem.split_size(s) for s in ("train", "val", "test")] == [20, 5, 5]
    all_tasks = CelebA(limits=(3, None, 2), **SMALL)
    assert all_tasks.n_tasks == 40 and all_tasks.loss_types() == ("classification",) * 40
    assert [all_tasks.split_size(s) for s in ("train", "val", "test")] == [3, 5, 2]
    moved = tmp_path / "elsewhere"
    (data_dir / "celeba").rename(moved)
    with pytest.raises(Exception, match="no CelebA directory"):
        CelebA("Smiling", **SMALL)
    monkeypatch.setenv("SMTO_CELEBA", str(moved))
    assert CelebA("Smiling", **SMALL).split_size("train") == 20


def test_batches_shuffle_and_workers_give_the_same_batches(data_dir):
    problem = CelebA("Smiling_Male", **SMALL)
    ordered = list(problem.batches("val", 2))
    assert [b.size for b in ordered] == [2, 2, 1]
    assert ordered[0].inputs.shape == (2, 3, 32, 32) and ordered[0].targets["Male"].shape == (2,)
    with_workers = CelebA("Smiling_Male", size=32, workers=2)
    for workers in (problem, with_workers):
        batches = list(workers.batches("train", 8, torch.Generator().manual_seed(3)))
        if workers is problem:
            first = batches
        else:
            for a, b in zip(first, batches):
                assert torch.equal(a.inputs, b.inputs)
                assert torch.equal(a.targets["Smiling"], b.targets["Smiling"])
    assert sum(b.size for b in first) == 20


# ------------------------------------------------------------------ the model


def test_the_model_is_a_pooled_resnet18_with_one_linear_logit_per_task(data_dir):
    from smto.models.resnet import load_torchvision_weights

    problem = CelebA("Smiling_Male_Young", **SMALL)
    model = problem.make_model()
    assert model.task_names == ["Smiling", "Male", "Young"]
    features, outputs = model(torch.randn(4, 3, 64, 64))
    assert features.shape == (4, 512)
    assert all(o.shape == (4,) for o in outputs.values())
    head = model.heads["Smiling"]
    assert sum(p.numel() for p in head.parameters()) == 513
    assert model.encoder.layer4[0].conv1.stride == (2, 2)  # not dilated: output stride 32
    assert model.encoder.layer4[0].conv1.dilation == (1, 1)
    # torchvision's names: a resnet18 state dict (with its fc) loads strictly
    state = {k: torch.full_like(v, 0.5) for k, v in model.encoder.state_dict().items()}
    state |= {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    load_torchvision_weights(model.encoder, state)
    assert torch.all(model.encoder.conv1.weight == 0.5)
    with pytest.raises(ConfigError, match="no dropout"):
        problem.make_model(dropout=0.1)


def test_pretrained_from_a_missing_file_fails_and_none_does_not_warn(data_dir, tmp_path):
    import warnings

    from smto.errors import MissingError

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CelebA("Smiling", **SMALL).make_model()
    with pytest.raises(MissingError, match="no ResNet weights file"):
        CelebA("Smiling", pretrained=str(tmp_path / "absent.pth"), **SMALL).make_model()


# ------------------------------------------------------------------ losses and metrics


def test_the_loss_is_binary_cross_entropy_with_logits_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0])
    sigmoid = 1 / (1 + torch.exp(-logits))
    by_hand = -(targets * sigmoid.log() + (1 - targets) * (1 - sigmoid).log()).mean()
    assert torch.allclose(task_loss(logits, targets), by_hand)
    terms = (math.exp(-2), math.exp(-1), math.exp(0.5), 1.0)  # log(1 + e^(-x)) or e^(x)
    expected = sum(math.log(1 + t) for t in terms) / 4
    assert task_loss(logits, targets).item() == pytest.approx(expected)
    problem = CelebA.__new__(CelebA)
    problem.tasks = ("A", "B")
    losses = problem.losses({"A": logits, "B": -logits}, {"A": targets, "B": targets})
    assert losses.shape == (2,)
    assert losses[1].item() == pytest.approx(
        functional.binary_cross_entropy_with_logits(-logits, targets).item()
    )


def test_accuracy_and_f1_from_hand_computed_counts():
    # TP = 2, FP = 1, FN = 1, TN = 4 over 8: accuracy 6/8, F1 = 4 / (4 + 1 + 1)
    assert binary_scores(2, 1, 1, 8) == {"accuracy": 0.75, "f1": pytest.approx(2 / 3)}
    # no positive label and no positive prediction: F1 is 0 (scikit-learn's zero_division)
    assert binary_scores(0, 0, 0, 5) == {"accuracy": 1.0, "f1": 0.0}
    assert binary_scores(0, 2, 0, 5)["f1"] == 0.0  # positives predicted, none true
    assert math.isnan(binary_scores(0, 0, 0, 0)["accuracy"])


def test_the_meter_counts_over_the_split_not_per_batch_means():
    meter = CelebAMeter(("A", "B"))
    # batch 1: A predicts [+, +, -], true [1, 0, 1] -> TP 1, FP 1, FN 1; B all negative
    meter.update(
        {"A": torch.tensor([3.0, 0.2, -1.0]), "B": torch.tensor([-1.0, -2.0, -0.1])},
        Batch(None, {"A": torch.tensor([1.0, 0.0, 1.0]), "B": torch.zeros(3)}, 3),
    )
    # batch 2: A predicts [+], true [1] -> TP 1; B predicts [-] (a logit of exactly 0), true 0
    meter.update(
        {"A": torch.tensor([0.7]), "B": torch.tensor([0.0])},
        Batch(None, {"A": torch.tensor([1.0]), "B": torch.tensor([0.0])}, 1),
    )
    scores = meter.compute()
    # A: TP 2, FP 1, FN 1, TN 0 over 4 -> accuracy 0.5, F1 4 / 6 (per-batch means: F1 0.5, 1)
    assert scores["A"]["accuracy"] == 0.5 and scores["A"]["f1"] == pytest.approx(2 / 3)
    assert scores["B"] == {"accuracy": 1.0, "f1": 0.0}  # the zero-division case
    assert CelebA.task_metrics("Smiling")[0].higher_is_better
    assert [m.name for m in CelebA.task_metrics("Smiling")] == ["accuracy", "f1"]


# ------------------------------------------------------------------ training


def test_a_tiny_training_lowers_the_loss(data_dir, tmp_path):
    problem = CelebA("Smiling_Male", **SMALL)
    run = RunConfig(
        problem="celeba",
        tasks="Smiling_Male",
        method="unit_scal",
        epochs=4,
        batch_size=5,
        eval_batch_size=10,
        lr=1e-3,
        problem_options=SMALL,
    )
    record = train(run, tmp_path / "runs", problem=problem)
    assert record.status == "completed"
    losses = [sum(e["train_loss"].values()) for e in record.history]
    assert losses[-1] < losses[0], losses
    assert set(record.history[-1]["val"]) == {"Smiling", "Male"}
    assert set(record.history[-1]["val"]["Smiling"]) == {"accuracy", "f1"}


def test_smto_train_on_two_attributes(data_dir, tmp_path):
    from smto.cli import main

    code = main(["train", "--problem", "celeba", "--tasks", "Smiling_5oClockShadow",
                 "--method", "pcgrad", "--epochs", "1", "--batch-size", "10",
                 "--problem-option", "size=32", "--problem-option", "workers=0",
                 "--out", str(tmp_path / "runs"), "--quiet"])  # fmt: skip
    assert code == 0
    assert list((tmp_path / "runs").rglob("*.json"))
