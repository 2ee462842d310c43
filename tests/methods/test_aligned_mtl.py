"""Aligned-MTL: cross-check with torchjd, and the balance transformation's defining property."""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import AlignedMTL as TorchjdAlignedMTL
from torchjd.aggregation import AlignedMTLWeighting

from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.methods.aligned_mtl import AlignedMTL, balance_transformation


def random_gradients(k: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.randn(k, 1, generator=g, dtype=torch.float64))
    return torch.randn(k, n, generator=g, dtype=torch.float64) * scales


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize(("k", "n"), [(2, 5), (3, 10), (5, 7), (8, 20), (6, 3), (4, 4)])
def test_matches_torchjd(k, n, scale_mode):
    # Same convention as torchjd (uniform preferences 1/K); (6, 3) is rank-deficient.
    grads = random_gradients(k, n, seed=7 * k + n)
    result = AlignedMTL(k, scale_mode=scale_mode).aggregate(grads, torch.ones(k))
    reference = TorchjdAlignedMTL(scale_mode=scale_mode)(grads)
    torch.testing.assert_close(result.direction, reference, rtol=1e-9, atol=1e-10)
    weights = AlignedMTLWeighting(scale_mode=scale_mode)(grads @ grads.T)
    torch.testing.assert_close(result.weights, weights, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(result.direction, result.weights @ grads)
    assert result.info["rank"] == min(k, n)


@pytest.mark.parametrize("k", range(2, 7))
def test_aligned_gradients_are_orthogonal_with_norm_sqrt_lambda_min(k):
    grads = random_gradients(k, 3 * k, seed=k)
    gram = grads @ grads.T
    b, rank = balance_transformation(gram, "min")
    assert rank == k
    aligned_gram = b @ gram @ b  # Gram of the aligned gradients (columns of G^T B)
    lam_min = torch.linalg.eigvalsh(gram).min()
    torch.testing.assert_close(aligned_gram, lam_min * torch.eye(k, dtype=gram.dtype))


def test_orthogonal_equal_norm_gradients_get_uniform_weights():
    q, _ = torch.linalg.qr(torch.randn(10, 4, dtype=torch.float64))
    grads = 3.0 * q.T
    weights = AlignedMTL(4).aggregate(grads, torch.ones(4)).weights
    torch.testing.assert_close(weights, torch.full((4,), 0.25, dtype=torch.float64))


def test_zero_gradients_give_identity_balance():
    grads = torch.zeros(3, 5, dtype=torch.float64)
    result = AlignedMTL(3).aggregate(grads, torch.ones(3))
    torch.testing.assert_close(result.weights, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert result.info["rank"] == 0


def test_invalid_scale_mode():
    with pytest.raises(ValueError, match="scale_mode"):
        AlignedMTL(2, scale_mode="max")


def test_runs_on_tinymtl_and_state_round_trips():
    torch.manual_seed(0)
    model = TinyMTL()
    method = AlignedMTL(2)
    clone = AlignedMTL(2)
    clone.load_state_dict(method.state_dict())
    for step in range(3):
        x, ys = tiny_batch(2, seed=step)
        z, losses = tiny_losses(model, x, ys)
        result = method.backward(losses, model.encoder.parameters(), z)
        assert result.weights.shape == (2,)
        z, losses = tiny_losses(model, x, ys)
        other = clone.backward(losses, model.encoder.parameters(), z)
        torch.testing.assert_close(result.weights, other.weights, rtol=0, atol=0)
        model.zero_grad()
