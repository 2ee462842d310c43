"""MoDo: a hand-computed step, the fixed point (MGDA's regularized problem), torchjd over
steps, an exact resume."""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import MoDoWeighting

import smto
from smto.methods.modo import MoDo

F64 = torch.float64


def _ones(k: int) -> torch.Tensor:
    return torch.ones(k, dtype=F64)


def test_one_hand_computed_step() -> None:
    matrix = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=F64)
    agg = MoDo(2, gamma=0.1, rho=0.5).aggregate(matrix, _ones(2))
    # lambda - 0.1 (A lambda + 0.5 lambda) = (0.5 - 0.1 * 2.25, 0.5 - 0.1 * 0.75)
    # = (0.275, 0.425), projected: both shifted by -0.15 to sum 1.
    expected = torch.tensor([0.425, 0.575], dtype=F64)
    torch.testing.assert_close(agg.weights, expected)
    torch.testing.assert_close(agg.direction, expected @ matrix)


def test_converges_to_the_regularized_min_norm_weights() -> None:
    # Orthogonal gradients of norms 2 and 1: min over the simplex of 4 a^2 + b^2 + rho |w|^2
    # (rho = 0) is a = 1/5, b = 4/5.
    matrix = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=F64)
    method = MoDo(2, gamma=0.05, rho=0.0)
    for _ in range(500):
        agg = method.aggregate(matrix, _ones(2))
    torch.testing.assert_close(agg.weights, torch.tensor([0.2, 0.8], dtype=F64))


@pytest.mark.parametrize(("gamma", "rho"), [(0.1, 0.1), (1e-3, 0.1), (0.5, 0.0)])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_torchjd_on_the_gram_matrix_over_steps(k, gamma, rho) -> None:
    g = torch.Generator().manual_seed(k)
    ours = MoDo(k, gamma=gamma, rho=rho)
    theirs = MoDoWeighting(gamma=gamma, rho=rho)
    for _ in range(8):
        base = torch.randn(11, generator=g, dtype=F64)
        matrix = base + 1.5 * torch.randn(k, 11, generator=g, dtype=F64)
        agg = ours.aggregate(matrix, _ones(k))
        expected = theirs(matrix @ matrix.T)
        torch.testing.assert_close(agg.weights, expected, rtol=1e-12, atol=1e-14)


def test_resumes_exactly() -> None:
    g = torch.Generator().manual_seed(3)
    matrices = [torch.randn(3, 7, generator=g, dtype=F64) for _ in range(4)]
    a = smto.create("modo", 3, gamma=0.1)
    for m in matrices[:2]:
        a.aggregate(m, _ones(3))
    b = smto.create("modo", 3, gamma=0.1)
    b.load_state_dict(a.state_dict())
    for m in matrices[2:]:
        torch.testing.assert_close(
            b.aggregate(m, _ones(3)).weights, a.aggregate(m, _ones(3)).weights, rtol=0, atol=0
        )


def test_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="gamma"):
        MoDo(2, gamma=0.0)
    with pytest.raises(ValueError, match="rho"):
        MoDo(2, rho=-1.0)
