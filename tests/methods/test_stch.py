"""STCH: the smooth Tchebycheff gradient by hand, its limits, the warm-up and the nadir."""

from __future__ import annotations

import pytest
import torch

import smto


def _after_warmup(method, epoch_losses: list[torch.Tensor]):
    """Feeds the last warm-up epoch's batches and ends the warm-up."""
    for _ in range(method.warmup_epochs):
        method.end_epoch()
    for losses in epoch_losses:
        method.terms(losses)
    method.end_epoch()


def test_warmup_is_the_sum_of_the_log_losses():
    method = smto.create("stch", 3, warmup_epochs=2)
    losses = torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64, requires_grad=True)
    terms, weights = method.terms(losses)
    terms.sum().backward()
    torch.testing.assert_close(losses.grad, 1.0 / (losses.detach() + 1e-20))
    torch.testing.assert_close(weights, losses.grad)


def test_the_nadir_point_is_the_mean_loss_of_the_last_warmup_epoch():
    method = smto.create("stch", 2, warmup_epochs=1)
    batches = [torch.tensor([1.0, 4.0]), torch.tensor([3.0, 2.0])]
    _after_warmup(method, batches)
    method.terms(torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(method.nadir, torch.tensor([2.0, 3.0], dtype=torch.float64))


def test_the_gradient_is_that_of_the_smooth_tchebycheff_function():
    mu, z = 0.5, torch.tensor([2.0, 3.0, 1.0], dtype=torch.float64)
    method = smto.create("stch", 3, mu=mu, warmup_epochs=0)
    _after_warmup(method, [z])
    losses = torch.tensor([1.0, 6.0, 0.5], dtype=torch.float64, requires_grad=True)
    objective = mu * 3 * torch.logsumexp(torch.log(losses / z + 1e-20) / mu, dim=0)
    (expected,) = torch.autograd.grad(objective, losses)
    terms, weights = method.terms(losses)
    (got,) = torch.autograd.grad(terms.sum(), losses)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(weights, expected)


def test_a_small_mu_puts_the_weight_on_the_worst_normalized_loss():
    method = smto.create("stch", 3, mu=1e-3, warmup_epochs=0)
    _after_warmup(method, [torch.tensor([1.0, 1.0, 1.0])])
    losses = torch.tensor([1.0, 3.0, 2.0])
    weights = method.terms(losses)[1]
    torch.testing.assert_close(weights, torch.tensor([0.0, 3.0 / 3.0, 0.0]), atol=1e-6, rtol=0)


def test_a_large_mu_mixes_the_tasks_evenly():
    method = smto.create("stch", 2, mu=1e6, warmup_epochs=0)
    _after_warmup(method, [torch.tensor([1.0, 1.0])])
    losses = torch.tensor([2.0, 8.0], dtype=torch.float64)
    weights = method.terms(losses)[1]
    torch.testing.assert_close(
        weights * losses, torch.ones(2, dtype=torch.float64), rtol=1e-5, atol=0
    )


def test_bad_hyperparameters_are_clear_errors():
    with pytest.raises(ValueError, match="mu must be > 0"):
        smto.create("stch", 2, mu=0.0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        smto.create("stch", 2, warmup_epochs=-1)
