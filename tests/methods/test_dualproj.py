"""DualProj: non-conflict, the identity on a mean that conflicts with no gradient, the
projection against an independent primal solve (scipy's NNLS), and torchjd."""

from __future__ import annotations

import pytest
import torch
from test_properties import SCALES, _agreeing
from test_upgrad import CASES, _matrix, _primal_projection

from smto.methods.dualproj import DualProj

F64 = torch.float64


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), CASES)
def test_the_update_conflicts_with_no_task_gradient(sampler, scale, k, n) -> None:
    matrix = _matrix(sampler, scale, k, n)
    agg = DualProj(k).aggregate(matrix, torch.ones(k, dtype=F64))
    size = float(matrix.norm(dim=1).max())
    assert float((matrix @ agg.direction).min()) >= -1e-12 * size**2
    assert bool((agg.weights >= 1.0 / k - 1e-12).all())
    assert agg.info["converged"] == 1.0


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), CASES)
def test_is_the_primal_projection_of_the_mean(sampler, scale, k, n) -> None:
    matrix = _matrix(sampler, scale, k, n)
    size = float(matrix.norm(dim=1).max())
    unit = matrix / size if size > 0 else matrix
    expected = size * _primal_projection(unit, unit.mean(dim=0))
    direction = DualProj(k).aggregate(matrix, torch.ones(k, dtype=F64)).direction
    assert float((direction - expected).abs().max()) <= 1e-12 * size


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", SCALES)
def test_is_the_identity_when_the_mean_conflicts_with_no_gradient(scale, seed) -> None:
    # Gradients that conflict pairwise but not with their mean (weakly conflicting family).
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(7, generator=g, dtype=F64)
    matrix = base + 0.6 * torch.randn(4, 7, generator=g, dtype=F64)
    assert bool((matrix @ matrix.mean(dim=0) >= 0).all())
    matrix = scale * matrix
    agg = DualProj(4).aggregate(matrix, torch.ones(4, dtype=F64))
    torch.testing.assert_close(agg.weights, torch.full((4,), 0.25, dtype=F64))
    torch.testing.assert_close(agg.direction, matrix.mean(dim=0))
    agreeing = scale * _agreeing(3, 9, g)
    direction = DualProj(3).aggregate(agreeing, torch.ones(3, dtype=F64)).direction
    torch.testing.assert_close(direction, agreeing.mean(dim=0))


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), CASES)
def test_matches_torchjd(sampler, scale, k, n) -> None:
    """As for UPGrad: torchjd's projector with norm_eps = 0 and reg_eps = 1e-12."""
    pytest.importorskip("quadprog")
    pytest.importorskip("qpsolvers")
    from torchjd._linalg import QuadprogProjector
    from torchjd.aggregation import DualProj as TorchjdDualProj
    from torchjd.aggregation import DualProjWeighting

    matrix = _matrix(sampler, scale, k, n)
    projector = QuadprogProjector(norm_eps=0.0, reg_eps=1e-12)
    agg = DualProj(k).aggregate(matrix, torch.ones(k, dtype=F64))
    reference = TorchjdDualProj(projector=projector)(matrix)
    size = float(matrix.norm(dim=1).max())
    assert float((agg.direction - reference).abs().max()) <= 1e-9 * size
    if sampler in ("normal", "weakly_conflicting", "strongly_conflicting"):
        weights = DualProjWeighting(projector=projector)(matrix @ matrix.T)
        torch.testing.assert_close(agg.weights, weights, rtol=1e-8, atol=1e-9)
