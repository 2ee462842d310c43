"""DTP: the focal weight of the smoothed KPI by hand, its limits, both KPI sources, resume."""

from __future__ import annotations

import math

import pytest
import torch

import smto


def _gradient(method, losses: torch.Tensor) -> torch.Tensor:
    leaf = losses.clone().requires_grad_(True)
    terms, _ = method.terms(leaf)
    (grad,) = torch.autograd.grad(terms.sum(), leaf)
    return grad


def _focal(kpi: float, gamma: float) -> float:
    return -((1.0 - kpi) ** gamma) * math.log(kpi)


def test_the_loss_kpi_is_smoothed_and_weighted_by_its_focal_loss():
    method = smto.create("dtp", 2, gamma=2.0, alpha=0.25)
    first = torch.tensor([0.5, 2.0], dtype=torch.float64)
    expected = [_focal(math.exp(-v), 2.0) for v in first.tolist()]
    torch.testing.assert_close(
        _gradient(method, first), torch.tensor(expected, dtype=torch.float64)
    )
    second = torch.tensor([1.0, 0.1], dtype=torch.float64)
    kbar = [0.25 * math.exp(-b) + 0.75 * math.exp(-a) for a, b in zip(first, second)]
    weights = method.terms(second)[1]
    torch.testing.assert_close(
        weights, torch.tensor([_focal(k, 2.0) for k in kbar], dtype=torch.float64)
    )


def test_the_worse_task_gets_more_weight_and_a_mastered_task_none():
    method = smto.create("dtp", 3, kpi="given", alpha=1.0)
    method.observe_kpis(torch.tensor([0.2, 0.7, 1.0]))
    weights = method.terms(torch.tensor([1.0, 1.0, 1.0]))[1]
    assert weights[0] > weights[1] > weights[2] == 0.0


def test_gamma_zero_is_the_negative_log_kpi():
    method = smto.create("dtp", 2, gamma=0.0, kpi="given", alpha=1.0)
    method.observe_kpis(torch.tensor([0.5, 0.9]))
    weights = method.terms(torch.tensor([3.0, 4.0]))[1]
    torch.testing.assert_close(weights, -torch.log(torch.tensor([0.5, 0.9])))


def test_given_kpis_are_needed_before_each_backward():
    method = smto.create("dtp", 2, kpi="given")
    with pytest.raises(RuntimeError, match="observe_kpis"):
        method.terms(torch.tensor([1.0, 1.0]))
    method.observe_kpis([0.5, 0.5])
    method.terms(torch.tensor([1.0, 1.0]))
    with pytest.raises(RuntimeError, match="before each backward"):
        method.terms(torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        method.observe_kpis([0.5, 1.5])
    with pytest.raises(ValueError, match='needs kpi="given"'):
        smto.create("dtp", 2).observe_kpis([0.5, 0.5])


def test_the_state_resumes_exactly():
    steps = [torch.rand(3, generator=torch.Generator().manual_seed(s)) + 0.1 for s in range(6)]
    full = smto.create("dtp", 3)
    for losses in steps[:3]:
        full.terms(losses)
    resumed = smto.create("dtp", 3)
    resumed.load_state_dict(full.state_dict())
    for losses in steps[3:]:
        torch.testing.assert_close(resumed.terms(losses)[1], full.terms(losses)[1], rtol=0, atol=0)


def test_bad_hyperparameters_are_clear_errors():
    with pytest.raises(ValueError, match="gamma"):
        smto.create("dtp", 2, gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        smto.create("dtp", 2, alpha=0.0)
    with pytest.raises(ValueError, match="kpi must be one of"):
        smto.create("dtp", 2, kpi="accuracy")
