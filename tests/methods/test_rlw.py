"""Random loss weighting (Lin et al. 2022): normal-softmax and Dirichlet(1) weights."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from smto.method import Scale
from smto.methods.rlw import RLW

DISTRIBUTIONS = ["normal", "dirichlet"]


def draw(method: RLW, n: int) -> torch.Tensor:
    rows = []
    for _ in range(n):
        losses = torch.rand(method.n_tasks, dtype=torch.float64).requires_grad_()
        rows.append(method.backward(losses).weights)
    return torch.stack(rows)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_weights_are_positive_sum_to_k_and_change_every_step(distribution: str) -> None:
    torch.manual_seed(0)
    method = RLW(4, distribution=distribution)
    weights = draw(method, 20)
    assert weights.dtype == torch.float64
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.full((20,), 4.0, dtype=torch.float64))
    assert all(not torch.equal(weights[i], weights[i + 1]) for i in range(19))
    assert method.scale is Scale.SUM


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_seeded_runs_repeat_exactly(distribution: str) -> None:
    torch.manual_seed(7)
    first = draw(RLW(3, distribution=distribution), 5)
    torch.manual_seed(7)
    second = draw(RLW(3, distribution=distribution), 5)
    assert torch.equal(first, second)
    torch.manual_seed(8)
    assert not torch.equal(first, draw(RLW(3, distribution=distribution), 5))


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_mean_weight_is_one_per_task(distribution: str) -> None:
    torch.manual_seed(1)
    method = RLW(3, distribution=distribution)
    weights = torch.stack([method.sample_weights(torch.zeros(3)) for _ in range(5000)])
    # per-task standard deviation is below 0.75 for both, so 5000 draws give SE < 0.011
    torch.testing.assert_close(weights.mean(dim=0), torch.ones(3), atol=0.05, rtol=0)


def test_dirichlet_marginal_is_uniform_for_two_tasks() -> None:
    """Dirichlet(1, 1): the first component is Uniform(0, 1)."""
    torch.manual_seed(2)
    method = RLW(2, distribution="dirichlet")
    u = torch.stack([method.sample_weights(torch.zeros(2))[0] / 2 for _ in range(2000)])
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3


def test_normal_weights_are_a_softmax_of_standard_normals() -> None:
    """K = 2: w_0 / 2 = sigmoid(x_0 - x_1) with x_0 - x_1 ~ N(0, 2)."""
    torch.manual_seed(3)
    method = RLW(2, distribution="normal")
    w = torch.stack(
        [method.sample_weights(torch.zeros(2, dtype=torch.float64))[0] / 2 for _ in range(2000)]
    )
    difference = torch.logit(w) / 2**0.5
    assert stats.kstest(difference.numpy(), "norm").pvalue > 1e-3


def test_display_name_follows_the_distribution() -> None:
    assert RLW(2).display_name == "RLW-Normal"
    assert RLW(2, distribution="dirichlet").display_name == "RLW-Dirichlet"
    assert RLW(2, distribution="dirichlet").hyperparameters()["distribution"] == "dirichlet"


def test_unknown_distribution_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="distribution"):
        RLW(2, distribution="uniform")
