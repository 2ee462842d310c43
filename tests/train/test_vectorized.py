"""Vectorized runs (smto.train.vectorized) against the engine's separate runs: the same
records, best models and checkpoints, to float rounding."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path

import pytest
import torch

import smto
from smto.errors import ConfigError
from smto.problems import create_problem
from smto.train import RunConfig, load_run, train
from smto.train.vectorized import NotVectorized, check_group, group_key, train_vectorized

TOY = {"sizes": [96, 48, 48]}


@pytest.fixture(scope="module")
def toy():
    return create_problem("toy_regression", "T1_T2", **TOY)


def _configs(method: str, variants: list[dict], **common) -> list[RunConfig]:
    base = dict(
        problem="toy_regression", tasks="T1_T2", method=method, epochs=2, batch_size=32,
        problem_options=TOY,
    )  # fmt: skip
    return [RunConfig(**{**base, **common, **v}) for v in variants]


def _numbers(value, prefix=""):
    """The numbers of a record entry by path (timings left out)."""
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            if "seconds" not in key:
                found.update(_numbers(item, f"{prefix}/{key}"))
        return found
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix: float(value)}
    return {prefix: value}


def _assert_same_run(separate, vectorized, root_a: Path, root_b: Path, weights_rtol=1e-5):
    assert vectorized.run_id == separate.run_id
    assert vectorized.status == separate.status
    assert vectorized.best_epoch == separate.best_epoch
    assert vectorized.diverged_step == separate.diverged_step
    assert len(vectorized.history) == len(separate.history)
    for one, other in zip(separate.history, vectorized.history):
        a, b = _numbers(one), _numbers(other)
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float) and math.isfinite(value):
                assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
            else:
                assert b[key] == value, key
    assert load_run(root_b / vectorized.run_id).to_dict() == vectorized.to_dict()
    path_a = root_a / separate.run_id / "best_model.pt"
    path_b = root_b / vectorized.run_id / "best_model.pt"
    assert path_b.exists() == path_a.exists()
    if not path_a.exists():
        return
    model_a, model_b = torch.load(path_a), torch.load(path_b)
    assert model_a.keys() == model_b.keys()
    for name, tensor in model_a.items():
        scale = float(tensor.abs().max())
        assert torch.allclose(model_b[name], tensor, rtol=0, atol=weights_rtol * scale), name


def _both(configs, problem, tmp_path, **kwargs):
    root_a, root_b = tmp_path / "separate", tmp_path / "vectorized"
    separate = [train(c, root_a, problem=problem) for c in configs]
    vectorized = train_vectorized(configs, root_b, problem=problem, **kwargs)
    return separate, vectorized, root_a, root_b


@pytest.mark.parametrize("method", ["unit_scal", "uw", "mgda", "famo"])
def test_seeds_give_the_separate_runs_numbers(toy, tmp_path, method):
    configs = _configs(method, [{"seed": s} for s in range(3)])
    separate, vectorized, root_a, root_b = _both(configs, toy, tmp_path)
    assert [r.status for r in vectorized] == ["completed"] * 3
    # the seeds differ: the runs are not one run three times
    assert separate[0].history[-1]["val_loss"] != separate[1].history[-1]["val_loss"]
    for one, other in zip(separate, vectorized):
        _assert_same_run(one, other, root_a, root_b)


GRID = [
    {"seed": 0, "lr": 1e-3, "weight_decay": 0.0, "dropout": 0.0},
    {"seed": 1, "lr": 3e-3, "weight_decay": 1e-3, "dropout": 0.3},
    {"seed": 0, "lr": 1e-2, "weight_decay": 0.0, "dropout": 0.5},
]


@pytest.mark.parametrize("method", ["unit_scal", "pcgrad", "mgda_ub", "imtl"])
def test_grid_points_give_the_separate_runs_numbers(toy, tmp_path, method):
    """lr, weight decay and dropout per run; PCGrad draws from each run's own generator,
    MGDA-UB works on the representation, IMTL transforms the losses."""
    configs = _configs(method, GRID)
    separate, vectorized, root_a, root_b = _both(configs, toy, tmp_path)
    for one, other in zip(separate, vectorized):
        _assert_same_run(one, other, root_a, root_b)
    assert vectorized[2].history[0]["lr"] == pytest.approx(1e-2)


def _mnist_dir() -> Path:
    root = os.environ.get("SMTO_DATA")
    if not root or not (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST not available: set SMTO_DATA to a directory holding mnist/")
    return Path(root)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["unit_scal", "famo"])
def test_lenet_runs_with_dropout_give_the_separate_runs_numbers(tmp_path, method):
    """The Multi-MNIST LeNet (Dropout2d in the encoder, Dropout in the heads). Its weights
    agree to 5e-4 of each tensor's scale, not 1e-5: the stacked (grouped) convolutions
    round differently from a separate run's (which convolve in the channels-last layout),
    and Adam's first steps (g / |g|) amplify that in near-zero gradients; the recorded
    numbers still agree to 1e-5. Methods whose solve amplifies rounding drift further:
    MGDA's weights by 5e-4 within 8 steps here, enough to flip a validation sample, and
    CAGrad's and IMTL-G's by ~1e-3; the Gram methods are compared on the toy problem,
    whose arithmetic is the same both ways."""
    limits = [256, 100, 100]
    problem = create_problem("multi_mnist", "CL_RR", data_dir=_mnist_dir(), limits=limits)
    configs = [
        RunConfig(
            tasks="CL_RR",
            method=method,
            epochs=2,
            batch_size=64,
            seed=seed,
            dropout=dropout,
            lr=lr,
            problem_options={"limits": limits},
        )
        for seed, dropout, lr in [(0, 0.0, 1e-3), (1, 0.3, 1e-3), (2, 0.3, 3e-3)]
    ]
    separate, vectorized, root_a, root_b = _both(configs, problem, tmp_path)
    for one, other in zip(separate, vectorized):
        _assert_same_run(one, other, root_a, root_b, weights_rtol=5e-4)


@pytest.mark.parametrize("method", ["unit_scal", "mgda"])
def test_a_diverging_run_is_recorded_and_the_others_continue(toy, tmp_path, method):
    variants = [{"seed": 0, "lr": 1e-2}, {"seed": 1, "lr": 1e30}, {"seed": 2, "lr": 1e-2}]
    configs = _configs(method, variants, optimizer="sgd")
    separate, vectorized, root_a, root_b = _both(configs, toy, tmp_path)
    assert [r.status for r in vectorized] == ["completed", "diverged", "completed"]
    assert vectorized[1].reason == separate[1].reason and "non-finite" in vectorized[1].reason
    assert separate[1].diverged_step > 0  # diverged in the middle of the stack's epoch
    assert (vectorized[1].diverged_epoch, vectorized[1].diverged_step) == (
        separate[1].diverged_epoch,
        separate[1].diverged_step,
    )
    for one, other in zip(separate, vectorized):
        _assert_same_run(one, other, root_a, root_b)


def test_a_method_that_cannot_be_vectorized_falls_back_and_says_so(toy, tmp_path):
    configs = _configs("rotograd", [{"seed": 0}, {"seed": 1}], epochs=1)
    root_a, root_b = tmp_path / "separate", tmp_path / "vectorized"
    separate = [train(c, root_a, problem=toy) for c in configs]
    with pytest.warns(NotVectorized, match="RotoGrad feeds each head its own input"):
        fallen = train_vectorized(configs, root_b, problem=toy)
    for one, other in zip(separate, fallen):
        assert [_numbers(e) for e in other.history] == [_numbers(e) for e in one.history]


def test_compiled_runs_are_not_vectorized(toy):
    from smto.train.vectorized import vectorize_blocker

    configs = _configs("unit_scal", [{"seed": 0}, {"seed": 1}], epochs=1)
    assert vectorize_blocker(configs, toy) is None
    compiled = [dataclasses.replace(c, compile=True) for c in configs]
    assert "torch.compile" in vectorize_blocker(compiled, toy)


def test_a_killed_group_resumes_and_a_run_resumes_alone(toy, tmp_path):
    """Interrupted in the middle of an epoch's bookkeeping (run 0 checkpointed two epochs,
    the others one): run 0 resumes alone in the engine, the others as a group, and all end
    with the uninterrupted numbers."""
    configs = _configs("famo", [{"seed": s} for s in range(3)], epochs=3)
    root_a, root_b = tmp_path / "separate", tmp_path / "vectorized"
    separate = [train(c, root_a, problem=toy) for c in configs]

    def stop(record):
        if record.run_id == configs[0].run_id() and len(record.history) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_vectorized(configs, root_b, problem=toy, on_epoch_end=stop)
    assert [load_run(root_b / c.run_id()).status for c in configs] == ["interrupted"] * 3
    alone = train(configs[0], root_b, problem=toy)
    rest = train_vectorized(configs[1:], root_b, problem=toy)
    for one, other in zip(separate, [alone, *rest]):
        _assert_same_run(one, other, root_a, root_b)


def test_finished_runs_are_returned_and_the_group_is_checked(toy, tmp_path):
    configs = _configs("unit_scal", [{"seed": 0}, {"seed": 1}], epochs=1)
    first = train_vectorized(configs, tmp_path, problem=toy)
    again = train_vectorized(configs, tmp_path, problem=toy)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in first]
    other_method = _configs("mgda", [{"seed": 2}], epochs=1)
    with pytest.raises(ConfigError, match="differ in method"):
        check_group([*configs, *other_method])
    with pytest.raises(ConfigError, match="listed twice"):
        check_group([configs[0], configs[0]])
    assert group_key(configs[0]) == group_key(configs[1]) != group_key(other_method[0])


def test_smto_train_seeds_vectorize(tmp_path, capsys):
    import json

    from smto.cli import main

    args = ["train", "--problem", "toy_regression", "--problem-option", "sizes=[96, 48, 48]",
            "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path), "--json"]  # fmt: skip
    assert main([*args, "--seeds", "0", "1", "--vectorize"]) == 0
    together = json.loads(capsys.readouterr().out)
    assert [r["config"]["seed"] for r in together] == [0, 1]
    assert main([*args, "--seed", "1"]) == 0  # the same run, returned as recorded
    assert json.loads(capsys.readouterr().out)[0] == together[1]


NOT_VECTORIZED = {"auto_lambda", "bayesagg_mtl", "rotograd"}
"""The registry's methods that train one after the other (their own validation step, their
own module between encoder and heads)."""


@pytest.mark.parametrize("method", smto.available())
def test_every_method_vectorizes_or_says_why(toy, tmp_path, method):
    """Every registered method: the separate runs' numbers (the methods' diagnostics
    aside: an iterative solver's iteration count may differ by one), or a NotVectorized
    warning and the separate runs themselves."""
    configs = _configs(method, [{"seed": 0}, {"seed": 1, "dropout": 0.3, "lr": 3e-3}])
    root_a, root_b = tmp_path / "separate", tmp_path / "vectorized"
    separate = [train(c, root_a, problem=toy) for c in configs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NotVectorized)
        together = train_vectorized(configs, root_b, problem=toy)
    fell_back = [w for w in caught if issubclass(w.category, NotVectorized)]
    assert bool(fell_back) == (method in NOT_VECTORIZED)
    for one, other in zip(separate, together):
        for entry, twin in zip(one.history, other.history):
            a = {k: v for k, v in _numbers(entry).items() if not k.startswith("/info")}
            b = {k: v for k, v in _numbers(twin).items() if not k.startswith("/info")}
            assert b == pytest.approx(a, rel=1e-5, abs=1e-7)
