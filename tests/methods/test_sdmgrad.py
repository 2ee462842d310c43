"""SDMGrad: the simplex projection, the lambda limits (MGDA's problem at lambda = 0, the
mean as lambda grows), a hand-computed inner step, torchjd over steps, an exact resume."""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import SDMGradWeighting

import smto
from smto.methods.sdmgrad import SDMGrad, project_onto_simplex, sdmgrad_weights
from smto.solvers.min_norm import min_norm_weights

F64 = torch.float64


def _ones(k: int) -> torch.Tensor:
    return torch.ones(k, dtype=F64)


@pytest.mark.parametrize("seed", range(5))
def test_the_projection_is_the_closest_point_of_the_simplex(seed) -> None:
    g = torch.Generator().manual_seed(seed)
    v = 3.0 * torch.randn(6, generator=g, dtype=F64)
    p = project_onto_simplex(v)
    assert bool((p >= 0).all()) and float(p.sum()) == pytest.approx(1.0)
    # Optimality: v - p is constant (theta) on the support and <= theta off it.
    theta = float((v - p)[p > 0].mean())
    torch.testing.assert_close((v - p)[p > 0], torch.full_like(v[p > 0], theta))
    assert bool(((v - p)[p == 0] <= theta + 1e-12).all())
    inside = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    torch.testing.assert_close(project_onto_simplex(inside), inside)


def test_one_hand_computed_inner_step() -> None:
    gram = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=F64)
    # s = (2 + 1) / 2 = 1.5, a = gram / (2.25 + 1e-8); grad at w = (1/2, 1/2), lambda = 0.3:
    # a @ (0.65, 0.65); the step w - lr * grad is projected.
    a = gram / (2.25 + 1e-8)
    v = torch.tensor([0.5, 0.5], dtype=F64) - 0.1 * (a @ torch.tensor([0.65, 0.65], dtype=F64))
    shift = (float(v.sum()) - 1.0) / 2.0
    expected = v - shift
    w = sdmgrad_weights(gram, torch.full((2,), 0.5, dtype=F64), 0.1, 0.5, 1, 0.3)
    torch.testing.assert_close(w, expected)


def test_lambda_zero_solves_mgda_and_large_lambda_is_the_mean() -> None:
    matrix = torch.tensor([[1.0, 0.0, 0.5], [0.2, 1.0, -0.4], [-0.3, 0.4, 1.0]], dtype=F64)
    gram = matrix @ matrix.T
    method = SDMGrad(3, lambda_=0.0, inner_lr=1.0, n_iter=5000)
    agg = method.aggregate(matrix, _ones(3))
    reference, _ = min_norm_weights(gram)
    torch.testing.assert_close(agg.weights, reference, rtol=1e-6, atol=1e-8)
    big = SDMGrad(3, lambda_=1e8).aggregate(matrix, _ones(3))
    torch.testing.assert_close(big.weights, torch.full((3,), 1.0 / 3, dtype=F64))


@pytest.mark.parametrize("lambda_", [0.0, 0.3, 2.0])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_torchjd_on_the_gram_matrix_over_steps(k, lambda_) -> None:
    g = torch.Generator().manual_seed(k)
    ours = SDMGrad(k, lambda_=lambda_)
    theirs = SDMGradWeighting(lambda_=lambda_)
    for _ in range(6):
        base = torch.randn(11, generator=g, dtype=F64)
        matrix = base + 1.5 * torch.randn(k, 11, generator=g, dtype=F64)
        agg = ours.aggregate(matrix, _ones(k))
        expected = theirs(matrix @ matrix.T)
        # The projection (shifted by the largest entry here) rounds differently, and 20 inner
        # steps of lr 10 per step amplify it: about 1e-11 relative after 6 steps.
        torch.testing.assert_close(agg.weights, expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(agg.direction, expected @ matrix, rtol=1e-9, atol=1e-12)


def test_resumes_exactly() -> None:
    g = torch.Generator().manual_seed(2)
    matrices = [torch.randn(3, 7, generator=g, dtype=F64) for _ in range(4)]
    a = smto.create("sdmgrad", 3)
    for m in matrices[:2]:
        a.aggregate(m, _ones(3))
    b = smto.create("sdmgrad", 3)
    b.load_state_dict(a.state_dict())
    for m in matrices[2:]:
        torch.testing.assert_close(
            b.aggregate(m, _ones(3)).weights, a.aggregate(m, _ones(3)).weights, rtol=0, atol=0
        )


def test_rejects_bad_hyperparameters() -> None:
    for bad in ({"lambda_": -1.0}, {"inner_lr": 0.0}, {"inner_momentum": 1.0}, {"n_iter": 0}):
        with pytest.raises(ValueError):
            SDMGrad(2, **bad)
