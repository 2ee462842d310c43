"""GO4Align: the authors' update by hand, the exact grouping, its limits and its state."""

from __future__ import annotations

import itertools

import pytest
import torch

import smto
from smto.methods.go4align import group_means


def _gradient(method, losses: torch.Tensor) -> torch.Tensor:
    leaf = losses.clone().requires_grad_(True)
    terms, _ = method.terms(leaf)
    (grad,) = torch.autograd.grad(terms.sum(), leaf)
    return grad


def test_each_task_its_own_group_is_the_scale_balance_times_the_risk_term():
    method = smto.create("go4align", 3, num_groups=3, robust_step_size=0.5)
    first = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    second = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    risk = torch.exp(-0.5 * first) / torch.exp(-0.5 * first).sum()
    torch.testing.assert_close(_gradient(method, first), 7.0 / first * risk)
    risk = torch.exp(-0.5 * (first + second)) / torch.exp(-0.5 * (first + second)).sum()
    torch.testing.assert_close(_gradient(method, second), 4.5 / second * risk)
    assert method.steps == 2


def test_one_group_weighs_every_task_by_the_mean_indicator():
    method = smto.create("go4align", 3)  # the release's defaults: one group, eta = 1e-4
    losses = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    risk = torch.exp(-1e-4 * losses) / torch.exp(-1e-4 * losses).sum()
    expected = (7.0 / losses * risk).mean()
    weights = method.terms(losses)[1]
    torch.testing.assert_close(weights, expected.expand(3))


def test_tasks_of_close_indicators_share_their_mean():
    method = smto.create("go4align", 3, num_groups=2, robust_step_size=0.0)
    losses = torch.tensor([10.0, 9.0, 1.0], dtype=torch.float64)  # gamma = 20 / (3 L)
    gamma = 20.0 / (3.0 * losses)
    low = (gamma[0] + gamma[1]) / 2
    torch.testing.assert_close(method.terms(losses)[1], torch.stack([low, low, gamma[2]]))


def _brute_force_cost(values: list[float], n_groups: int) -> float:
    best = float("inf")
    for labels in itertools.product(range(n_groups), repeat=len(values)):
        if len(set(labels)) != n_groups:
            continue
        cost = 0.0
        for g in range(n_groups):
            members = [v for v, label in zip(values, labels) if label == g]
            mean = sum(members) / len(members)
            cost += sum((v - mean) ** 2 for v in members)
        best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_groups", [2, 3])
def test_the_grouping_is_the_optimal_k_means_of_the_indicators(seed, n_groups):
    values = torch.rand(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    means = group_means(values, n_groups)
    assert len(set(means.tolist())) == n_groups
    for mean in set(means.tolist()):  # each group's value is its members' mean
        members = values[means == mean]
        assert mean == pytest.approx(float(members.mean()))
    cost = float(((values - means) ** 2).sum())
    assert cost == pytest.approx(_brute_force_cost(values.tolist(), n_groups), abs=1e-12)


def test_the_state_resumes_exactly():
    torch.manual_seed(0)
    steps = [torch.rand(4, dtype=torch.float64) + 0.1 for _ in range(6)]
    full = smto.create("go4align", 4, num_groups=2, robust_step_size=0.3)
    for losses in steps[:3]:
        full.terms(losses)
    resumed = smto.create("go4align", 4, num_groups=2, robust_step_size=0.3)
    resumed.load_state_dict(full.state_dict())
    for losses in steps[3:]:
        torch.testing.assert_close(resumed.terms(losses)[1], full.terms(losses)[1], rtol=0, atol=0)
    assert resumed.steps == full.steps == 6


def test_bad_hyperparameters_are_clear_errors():
    with pytest.raises(ValueError, match=r"num_groups must be an integer in 1\.\.2"):
        smto.create("go4align", 2, num_groups=3)
    with pytest.raises(ValueError, match="num_groups"):
        smto.create("go4align", 2, num_groups=0)
    with pytest.raises(ValueError, match="robust_step_size"):
        smto.create("go4align", 2, robust_step_size=-1.0)
