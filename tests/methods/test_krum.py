"""Krum and Multi-Krum: hand cases (an outlier is never selected), the scores, the mean below
f + 3 tasks, and torchjd's Krum."""

from __future__ import annotations

import pytest
import torch
from test_properties import SAMPLERS, SCALES
from torchjd.aggregation import Krum as TorchjdKrum
from torchjd.aggregation import KrumWeighting

from smto.methods.krum import Krum

F64 = torch.float64


def _aggregate(matrix: torch.Tensor, **hyperparameters):
    k = matrix.shape[0]
    return Krum(k, **hyperparameters).aggregate(matrix, torch.ones(k, dtype=F64))


def test_selects_the_most_central_gradient_and_never_the_outlier() -> None:
    matrix = torch.tensor(
        [[1.0, 0.0], [1.1, 0.0], [0.9, -0.1], [1.0, 0.2], [50.0, -40.0]], dtype=F64
    )
    agg = _aggregate(matrix, n_byzantine=1)
    # Scores (squared distances to the 2 nearest): 0.01 + 0.02, 0.01 + 0.05, 0.02 + 0.05,
    # 0.04 + 0.05, and the outlier's: row 0 is selected.
    torch.testing.assert_close(agg.weights, torch.tensor([1.0, 0, 0, 0, 0], dtype=F64))
    torch.testing.assert_close(agg.direction, matrix[0])
    multi = _aggregate(matrix, n_byzantine=1, n_selected=4)
    assert float(multi.weights[4]) == 0.0
    torch.testing.assert_close(multi.direction, matrix[:4].mean(dim=0))


def test_squared_and_euclidean_scores_can_select_differently() -> None:
    # 5 gradients, f = 0: scores over the 3 nearest. Row 3's distances are 1, sqrt(9),
    # sqrt(13) (squared sum 23, sum 7.606), row 4's 1, 2, sqrt(20) (25, 7.472): the paper's
    # squared score picks row 3, torchjd's Euclidean one row 4.
    matrix = torch.tensor([[-2.0, -1.0], [3.0, 3.0], [-3.0, 1.0], [0.0, 3.0], [1.0, 3.0]])
    matrix = matrix.to(F64)
    squared = _aggregate(matrix, distance="squared")
    euclidean = _aggregate(matrix, distance="euclidean")
    torch.testing.assert_close(squared.direction, matrix[3])
    torch.testing.assert_close(euclidean.direction, matrix[4])


@pytest.mark.parametrize("k", [1, 2])
def test_below_f_plus_3_tasks_the_update_is_the_mean(k) -> None:
    matrix = torch.randn(k, 5, generator=torch.Generator().manual_seed(k), dtype=F64)
    agg = _aggregate(matrix)
    torch.testing.assert_close(agg.direction, matrix.mean(dim=0))
    agg = _aggregate(torch.randn(4, 5, dtype=F64), n_byzantine=2)
    torch.testing.assert_close(agg.weights, torch.full((4,), 0.25, dtype=F64))


@pytest.mark.parametrize("n_selected", [1, 2])
@pytest.mark.parametrize("n_byzantine", [0, 1])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize(("k", "n"), [(4, 9), (5, 13), (7, 3)])
def test_matches_torchjd(sampler, scale, k, n, n_byzantine, n_selected) -> None:
    """Same selection as torchjd's Euclidean Krum, except between tied scores (with one
    neighbour, two mutually nearest gradients always tie), which smto averages and torchjd
    picks from: there the mean selected score agrees."""
    matrix = scale * SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))
    agg = _aggregate(matrix, n_byzantine=n_byzantine, n_selected=n_selected, distance="euclidean")
    weights = KrumWeighting(n_byzantine, n_selected)(matrix @ matrix.T)
    if torch.equal(agg.weights, weights):
        reference = TorchjdKrum(n_byzantine, n_selected)(matrix)
        torch.testing.assert_close(agg.direction, reference, rtol=1e-12, atol=0)
    else:
        distances = torch.cdist(matrix, matrix).fill_diagonal_(torch.inf)
        scores = distances.topk(k - n_byzantine - 2, largest=False).values.sum(dim=1)
        torch.testing.assert_close(agg.weights @ scores, weights @ scores, rtol=1e-6, atol=0)


def test_tied_scores_share_the_selection() -> None:
    # f = 0, K = 3: one neighbour; rows 0 and 1 are mutually nearest (distance 1), row 2 is
    # far: their scores tie and the update is their mean, whatever the order.
    matrix = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 10.0]], dtype=F64)
    for perm in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
        agg = _aggregate(matrix[perm])
        torch.testing.assert_close(agg.direction, torch.tensor([0.5, 0.0], dtype=F64))
    multi = _aggregate(torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=F64), n_selected=2)
    # Scores (squared, 2 nearest): 1 + 9, 1 + 4, 4 + 9, 16 + 36: rows 1 and 0.
    torch.testing.assert_close(multi.weights, torch.tensor([0.5, 0.5, 0, 0], dtype=F64))


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="n_byzantine"):
        Krum(3, n_byzantine=-1)
    with pytest.raises(ValueError, match="n_selected"):
        Krum(3, n_selected=4)
    with pytest.raises(ValueError, match="distance"):
        Krum(3, distance="l1")
