"""ExcessMTL: a hand-computed step, the warm-up baseline, torchjd's ExcessMTL over steps,
the representation's statistics summed over the batch, and an exact resume."""

from __future__ import annotations

import math

import pytest
import torch
from torchjd.aggregation import ExcessMTL as TorchjdExcessMTL

import smto
from smto.methods.excess_mtl import EPS, ExcessMTL

F64 = torch.float64


def _ones(k: int) -> torch.Tensor:
    return torch.ones(k, dtype=F64)


def test_two_hand_computed_steps() -> None:
    method = ExcessMTL(2, robust_step_size=0.5)
    first = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    agg = method.aggregate(first, _ones(2))
    # Step 1 is the baseline: E = (1 / sqrt(1 + eps), 4 / sqrt(4 + eps)); weights uniform.
    torch.testing.assert_close(agg.weights, torch.full((2,), 0.5, dtype=F64))
    torch.testing.assert_close(agg.direction, first.mean(dim=0))
    e0 = [1.0 / math.sqrt(1.0 + EPS), 4.0 / math.sqrt(4.0 + EPS)]
    second = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    agg = method.aggregate(second, _ones(2))
    # S = (2, 0) and (0, 5): E = (1 / sqrt(2 + eps), 1 / sqrt(5 + eps)), divided by E^0.
    e = [1.0 / math.sqrt(2.0 + EPS) / (e0[0] + EPS), 1.0 / math.sqrt(5.0 + EPS) / (e0[1] + EPS)]
    raised = [0.5 * math.exp(0.5 * x) for x in e]
    expected = torch.tensor([r / sum(raised) for r in raised], dtype=F64)
    torch.testing.assert_close(agg.weights, expected, rtol=1e-14, atol=0.0)
    torch.testing.assert_close(agg.direction, expected @ second)
    assert float(agg.weights[0]) > 0.5  # task 1's curvature grew less: larger excess risk


def test_the_warm_up_averages_the_baseline_and_keeps_uniform_weights() -> None:
    g = torch.Generator().manual_seed(0)
    method = ExcessMTL(3, warmup_steps=3)
    for _ in range(3):
        agg = method.aggregate(torch.randn(3, 5, generator=g, dtype=F64), _ones(3))
        torch.testing.assert_close(agg.weights, torch.full((3,), 1.0 / 3, dtype=F64))
    agg = method.aggregate(torch.randn(3, 5, generator=g, dtype=F64), _ones(3))
    assert float(agg.weights.sum()) == pytest.approx(1.0)
    assert not torch.allclose(agg.weights, torch.full((3,), 1.0 / 3, dtype=F64))


@pytest.mark.parametrize("warmup", [1, 3])
@pytest.mark.parametrize("step_size", [0.1, 1.0])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_torchjd_over_steps(k, step_size, warmup) -> None:
    g = torch.Generator().manual_seed(k)
    ours = ExcessMTL(k, robust_step_size=step_size, warmup_steps=warmup)
    theirs = TorchjdExcessMTL(robust_step_size=step_size, n_warmup_steps=warmup)
    for _ in range(8):
        scales = torch.rand(k, 1, generator=g, dtype=F64) * 3.0
        matrix = scales * torch.randn(k, 13, generator=g, dtype=F64)
        agg = ours.aggregate(matrix, _ones(k))
        expected = theirs(matrix)
        torch.testing.assert_close(agg.direction, expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(agg.weights, theirs.weighting._weights, rtol=1e-12, atol=0.0)


def test_resumes_exactly() -> None:
    g = torch.Generator().manual_seed(1)
    matrices = [torch.randn(3, 7, generator=g, dtype=F64) for _ in range(4)]
    a = smto.create("excess_mtl", 3)
    for m in matrices[:2]:
        a.aggregate(m, _ones(3))
    b = smto.create("excess_mtl", 3)
    b.load_state_dict(a.state_dict())
    for m in matrices[2:]:
        torch.testing.assert_close(
            b.aggregate(m, _ones(3)).direction, a.aggregate(m, _ones(3)).direction, rtol=0, atol=0
        )


def test_representation_statistics_do_not_depend_on_the_batch_size() -> None:
    torch.manual_seed(0)
    encoder = torch.nn.Linear(4, 3)
    heads = [torch.nn.Linear(3, 1) for _ in range(2)]
    method = ExcessMTL(2, space="features")
    for batch in (8, 5):
        z = encoder(torch.randn(batch, 4))
        losses = torch.stack([h(z).pow(2).mean() for h in heads])
        result = method.backward(losses, features=z)
        assert method.squares is not None and method.squares.shape == (2, 3)
        assert float(result.weights.sum()) == pytest.approx(1.0)


def test_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="robust_step_size"):
        ExcessMTL(2, robust_step_size=0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        ExcessMTL(2, warmup_steps=0)
