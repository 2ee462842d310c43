"""GradNorm: uniform first epoch, the GradNorm loss's gradient on the logits by hand, the
restoring force, and resume."""

from __future__ import annotations

import pytest
import torch

import smto

F64 = torch.float64


def _warmed_up(k: int, first_epoch_losses: list[torch.Tensor], **kwargs):
    method = smto.create("gradnorm", k, **kwargs).to(F64)
    matrix = torch.eye(k, 4, dtype=F64)
    for losses in first_epoch_losses:
        agg = method.aggregate(matrix, losses)
        torch.testing.assert_close(agg.weights, torch.ones(k, dtype=F64))
    method.end_epoch()
    return method


def test_the_first_epoch_is_uniform_and_sets_the_reference_losses():
    method = _warmed_up(
        2, [torch.tensor([1.0, 4.0], dtype=F64), torch.tensor([3.0, 2.0], dtype=F64)]
    )
    torch.testing.assert_close(method.initial_losses, torch.tensor([2.0, 3.0], dtype=F64))


def test_the_logits_get_the_gradient_of_the_gradnorm_loss():
    method = _warmed_up(3, [torch.tensor([1.0, 1.0, 1.0], dtype=F64)], alpha=1.5)
    with torch.no_grad():
        method.logits.copy_(torch.tensor([0.2, -0.1, 0.4]))
    matrix = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    losses = torch.tensor([0.5, 0.9, 0.2], dtype=F64)
    agg = method.aggregate(matrix, losses)
    s = torch.tensor([0.2, -0.1, 0.4], dtype=F64, requires_grad=True)
    w = 3 * torch.softmax(s, dim=0)
    g = w * matrix.norm(dim=1)
    r = losses / losses.mean()
    target = (g.mean() * r**1.5).detach()
    (g - target).abs().sum().backward()
    torch.testing.assert_close(method.logits.grad.to(F64), s.grad, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(agg.weights, w.detach().to(agg.weights.dtype), rtol=1e-6, atol=0)
    torch.testing.assert_close(agg.direction, agg.weights @ matrix)


def test_descending_the_gradnorm_loss_raises_the_weight_of_the_slower_task():
    """Equal gradient norms, task 1's loss falling slower: its weight must grow."""
    method = _warmed_up(2, [torch.tensor([1.0, 1.0], dtype=F64)], alpha=1.0)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    matrix = torch.eye(2, 3, dtype=F64)
    for _ in range(50):
        optimizer.zero_grad()
        agg = method.aggregate(matrix, torch.tensor([0.9, 0.3], dtype=F64))
        optimizer.step()
    assert float(agg.weights[0]) > 1.2 > 0.8 > float(agg.weights[1])
    assert float(agg.weights.sum()) == pytest.approx(2.0)
