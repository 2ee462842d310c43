"""UPGrad: the paper's non-conflict property, the projection against an independent primal
solve (scipy's NNLS), and the cross-check with torchjd."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import nnls
from test_properties import SAMPLERS, SCALES, SHAPES, _agreeing

from smto.methods.upgrad import UPGrad

F64 = torch.float64
CASES = [
    pytest.param(s, c, k, n, id=f"{s}-{c:g}-K{k}")
    for s in SAMPLERS
    for c in SCALES
    for k, n in SHAPES
]


def _matrix(sampler: str, scale: float, k: int, n: int) -> torch.Tensor:
    return scale * SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))


def _primal_projection(matrix: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """pi(x) = x + G^T lam with lam = argmin_{lam >= 0} |x + G^T lam| (Moreau: x minus its
    projection onto the polar cone {-G^T lam}), on the K x N matrix itself."""
    lam, _ = nnls(matrix.T.numpy(), -row.numpy())
    return row + matrix.T @ torch.from_numpy(lam)


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), CASES)
def test_the_update_conflicts_with_no_task_gradient(sampler, scale, k, n) -> None:
    matrix = _matrix(sampler, scale, k, n)
    agg = UPGrad(k).aggregate(matrix, torch.ones(k, dtype=F64))
    size = float(matrix.norm(dim=1).max())
    assert float((matrix @ agg.direction).min()) >= -1e-12 * size**2
    assert bool((agg.weights >= 1.0 / k - 1e-12).all())
    assert agg.info["converged"] == 1.0


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), CASES)
def test_is_the_mean_of_the_primal_projections(sampler, scale, k, n) -> None:
    matrix = _matrix(sampler, scale, k, n)
    size = float(matrix.norm(dim=1).max())
    unit = matrix / size if size > 0 else matrix
    expected = size * torch.stack([_primal_projection(unit, g) for g in unit]).mean(dim=0)
    direction = UPGrad(k).aggregate(matrix, torch.ones(k, dtype=F64)).direction
    assert float((direction - expected).abs().max()) <= 1e-12 * size


@pytest.mark.parametrize("scale", SCALES)
def test_without_conflict_it_is_the_mean(scale) -> None:
    matrix = scale * _agreeing(4, 9, torch.Generator().manual_seed(0))
    agg = UPGrad(4).aggregate(matrix, torch.ones(4, dtype=F64))
    torch.testing.assert_close(agg.weights, torch.full((4,), 0.25, dtype=F64))
    torch.testing.assert_close(agg.direction, matrix.mean(dim=0))


def test_two_opposite_gradients_cancel() -> None:
    matrix = torch.tensor([[1.0, 0.0], [-2.0, 0.0]], dtype=F64)
    agg = UPGrad(2).aggregate(matrix, torch.ones(2, dtype=F64))
    torch.testing.assert_close(agg.direction, torch.zeros(2, dtype=F64))


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), CASES)
def test_matches_torchjd(sampler, scale, k, n) -> None:
    """torchjd's default projector normalizes the Gram matrix by its trace (zeroing it below
    norm_eps = 1e-4) and adds reg_eps = 1e-4 I; with norm_eps = 0 and reg_eps = 1e-12 the two
    solve the same problem (reg_eps = 0 fails in quadprog on singular Gram matrices)."""
    pytest.importorskip("quadprog")
    pytest.importorskip("qpsolvers")
    from torchjd._linalg import QuadprogProjector
    from torchjd.aggregation import UPGrad as TorchjdUPGrad
    from torchjd.aggregation import UPGradWeighting

    matrix = _matrix(sampler, scale, k, n)
    projector = QuadprogProjector(norm_eps=0.0, reg_eps=1e-12)
    agg = UPGrad(k).aggregate(matrix, torch.ones(k, dtype=F64))
    reference = TorchjdUPGrad(projector=projector)(matrix)
    size = float(matrix.norm(dim=1).max())
    assert float((agg.direction - reference).abs().max()) <= 1e-9 * size
    if sampler in ("normal", "weakly_conflicting", "strongly_conflicting"):  # unique weights
        weights = UPGradWeighting(projector=projector)(matrix @ matrix.T)
        torch.testing.assert_close(agg.weights, weights, rtol=1e-8, atol=1e-9)
