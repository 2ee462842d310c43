"""Uncertainty weighting (Kendall et al. 2018): learned log-uncertainties eta."""

from __future__ import annotations

import math

import pytest
import torch

from smto.methods.uw import UW

TYPES = ("classification", "l1", "mse")
P_F = [(2.0, 1.0), (1.0, 1.0), (2.0, 2.0)]


def test_the_cosine_loss_of_normals_takes_the_laplace_form() -> None:
    method = UW(2, loss_types=("cosine", "l1")).double()
    with torch.no_grad():
        method.eta.copy_(torch.tensor([0.4, 0.4]))
    result = method.backward(torch.tensor([0.7, 0.7], dtype=torch.float64, requires_grad=True))
    assert result.weights[0].item() == pytest.approx(math.exp(-0.4))
    assert result.weights[0].item() == pytest.approx(result.weights[1].item())


def test_eta_is_a_learnable_parameter_initialised_to_zero() -> None:
    method = UW(3, loss_types=TYPES)
    params = list(method.parameters())
    assert len(params) == 1 and params[0] is method.eta
    assert torch.equal(method.eta.detach(), torch.zeros(3))
    assert "eta" in method.state_dict()


def test_gradient_of_eta_and_weights_match_the_analytic_derivatives() -> None:
    eta = [0.3, -0.5, 0.7]
    values = [1.3, 0.4, 2.5]
    method = UW(3, loss_types=TYPES).double()
    with torch.no_grad():
        method.eta.copy_(torch.tensor(eta))
    losses = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    result = method.backward(losses)
    for k, ((p, f), e, loss) in enumerate(zip(P_F, eta, values, strict=True)):
        assert method.eta.grad[k].item() == pytest.approx(1 - p * loss * math.exp(-p * e) / f)
        assert result.weights[k].item() == pytest.approx(math.exp(-p * e) / f)
        assert losses.grad[k].item() == pytest.approx(math.exp(-p * e) / f)


def test_training_eta_reaches_its_closed_form_optimum() -> None:
    """For fixed losses, d/d eta = 0 at eta* = log(p L / f) / p."""
    values = [1.3, 0.4, 2.5]
    method = UW(3, loss_types=TYPES).double()
    optimizer = torch.optim.Adam(method.parameters(), lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        method.backward(torch.tensor(values, dtype=torch.float64, requires_grad=True))
        optimizer.step()
    expected = [math.log(p * v / f) / p for (p, f), v in zip(P_F, values, strict=True)]
    torch.testing.assert_close(
        method.eta.detach(), torch.tensor(expected, dtype=torch.float64), atol=1e-3, rtol=0
    )


def test_default_is_classification_for_every_task() -> None:
    method = UW(2).double()
    with torch.no_grad():
        method.eta.fill_(0.25)
    result = method.backward(torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True))
    expected = torch.full((2,), math.exp(-0.5), dtype=torch.float64)
    torch.testing.assert_close(result.weights, expected)
    assert method.loss_types == ("classification", "classification")


@pytest.mark.parametrize(
    ("loss_types", "match"),
    [
        (("classification",), "2 entries"),
        (("classification", "huber"), "unknown"),
        ("classification", "tuple"),
    ],
)
def test_invalid_loss_types_are_clear_errors(loss_types, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UW(2, loss_types=loss_types)
