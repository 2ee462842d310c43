"""One way to fail: every method, given a non-finite loss or task gradient, raises
NonFiniteError naming the task, before the shared parameters are updated."""

from __future__ import annotations

import math

import pytest
import torch

import smto
from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.capabilities import HeadTargets, head_inputs_of
from smto.errors import NonFiniteError

ALL_METHODS = smto.available()
SETTINGS = {"rotograd": {"feature_size": 8}}
N_TASKS = 3
BAD_TASK = 1


def _setup(name: str):
    torch.manual_seed(0)
    model = TinyMTL(N_TASKS)
    method = smto.create(name, N_TASKS, **SETTINGS.get(name, {}))
    return model, method


def _poison_head_gradient(model: TinyMTL, value: float) -> None:
    """Task BAD_TASK's head passes a non-finite gradient on (zeros stay zeros)."""

    def hook(_module, _inputs, output):
        output.register_hook(lambda g: g.masked_fill(g != 0, value))

    model.heads[BAD_TASK].register_forward_hook(hook)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", ALL_METHODS)
def test_a_non_finite_loss_is_named(name: str, value: float) -> None:
    model, method = _setup(name)
    x, ys = tiny_batch(N_TASKS)
    z, losses = tiny_losses(model, x, ys, head_inputs_of(method))
    factor = torch.ones(N_TASKS)
    factor[BAD_TASK] = value
    with pytest.raises(NonFiniteError, match="non-finite loss of task 1") as error:
        method.backward(losses * factor, model.encoder.parameters(), z)
    assert error.value.tasks == [BAD_TASK]
    assert all(p.grad is None for p in model.parameters())
    assert "lower the learning rate" in str(error.value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize(
    "name",  # HeadTargets methods (BayesAgg-MTL) need a problem's heads and targets
    [n for n in ALL_METHODS if not issubclass(smto.spec(n).cls, HeadTargets)],
)
def test_a_non_finite_task_gradient_is_named(name: str, value: float) -> None:
    model, method = _setup(name)
    _poison_head_gradient(model, value)
    x, ys = tiny_batch(N_TASKS)
    z, losses = tiny_losses(model, x, ys, head_inputs_of(method))
    with pytest.raises(NonFiniteError, match="gradient") as error:
        method.backward(losses, model.encoder.parameters(), z)
    assert error.value.tasks == [BAD_TASK]
    if method.space.value != "losses":  # nothing is written before the check
        assert all(p.grad is None for p in model.encoder.parameters())


def test_si_with_a_zero_loss_names_the_infinite_objective_term() -> None:
    model, method = _setup("si")
    x, ys = tiny_batch(N_TASKS)
    z, losses = tiny_losses(model, x, ys)
    factor = torch.ones(N_TASKS)
    factor[BAD_TASK] = 0.0
    with pytest.raises(NonFiniteError, match="objective term of task 1 = -inf"):
        method.backward(losses * factor, model.encoder.parameters(), z)


def test_the_message_names_the_tasks_a_trainer_gives() -> None:
    error = NonFiniteError("loss", [0, 2], [math.nan, math.inf])
    assert error.describe(["CL", "CR", "RR"]).startswith("non-finite loss of CL = nan, RR = inf")
