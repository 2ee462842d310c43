"""Real training on Multi-MNIST (needs the MNIST files: set SMTO_DATA, e.g. ../shared/data)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

import smto
from smto.problems import MultiMNIST
from smto.train import RunConfig, train


def _data_dir() -> Path:
    root = os.environ.get("SMTO_DATA")
    if not root or not (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST not available: set SMTO_DATA to a directory holding mnist/")
    return Path(root)


@pytest.fixture(scope="module")
def small_cl_rr() -> MultiMNIST:
    return MultiMNIST("CL_RR", data_dir=_data_dir(), limits=(6000, 1000, 1000))


def test_the_problem_matches_the_protocol(small_cl_rr):
    problem = small_cl_rr
    assert problem.tasks == ("CL", "RR")
    assert [problem.split_size(s) for s in ("train", "val", "test")] == [6000, 1000, 1000]
    batch = next(problem.batches("train", 32, torch.Generator().manual_seed(0)))
    assert batch.inputs.shape == (32, 1, 28, 28) and batch.inputs.dtype == torch.float32
    assert batch.targets["CL"].dtype == torch.int64 and batch.targets["RR"].shape == (32, 28, 28)
    model = problem.make_model(dropout=0.3)
    features, outputs = model(batch.inputs)
    assert features.shape == (32, 50)
    losses = problem.losses(outputs, batch.targets)
    assert losses.shape == (2,) and torch.isfinite(losses).all()
    assert problem.metrics()["CL"][0].higher_is_better
    assert not problem.metrics()["RR"][0].higher_is_better


def test_unit_scal_learns_cl_rr_in_two_epochs(small_cl_rr, tmp_path):
    problem = small_cl_rr
    config = RunConfig(
        tasks="CL_RR", method="unit_scal", epochs=2, lr=1e-3,
        problem_options={"limits": [6000, 1000, 1000]},
    )  # fmt: skip
    record = train(config, tmp_path, problem=problem)
    assert record.status == "completed"
    val = record.history[-1]["val"]
    assert val["CL"]["accuracy"] > 0.5  # chance is 0.1
    zero = torch.cat([b.targets["RR"] for b in problem.batches("val", 500)]).pow(2).mean()
    assert val["RR"]["mse"] < 0.8 * float(zero)  # the all-zero prediction's MSE
    assert record.best_test is not None


@pytest.fixture(scope="module")
def tiny_cl_rr() -> MultiMNIST:
    return MultiMNIST("CL_RR", data_dir=_data_dir(), limits=(512, 200, 200))


@pytest.mark.parametrize(
    "name",  # BayesAgg-MTL needs one-linear-layer heads, which the LeNet has not
    [n for n in smto.available() if n != "bayesagg_mtl"],
)
def test_every_method_trains_an_epoch_on_multi_mnist(tiny_cl_rr, tmp_path, name):
    config = RunConfig(
        tasks="CL_RR", method=name, epochs=1, batch_size=128,
        problem_options={"limits": [512, 200, 200]},
    )  # fmt: skip
    record = train(config, tmp_path, problem=tiny_cl_rr)
    assert record.status == "completed"
    weights = record.history[0]["weights"]
    assert set(weights) == {"CL", "RR"} and all(math.isfinite(w) for w in weights.values())
    assert record.best_test is not None
