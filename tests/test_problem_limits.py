"""Problem options are checked before any data is loaded, with a ConfigError saying what is
expected: limits and sizes (no slicing from the end, no empty split), Multi-MNIST's pairing
options, task names, problem names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smto.data import multi_mnist as mm
from smto.errors import ConfigError, SmtoError
from smto.problems import MultiMNIST, ToyRegression, create_problem, parse_tasks, problem_class
from smto.problems.delta_m import delta_m

N = 20
LIMITS_HELP = r"limits=\(train, val, test\), each a positive integer or None"


def fake_splits() -> dict[str, mm.MultiMNISTSplit]:
    digits = torch.arange(N * 28 * 28).reshape(N, 28, 28).to(torch.uint8)
    labels = torch.arange(N) % 10
    index = torch.arange(N)
    split = mm.MultiMNISTSplit(digits, digits, digits, labels, labels, index, index)
    return dict.fromkeys(("train", "val", "test"), split)


@pytest.fixture
def loads(monkeypatch) -> list[dict]:
    """Replace the Multi-MNIST loader by a small in-memory set; record each call."""
    calls: list[dict] = []

    def fake_load(**kwargs):
        calls.append(kwargs)
        return fake_splits()

    monkeypatch.setattr(mm, "load_multi_mnist", fake_load)
    return calls


@pytest.mark.parametrize(
    "limits",
    [
        (-5, 1, 1),  # Python slicing: all but the last 5 images
        (0, 5, 5),  # an empty train split
        (5, 0, None),
        (2.5, 1, 1),
        (5.0, 1, 1),
        (True, 1, 1),
        ("500", 1, 1),
        (np.float64(3), 1, 1),
        (5, 1),
        (5, 1, 1, 1),
        "500",
        5,
        None,
    ],
)
def test_bad_limits_are_rejected_before_loading(loads, limits):
    with pytest.raises(ConfigError, match=LIMITS_HELP):
        MultiMNIST("CL_RR", limits=limits)
    with pytest.raises(ConfigError, match=LIMITS_HELP):
        create_problem("multi_mnist", "CL_RR", limits=limits)
    assert loads == []


def test_limits_cut_each_split(loads):
    problem = MultiMNIST("CL_RR", limits=[5, None, np.int64(3)])
    assert [problem.split_size(s) for s in ("train", "val", "test")] == [5, N, 3]
    assert len(loads) == 1
    big = MultiMNIST("CL", limits=(10**9, 1, 1))  # more than a split holds: the whole split
    assert big.split_size("train") == N


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"right_indices": "random"}, "right_indices must be 'seed' or 'original'"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": 1.5}, "seed must be an integer >= 0"),
        ({"seed": True}, "seed must be an integer >= 0"),
        ({"right_indices": "original", "seed": 3}, "seed=3 has no effect"),
        ({"split_dir": "/tmp/splits"}, "split_dir is read only with right_indices='original'"),
        ({"data_dir": 3}, "data_dir must be a path"),
        ({"download": "no"}, "download must be True or False"),
    ],
)
def test_bad_multi_mnist_options_are_rejected_before_loading(loads, options, message):
    with pytest.raises(ConfigError, match=message):
        MultiMNIST("CL_RR", **options)
    assert loads == []


def test_valid_multi_mnist_options_pass(loads):
    MultiMNIST.check_options(right_indices="original", split_dir="/tmp/splits", limits=(1, 2, 3))
    MultiMNIST.check_options(seed=np.int64(4), download=False, limits=[None, None, None])
    MultiMNIST("RR", right_indices="original", split_dir="/tmp/splits")
    assert loads[0]["right_indices"] == "original" and loads[0]["split_dir"] == "/tmp/splits"


@pytest.mark.parametrize("sizes", [(0, 5, 5), (-4, 5, 5), (2.5, 5, 5), (True, 5, 5), (5, 5)])
def test_bad_toy_sizes_are_rejected(sizes):
    with pytest.raises(ConfigError, match=r"sizes=\(train, val, test\), each a positive integer"):
        ToyRegression(sizes=sizes)


def test_toy_seed_must_be_an_integer():
    with pytest.raises(ConfigError, match="seed must be an integer"):
        ToyRegression(seed="1")
    assert ToyRegression(sizes=[3, 2, 1], seed=2).split_size("train") == 3


def test_unknown_problem_option_and_name():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['limit'\].*valid: .*limits="):
        create_problem("multi_mnist", "CL_RR", limit=(5, 1, 1))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['size'\]"):
        ToyRegression.check_options(size=3)
    with pytest.raises(ConfigError, match="unknown problem 'multi_mnsit'; valid problems"):
        problem_class("multi_mnsit")


@pytest.mark.parametrize("tasks", ["", "_", [], ["CL", 3], ["CL", ""], 5, None])
def test_bad_task_lists_are_config_errors(tasks):
    with pytest.raises(ConfigError, match="task"):
        parse_tasks(tasks)


def test_unknown_and_repeated_tasks_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['T3'\]"):
        ToyRegression("T1_T3")
    with pytest.raises(ConfigError, match="tasks must be distinct"):
        ToyRegression(["T1", "T1"])
    assert parse_tasks("CL__RR") == ["CL", "RR"] and parse_tasks(("CL",)) == ["CL"]


def test_user_errors_are_smto_errors_and_value_errors():
    """The command line prints an SmtoError on one line; ``except ValueError`` still works."""
    with pytest.raises(ValueError) as info:
        ToyRegression(sizes=(-1, 5, 5))
    assert isinstance(info.value, SmtoError)
    metrics = ToyRegression.task_metrics("T1")
    with pytest.raises(ConfigError, match="Delta_m needs T1/mse"):
        delta_m({"T1": {"mse": 1.0}}, {"T1": {}}, {"T1": metrics})
    with pytest.raises(ConfigError, match="reference of T1/mse is 0"):
        delta_m({"T1": {"mse": 1.0}}, {"T1": {"mse": 0.0}}, {"T1": metrics})
