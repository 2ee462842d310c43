"""CR-MOGM: the moving average of the base's weights by hand, alpha's limits, torchjd's
CRMOGMWeighting around its UPGrad weighting over steps, an exact resume."""

from __future__ import annotations

import pytest
import torch

import smto
from smto.methods.cr_mogm import CRMOGM
from smto.methods.mgda import MGDA

F64 = torch.float64


def _ones(k: int) -> torch.Tensor:
    return torch.ones(k, dtype=F64)


def _matrices(k: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        base = torch.randn(9, generator=g, dtype=F64)
        out.append(base + 1.5 * torch.randn(k, 9, generator=g, dtype=F64))
    return out


def test_is_the_moving_average_of_the_base_weights() -> None:
    method = CRMOGM(3, alpha=0.6)
    base = MGDA(3, normalization="none")
    expected = None
    for matrix in _matrices(3, 5):
        hat = base.aggregate(matrix, _ones(3)).weights
        expected = hat if expected is None else 0.6 * expected + 0.4 * hat
        agg = method.aggregate(matrix, _ones(3))
        torch.testing.assert_close(agg.weights, expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(agg.direction, expected @ matrix)
        assert float(agg.weights.sum()) == pytest.approx(1.0)


def test_alpha_zero_is_the_base_and_alpha_one_keeps_the_first_weights() -> None:
    matrices = _matrices(3, 4, seed=1)
    plain, frozen = CRMOGM(3, base="upgrad", alpha=0.0), CRMOGM(3, base="upgrad", alpha=1.0)
    first = None
    for matrix in matrices:
        agg = plain.aggregate(matrix, _ones(3))
        expected = smto.create("upgrad", 3).aggregate(matrix, _ones(3)).weights
        torch.testing.assert_close(agg.weights, expected)
        weights = frozen.aggregate(matrix, _ones(3)).weights
        first = weights if first is None else first
        torch.testing.assert_close(weights, first)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_torchjd_around_upgrad_over_steps(k) -> None:
    """torchjd's MGDA weighting (Frank-Wolfe) is too inexact for a tight check; its UPGrad
    weighting with an unregularized projector solves the same problem as smto's UPGrad."""
    pytest.importorskip("quadprog")
    from torchjd._linalg import QuadprogProjector
    from torchjd.aggregation import CRMOGMWeighting, UPGradWeighting

    projector = QuadprogProjector(norm_eps=0.0, reg_eps=1e-12)
    theirs = CRMOGMWeighting(UPGradWeighting(projector=projector), alpha=0.7)
    ours = CRMOGM(k, base="upgrad", alpha=0.7)
    for matrix in _matrices(k, 6, seed=k):
        agg = ours.aggregate(matrix, _ones(k))
        torch.testing.assert_close(agg.weights, theirs(matrix @ matrix.T), rtol=1e-8, atol=1e-9)


def test_resumes_exactly() -> None:
    matrices = _matrices(3, 4, seed=2)
    a = smto.create("cr_mogm", 3)
    for m in matrices[:2]:
        a.aggregate(m, _ones(3))
    b = smto.create("cr_mogm", 3)
    b.load_state_dict(a.state_dict())
    for m in matrices[2:]:
        torch.testing.assert_close(
            b.aggregate(m, _ones(3)).weights, a.aggregate(m, _ones(3)).weights, rtol=0, atol=0
        )


def test_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="base"):
        CRMOGM(2, base="famo")
    with pytest.raises(ValueError, match="alpha"):
        CRMOGM(2, alpha=1.5)
