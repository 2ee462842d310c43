"""TrimmedMean: hand cases (an outlier's entries are trimmed), the reported weights, the
lowered trim for few tasks, and torchjd's TrimmedMean."""

from __future__ import annotations

import pytest
import torch
from test_properties import SAMPLERS, SCALES
from torchjd.aggregation import TrimmedMean as TorchjdTrimmedMean

from smto.methods.trimmed_mean import TrimmedMean

F64 = torch.float64


def _aggregate(matrix: torch.Tensor, **hyperparameters):
    k = matrix.shape[0]
    return TrimmedMean(k, **hyperparameters).aggregate(matrix, torch.ones(k, dtype=F64))


def test_an_outlier_row_is_trimmed_in_every_coordinate() -> None:
    matrix = torch.tensor(
        [[1.0, 2.0, -1.0], [1.2, 1.8, -0.8], [0.8, 2.2, -1.2], [1e6, -1e6, 1e6]], dtype=F64
    )
    agg = _aggregate(matrix)
    # Coordinate 0 keeps 1.0 and 1.2 (0.8 and 1e6 trimmed); 1: 2.0, 1.8; 2: -1.0, -0.8.
    torch.testing.assert_close(agg.direction, torch.tensor([1.1, 1.9, -0.9], dtype=F64))
    assert float(agg.weights[3]) == 0.0
    # Row 0 is kept in all 3 coordinates, row 1 in 3, row 2 in 0: weights 3/6, 3/6, 0.
    torch.testing.assert_close(agg.weights, torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=F64))


def test_without_trimming_it_is_the_mean_and_three_tasks_give_the_median() -> None:
    matrix = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    agg = _aggregate(matrix, trim_number=0)
    torch.testing.assert_close(agg.direction, matrix.mean(dim=0))
    torch.testing.assert_close(agg.weights, torch.full((5,), 0.2, dtype=F64))
    median = _aggregate(matrix[:3], trim_number=4)
    torch.testing.assert_close(median.direction, matrix[:3].median(dim=0).values)
    assert median.info["trimmed"] == 1.0
    two = _aggregate(matrix[:2])
    torch.testing.assert_close(two.direction, matrix[:2].mean(dim=0))


@pytest.mark.parametrize("trim_number", [0, 1, 2])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize(("k", "n"), [(5, 13), (7, 3), (11, 40)])
def test_matches_torchjd(sampler, scale, k, n, trim_number) -> None:
    matrix = scale * SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))
    agg = _aggregate(matrix, trim_number=trim_number)
    reference = TorchjdTrimmedMean(trim_number)(matrix)
    torch.testing.assert_close(agg.direction, reference, rtol=0, atol=0)
    assert float(agg.weights.sum()) == pytest.approx(1.0, abs=1e-12)


def test_bad_trim_number() -> None:
    with pytest.raises(ValueError, match="trim_number"):
        TrimmedMean(3, trim_number=-1)
