"""The method interface: where gradients go, in each space, and clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import smto
from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.method import Aggregation, GradientMethod, Scale, Space


class Mean(GradientMethod):
    """The plain mean of the task gradients, as a gradient method."""

    display_name = "mean"
    scale = Scale.MEAN

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        k = matrix.shape[0]
        return Aggregation(matrix.mean(0), torch.full((k,), 1.0 / k, dtype=matrix.dtype))


def grads_of(model, objective_fn) -> list[Tensor]:
    model.zero_grad()
    objective_fn().backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("space", ["params", "features"])
def test_shared_parameters_get_the_direction_and_heads_the_plain_sum(space):
    torch.manual_seed(0)
    model = TinyMTL(n_tasks=3).double()
    x, ys = tiny_batch(3)
    x, ys = x.double(), [y.double() for y in ys]
    mean_grads = grads_of(model, lambda: tiny_losses(model, x, ys)[1].mean())
    sum_grads = grads_of(model, lambda: tiny_losses(model, x, ys)[1].sum())

    model.zero_grad()
    z, losses = tiny_losses(model, x, ys)
    result = Mean(3, space=space).backward(losses, model.encoder.parameters(), z)
    n_shared = len(list(model.encoder.parameters()))
    for i, p in enumerate(model.parameters()):
        expected = mean_grads[i] if i < n_shared else sum_grads[i]
        torch.testing.assert_close(p.grad, expected)
    torch.testing.assert_close(result.weights, torch.full((3,), 1 / 3, dtype=torch.float64))


def test_gradients_accumulate_like_backward():
    model = TinyMTL(n_tasks=2)
    x, ys = tiny_batch(2)
    method = Mean(2)
    for _ in range(2):
        z, losses = tiny_losses(model, x, ys)
        method.backward(losses, model.encoder.parameters(), z)
    twice = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    z, losses = tiny_losses(model, x, ys)
    method.backward(losses, model.encoder.parameters(), z)
    for p, g in zip(model.parameters(), twice):
        torch.testing.assert_close(2 * p.grad, g)


def test_loss_method_per_task_gradients():
    model = TinyMTL(n_tasks=2).double()
    x, ys = tiny_batch(2)
    x, ys = x.double(), [y.double() for y in ys]
    per_task = []
    for k in range(2):
        per_task.append(grads_of(model, lambda k=k: tiny_losses(model, x, ys)[1][k] / 2))
    model.zero_grad()
    z, losses = tiny_losses(model, x, ys)
    smto.create("unit_scal", 2).backward(losses, model.encoder.parameters(), z, per_task_grads=True)
    for i, p in enumerate(model.encoder.parameters()):
        torch.testing.assert_close(p.task_grads, torch.stack([per_task[0][i], per_task[1][i]]))
        torch.testing.assert_close(p.grad, per_task[0][i] + per_task[1][i])
    for p in model.heads.parameters():
        assert not hasattr(p, "task_grads")


def test_clear_errors_for_missing_inputs():
    model = TinyMTL(n_tasks=2)
    x, ys = tiny_batch(2)
    _, losses = tiny_losses(model, x, ys)
    with pytest.raises(ValueError, match="pass shared_params"):
        Mean(2).backward(losses)
    with pytest.raises(ValueError, match="pass features"):
        Mean(2, space="features").backward(losses, model.encoder.parameters())
    with pytest.raises(ValueError, match="built for 3 tasks, got 2"):
        Mean(3).backward(losses, model.encoder.parameters())
    with pytest.raises(ValueError, match="space must be"):
        Mean(2, space="weights")
    with pytest.raises(ValueError, match="n_tasks"):
        Mean(0)
    assert Mean(2).space is Space.PARAMS
