"""FairGrad: the alpha = 1 closed form (proportional fairness, Nash-MTL's weights), the
paper's limits alpha -> 0 (the sum of the gradients) and alpha -> infinity (equal
improvements), a zero gradient, a system without solution, and torchjd."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from test_properties import SAMPLERS, SHAPES, _agreeing, _normal
from torchjd.aggregation import FairGrad as TorchjdFairGrad

from smto.methods.fairgrad import FairGrad
from smto.solvers import SolverWarning
from smto.solvers.nash import solve_nash

F64 = torch.float64
ONES = torch.ones(5, dtype=F64)


def _weights(matrix: torch.Tensor, alpha: float):
    agg = FairGrad(matrix.shape[0], alpha=alpha).aggregate(matrix, ONES[: matrix.shape[0]])
    assert agg.info["converged"] == 1.0
    return agg


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("sampler", ["normal", "weakly_conflicting", "strongly_conflicting"])
@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_the_weights_solve_the_fairness_equations(alpha, sampler, k, n) -> None:
    matrix = SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))
    agg = _weights(matrix, alpha)
    improvements = matrix @ agg.direction  # (G G^T w)_i = g_i^T d
    torch.testing.assert_close(improvements, agg.weights ** (-1.0 / alpha), rtol=1e-6, atol=0)
    assert bool((agg.weights > 0).all())


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
def test_gradients_of_very_different_norms(alpha) -> None:
    """A step of the toy problem's training (norms 0.11 and 16.5, cosine -0.49), where
    Newton's damped phase first raises the residual before it converges."""
    angle = torch.tensor(-0.49).acos().item()
    directions = torch.tensor([[1.0, 0.0], [math.cos(angle), math.sin(angle)]], dtype=F64)
    matrix = torch.tensor([[0.111], [16.52]], dtype=F64) * directions
    agg = _weights(matrix, alpha)
    improvements = matrix @ agg.direction
    torch.testing.assert_close(improvements, agg.weights ** (-1.0 / alpha), rtol=1e-6, atol=0)


@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_alpha_one_is_proportional_fairness_and_nash_mtl(k, n) -> None:
    matrix = _normal(k, n, torch.Generator().manual_seed(k + n))
    agg = _weights(matrix, 1.0)
    torch.testing.assert_close(agg.weights * (matrix @ agg.direction), ONES[:k])
    nash, info = solve_nash(matrix @ matrix.T)  # its tolerance: 1e-6
    assert info["converged"] == 1.0
    torch.testing.assert_close(agg.weights, torch.from_numpy(nash), rtol=1e-6, atol=0)


def test_alpha_zero_is_the_sum_and_small_alpha_tends_to_it() -> None:
    matrix = _agreeing(4, 9, torch.Generator().manual_seed(0))  # g_i^T sum_j g_j > 0
    torch.testing.assert_close(_weights(matrix, 0.0).weights, ONES[:4])
    spread = float((matrix @ matrix.sum(dim=0)).log().abs().max())
    for alpha in (1e-2, 1e-3, 1e-4):  # w_i = (g_i^T d)^(-alpha) = 1 + O(alpha)
        w = _weights(matrix, alpha).weights
        assert float((w - 1.0).abs().max()) <= 2.0 * alpha * spread


def test_large_alpha_tends_to_equal_improvements() -> None:
    """Max-min fairness: as alpha grows, g_i^T d = w_i^(-1/alpha) -> 1 for every task, i.e.
    w -> (G G^T)^{-1} 1 where that is positive."""
    matrix = _normal(3, 11, torch.Generator().manual_seed(3))
    gram = matrix @ matrix.T
    limit = torch.linalg.solve(gram, torch.ones(3, dtype=F64))
    assert bool((limit > 0).all())
    gaps = []
    for alpha in (1e1, 1e2, 1e3, 1e4):
        agg = _weights(matrix, alpha)
        improvements = matrix @ agg.direction
        gaps.append(float(improvements.max() / improvements.min() - 1.0))
    assert all(b < a / 5 for a, b in itertools.pairwise(gaps)) and gaps[-1] < 1e-3
    torch.testing.assert_close(agg.weights, limit, rtol=1e-3, atol=0)


def test_a_zero_gradient_gets_weight_zero_and_the_others_are_solved() -> None:
    matrix = _normal(3, 7, torch.Generator().manual_seed(5))
    with_zero = torch.cat([matrix[:1], torch.zeros(1, 7, dtype=F64), matrix[1:]])
    agg = _weights(with_zero, 2.0)
    assert float(agg.weights[1]) == 0.0
    rest = _weights(matrix, 2.0)
    torch.testing.assert_close(agg.weights[[0, 2, 3]], rest.weights)
    torch.testing.assert_close(agg.direction, rest.direction)


def test_without_a_solution_the_step_warns_and_uses_the_rescaled_sum() -> None:
    matrix = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [0.5, 0.0]], dtype=F64)  # g_1 + g_2 = 0
    method = FairGrad(3, alpha=1.0)
    with pytest.warns(SolverWarning, match="no solution"):
        agg = method.aggregate(matrix, ONES[:3])
    assert agg.info["converged"] == 0.0 and method.solver_failures == 1
    assert float(agg.weights.std()) == 0.0 and float(agg.weights[0]) > 0
    torch.testing.assert_close(agg.direction, agg.weights @ matrix)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize(
    "sampler", ["normal", "weakly_conflicting", "strongly_conflicting", "zero_row"]
)
@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_matches_torchjd(alpha, sampler, k, n) -> None:
    """torchjd (as the official code) runs scipy's least_squares from w = 1/K with its default
    tolerances, reliable where the solution is of that order: gradients of norm about 1. On
    a zero gradient its weight there grows without bound; the directions agree."""
    matrix = SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        agg = FairGrad(k, alpha=alpha).aggregate(matrix, ONES[:k])
    reference = TorchjdFairGrad(alpha=alpha)(matrix)
    torch.testing.assert_close(agg.direction, reference, rtol=1e-6, atol=1e-7)


def test_alpha_must_be_non_negative() -> None:
    with pytest.raises(ValueError, match="alpha must be"):
        FairGrad(2, alpha=-1.0)
