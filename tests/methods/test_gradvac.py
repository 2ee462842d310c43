"""GradVac: the paper's closed-form step on a hand case, and torchjd's GradVac over steps."""

from __future__ import annotations

import math

import pytest
import torch
from torchjd.aggregation import GradVac as TorchjdGradVac

import smto

F64 = torch.float64


def test_a_pair_below_its_target_is_raised_exactly_to_the_target_angle():
    method = smto.create("gradvac", 2, beta=0.0)
    method.targets = torch.full((2, 2), 0.5, dtype=F64)  # cos 60 degrees
    matrix = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)  # orthogonal: phi = 0 < 0.5
    agg = method.aggregate(matrix, torch.ones(2, dtype=F64))
    w = agg.weights - 1.0  # g_1' = g_1 + w_1 g_2 and g_2' = g_2 + w_2 g_1
    g1 = matrix[0] + w[1] * matrix[1]
    g2 = matrix[1] + w[0] * matrix[0]
    for modified, other in ((g1, matrix[1]), (g2, matrix[0])):
        cosine = float(modified @ other / (modified.norm() * other.norm()))
        assert cosine == pytest.approx(0.5, abs=1e-7)
    # the closed form: w = |g_i| (t sqrt(1 - 0) - 0) / (|g_j| sqrt(1 - t^2))
    assert float(w[1]) == pytest.approx(1.0 * 0.5 / (2.0 * math.sqrt(0.75)), rel=1e-7)
    torch.testing.assert_close(agg.direction, g1 + g2)


def test_pairs_above_their_target_are_left_alone_and_the_targets_move():
    method = smto.create("gradvac", 2, beta=0.25)
    matrix = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=F64)  # cosine 0.707 > target 0
    agg = method.aggregate(matrix, torch.ones(2, dtype=F64))
    torch.testing.assert_close(agg.weights, torch.ones(2, dtype=F64))
    expected = 0.25 * (1 / math.sqrt(2))
    torch.testing.assert_close(method.targets[0, 1], torch.tensor(expected, dtype=F64))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_it_matches_torchjd_over_several_steps(k):
    g = torch.Generator().manual_seed(k)
    ours = smto.create("gradvac", k, beta=0.3)
    theirs = TorchjdGradVac(beta=0.3)
    for step in range(6):
        base = torch.randn(11, generator=g, dtype=F64)
        matrix = base + 1.5 * torch.randn(k, 11, generator=g, dtype=F64)
        torch.manual_seed(step)
        agg = ours.aggregate(matrix, torch.ones(k, dtype=F64))
        torch.manual_seed(step)
        expected = theirs(matrix)
        torch.testing.assert_close(agg.direction, expected, rtol=1e-10, atol=1e-12)


def test_the_targets_resume_exactly():
    matrix = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    a = smto.create("gradvac", 3)
    torch.manual_seed(0)
    a.aggregate(matrix, torch.ones(3, dtype=F64))
    b = smto.create("gradvac", 3)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a.targets, b.targets)
    torch.manual_seed(1)
    first = a.aggregate(-matrix, torch.ones(3, dtype=F64)).direction
    torch.manual_seed(1)
    torch.testing.assert_close(b.aggregate(-matrix, torch.ones(3, dtype=F64)).direction, first)
