"""ConFIG: the paper's properties (equal cosine to every unit gradient, hence no conflict for
linearly independent gradients; the length from the projections), and torchjd's ConFIG."""

from __future__ import annotations

import pytest
import torch
from test_properties import SAMPLERS, SCALES, SHAPES
from torchjd.aggregation import ConFIG as TorchjdConFIG

from smto.methods.config import ConFIG

F64 = torch.float64
INDEPENDENT = ("normal", "weakly_conflicting", "strongly_conflicting")
"""Samplers of linearly independent gradients (K <= N)."""


def _matrix(sampler: str, scale: float, k: int, n: int) -> torch.Tensor:
    return scale * SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))


def _aggregate(matrix: torch.Tensor):
    k = matrix.shape[0]
    return ConFIG(k).aggregate(matrix, torch.ones(k, dtype=F64))


def _cases(samplers):
    return [
        pytest.param(s, c, k, n, id=f"{s}-{c:g}-K{k}")
        for s in samplers
        for c in SCALES
        for k, n in SHAPES
    ]


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), _cases(INDEPENDENT))
def test_equal_cosine_to_every_gradient_and_no_conflict(sampler, scale, k, n) -> None:
    matrix = _matrix(sampler, scale, k, n)
    direction = _aggregate(matrix).direction
    cosines = (matrix @ direction) / (matrix.norm(dim=1) * direction.norm())
    assert float(cosines.min()) > 0.0
    torch.testing.assert_close(cosines, cosines.mean().expand(k), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), _cases(SAMPLERS))
def test_its_length_is_the_sum_of_the_projections(sampler, scale, k, n) -> None:
    matrix = _matrix(sampler, scale, k, n)
    direction = _aggregate(matrix).direction
    size = float(direction.norm())
    if size == 0.0:
        return
    projections = matrix @ (direction / size)
    assert float(projections.sum()) == pytest.approx(size, rel=1e-10)


def test_orthogonal_gradients_give_their_sum_and_identical_ones_k_times_one() -> None:
    orthogonal = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
    # g_u = (1, 1, 0) / sqrt(2), length (3 + 1) / sqrt(2): the update is (2, 2, 0).
    torch.testing.assert_close(
        _aggregate(orthogonal).direction, torch.tensor([2.0, 2.0, 0.0]).to(F64)
    )
    g = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    torch.testing.assert_close(_aggregate(torch.stack([g, g, g])).direction, 3.0 * g)


def test_opposite_gradients_give_a_zero_update() -> None:
    matrix = torch.tensor([[1.0, 0.5], [-2.0, -1.0]], dtype=F64)
    agg = _aggregate(matrix)
    torch.testing.assert_close(agg.direction, torch.zeros(2, dtype=F64))
    torch.testing.assert_close(agg.weights, torch.zeros(2, dtype=F64))


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), _cases(SAMPLERS))
def test_matches_torchjd(sampler, scale, k, n) -> None:
    matrix = _matrix(sampler, scale, k, n)
    direction = _aggregate(matrix).direction
    size = float(matrix.norm(dim=1).max())
    assert float((direction - TorchjdConFIG()(matrix)).abs().max()) <= 1e-12 * size


def test_matches_torchjd_in_float32() -> None:
    matrix = _matrix("normal", 1.0, 3, 11).float()
    direction = _aggregate(matrix).direction
    torch.testing.assert_close(direction, TorchjdConFIG()(matrix), rtol=1e-4, atol=1e-5)
