"""MTL-IO (Pascal et al. 2021): one SGD momentum state per task, stepped task by task."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from smto import registry
from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel
from smto.optim import MTLIO
from smto.train import RunConfig, train
from smto.train.step import training_step


def test_two_steps_by_hand_keep_one_momentum_buffer_per_task():
    p = nn.Parameter(torch.tensor([1.0]))
    optimizer = MTLIO([p], n_tasks=2, lr=0.1, momentum=0.5)
    # batch 1: task 0 (g = 2): b0 = 2, p = 1 - 0.2 = 0.8; task 1 (g = -1): b1 = -1, p = 0.9
    # batch 2: task 0 (g = 4): b0 = 0.5 * 2 + 4 = 5, p = 0.4; task 1 (g = 1): b1 = 0.5, p = 0.35
    # (one shared buffer would give b = 2, 0, 4, 3 and p = 0.8, 0.8, 0.4, 0.1)
    after = []
    for g0, g1 in ((2.0, -1.0), (4.0, 1.0)):
        for task, g in ((0, g0), (1, g1)):
            p.grad = torch.tensor([g])
            optimizer.step(task=task)
            after.append(p.item())
    assert after == pytest.approx([0.8, 0.9, 0.4, 0.35])
    assert optimizer.state[p]["momentum_buffer"].flatten().tolist() == pytest.approx([5.0, 0.5])


def test_a_head_only_starts_its_own_tasks_buffer():
    shared, head = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(1))
    optimizer = MTLIO([shared, head], n_tasks=3, lr=0.1, momentum=0.9)
    shared.grad, head.grad = torch.ones(2), None
    optimizer.step(task=0)
    shared.grad, head.grad = torch.ones(2), torch.ones(1)
    optimizer.step(task=2)
    assert optimizer.state[shared]["started"].tolist() == [True, False, True]
    assert optimizer.state[head]["started"].tolist() == [False, False, True]


def test_one_task_is_torch_sgd_with_nesterov_and_weight_decay():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5))
    b = nn.Parameter(a.detach().clone())
    ours = MTLIO([a], n_tasks=1, lr=0.05, momentum=0.8, weight_decay=0.01, nesterov=True)
    theirs = torch.optim.SGD([b], lr=0.05, momentum=0.8, weight_decay=0.01, nesterov=True)
    for _ in range(4):
        grad = torch.randn(5)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step(task=0)
        theirs.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-7)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(1)
    p = nn.Parameter(torch.randn(3))
    q = nn.Parameter(p.detach().clone())
    grads = [torch.randn(3) for _ in range(6)]
    first = MTLIO([p], n_tasks=2, lr=0.1, momentum=0.9)
    for i in range(4):
        p.grad = grads[i]
        first.step(task=i % 2)
    state = copy.deepcopy(first.state_dict())
    q.data.copy_(p.detach())
    second = MTLIO([q], n_tasks=2, lr=0.1, momentum=0.9)
    second.load_state_dict(state)
    torch.testing.assert_close(
        second.state[q]["momentum_buffer"], first.state[p]["momentum_buffer"]
    )
    for i in range(4, 6):
        p.grad, q.grad = grads[i].clone(), grads[i].clone()
        first.step(task=i % 2)
        second.step(task=i % 2)
    torch.testing.assert_close(q.detach(), p.detach(), rtol=0, atol=0)


def test_plain_step_and_bad_arguments_are_refused():
    p = nn.Parameter(torch.ones(1))
    with pytest.raises(RuntimeError, match="one task at a time"):
        MTLIO([p], n_tasks=2).step()
    with pytest.raises(ValueError, match="task must be"):
        MTLIO([p], n_tasks=2).step(task=2)
    with pytest.raises(ValueError, match="Nesterov"):
        MTLIO([p], n_tasks=2, momentum=0.0, nesterov=True)


def tiny_model() -> SharedEncoderModel:
    torch.manual_seed(2)
    heads = {t: nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)) for t in ("a", "b")}
    return SharedEncoderModel(nn.Sequential(nn.Linear(4, 3), nn.Tanh()), heads)


def losses_of(outputs, targets):
    return torch.stack([((outputs[t] - targets[t]) ** 2).mean() for t in ("a", "b")])


def test_the_training_step_is_the_releases_one_optimizer_per_task_loop():
    """Pascal et al.'s release: K torch SGD optimizers over all parameters; per batch and
    task k in order, a forward pass, loss_k.backward() and optimizer[k].step(). Unit. Scal.'s
    term k is L_k / K (smto's objective is the mean), so the release's loss is halved."""
    ours, theirs = tiny_model(), tiny_model()
    method = registry.create("unit_scal", 2)
    optimizer = MTLIO(ours.parameters(), n_tasks=2, lr=0.1, momentum=0.9)
    releases = [torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9) for _ in range(2)]
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(8, 4, generator=generator)
        targets = {
            "a": torch.randn(8, generator=generator),
            "b": torch.randn(8, generator=generator),
        }
        losses, _ = training_step(
            ours, method, optimizer, losses_of, x, targets, list(ours.shared_parameters())
        )
        first = None
        for k, release in enumerate(releases):
            release.zero_grad(set_to_none=True)
            _, outputs = theirs(x)
            task_losses = losses_of(outputs, targets)
            first = task_losses.detach() if first is None else first
            (task_losses[k] / 2).backward()
            release.step()
        torch.testing.assert_close(losses, first)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)


def test_an_epoch_through_the_engine(tmp_path):
    config = RunConfig(
        problem="toy_regression",
        tasks="T1_T2",
        method="unit_scal",
        optimizer="mtl_io",
        lr=1e-2,
        batch_size=64,
        epochs=1,
        problem_options={"sizes": [128, 64, 64]},
    )
    record = train(config, tmp_path)
    assert record.status == "completed"
    assert all(math.isfinite(v) for v in record.history[0]["train_loss"].values())
    assert record.history[0]["train_loss"] != record.history[0]["val_loss"]


def test_mtl_io_needs_a_loss_based_method():
    with pytest.raises(ConfigError, match="mtl_io needs a loss-based method"):
        RunConfig(problem="toy_regression", tasks="T1_T2", method="pcgrad", optimizer="mtl_io")
