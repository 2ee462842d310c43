"""GLS and DB-MTL against their definitions, computed independently with autograd."""

from __future__ import annotations

import pytest
import torch

import smto
from conftest import TinyMTL, tiny_batch, tiny_losses


def _shared_grads(model: TinyMTL) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.encoder.parameters()])


def test_gls_gives_the_gradient_of_the_geometric_mean_of_the_losses():
    torch.manual_seed(0)
    model = TinyMTL(n_tasks=3)
    x, ys = tiny_batch(3)
    _, losses = tiny_losses(model, x, ys)
    losses.prod().pow(1.0 / 3).backward()
    expected = _shared_grads(model)
    heads_expected = [p.grad.clone() for p in model.heads.parameters()]
    model.zero_grad()
    _, losses = tiny_losses(model, x, ys)
    result = smto.create("gls", 3).backward(losses, model.encoder.parameters())
    torch.testing.assert_close(_shared_grads(model), expected, rtol=1e-5, atol=1e-7)
    for p, g in zip(model.heads.parameters(), heads_expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    values = losses.detach()
    torch.testing.assert_close(result.weights, values.prod().pow(1 / 3) / (3 * values))


def test_gls_ignores_the_relative_scale_of_the_losses():
    """Multiplying one loss by c multiplies the geometric mean by c^(1/K) and leaves the
    direction of the update unchanged."""
    losses = torch.tensor([0.5, 2.0, 8.0])
    scaled = losses * torch.tensor([1.0, 1.0, 1000.0])
    gls = smto.create("gls", 3)
    w, w_scaled = gls.terms(losses)[1], gls.terms(scaled)[1]
    torch.testing.assert_close(w_scaled * scaled / (w * losses), torch.full((3,), 1000 ** (1 / 3)))


def _libmtl_db_mtl(grads_of_log, beta, beta_sigma, buffer, step):
    """The authors' update from the gradients of log(L_k + 1e-8), written out directly."""
    buffer = grads_of_log + (beta / step**beta_sigma) * (buffer - grads_of_log)
    norms = buffer.norm(dim=-1)
    alpha = norms.max() / (norms + 1e-8)
    return (alpha[:, None] * buffer).sum(dim=0), buffer


@pytest.mark.parametrize(("beta", "beta_sigma"), [(0.9, 0.0), (0.5, 0.5)])
def test_db_mtl_follows_the_authors_update_over_steps(beta, beta_sigma):
    torch.manual_seed(0)
    model = TinyMTL(n_tasks=2)
    method = smto.create("db_mtl", 2, beta=beta, beta_sigma=beta_sigma)
    buffer = torch.zeros(2, sum(p.numel() for p in model.encoder.parameters()))
    for step in range(1, 5):
        x, ys = tiny_batch(2, seed=step)
        rows = []
        for k in range(2):
            model.zero_grad()
            _, losses = tiny_losses(model, x, ys)
            torch.log(losses[k] + 1e-8).backward()
            rows.append(_shared_grads(model).clone())
        expected, buffer = _libmtl_db_mtl(torch.stack(rows), beta, beta_sigma, buffer, step)
        model.zero_grad()
        _, losses = tiny_losses(model, x, ys)
        result = method.backward(losses, model.encoder.parameters())
        torch.testing.assert_close(_shared_grads(model), expected, rtol=1e-5, atol=1e-8)
        assert result.weights.shape == (2,) and bool((result.weights > 0).all())


def test_db_mtl_scales_every_ema_gradient_to_the_largest_norm():
    method = smto.create("db_mtl", 2, beta=0.0)
    matrix = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    agg = method.aggregate(matrix, torch.ones(2, dtype=torch.float64))
    h = matrix / (1 + 1e-8)
    expected = h[0] + (h[0].norm() / (h[1].norm() + 1e-8)) * h[1]
    torch.testing.assert_close(agg.direction, expected)


def test_db_mtl_resumes_its_ema_exactly():
    matrix = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    losses = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    a = smto.create("db_mtl", 3)
    a.aggregate(matrix, losses)
    b = smto.create("db_mtl", 3)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(
        a.aggregate(2 * matrix, losses).direction, b.aggregate(2 * matrix, losses).direction
    )


def test_si_mtl_scales_this_steps_log_loss_gradients_to_the_largest_norm():
    """SI-MTL (DB-MTL's first version): no EMA, every step on its own."""
    method = smto.create("si_mtl", 2)
    assert method.display_name == "SI-MTL" and method.beta == 0.0
    rng = torch.Generator().manual_seed(3)
    for _ in range(3):
        matrix = torch.randn(2, 5, generator=rng, dtype=torch.float64)
        losses = torch.rand(2, generator=rng, dtype=torch.float64) + 0.1
        h = matrix / (losses[:, None] + 1e-8)
        norms = h.norm(dim=1)
        expected = ((norms.max() / (norms + 1e-8))[:, None] * h).sum(dim=0)
        torch.testing.assert_close(method.aggregate(matrix, losses).direction, expected)
