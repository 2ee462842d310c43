"""MoCo against the authors' update written out directly, the simplex projection, resume."""

from __future__ import annotations

import pytest
import torch

import smto
from smto.methods.moco import simplex_projection

F64 = torch.float64


def _authors_step(matrix, losses, y, lambd, step, beta=0.5, bs=0.5, gamma=0.1, gs=0.5, rho=0.0):
    """LibMTL's MoCo step (the authors' code), in plain tensor algebra."""
    grads = matrix / (matrix.norm(dim=1, keepdim=True) + 1e-8) * losses[:, None]
    y = y - (beta / step**bs) * (y - grads)
    k = matrix.shape[0]
    lambd = torch.softmax(
        lambd - (gamma / step**gs) * (y @ y.T + rho * torch.eye(k, dtype=F64)) @ lambd, -1
    )
    return y.T @ lambd, y, lambd


@pytest.mark.parametrize("k", [2, 3])
def test_it_follows_the_authors_update_over_steps(k):
    g = torch.Generator().manual_seed(k)
    method = smto.create("moco", k, rho=0.1)
    y = torch.zeros(k, 9, dtype=F64)
    lambd = torch.full((k,), 1.0 / k, dtype=F64)
    for step in range(1, 6):
        matrix = torch.randn(k, 9, generator=g, dtype=F64)
        losses = torch.rand(k, generator=g, dtype=F64) + 0.2
        expected, y, lambd = _authors_step(matrix, losses, y, lambd, step, rho=0.1)
        agg = method.aggregate(matrix, losses)
        torch.testing.assert_close(agg.direction, expected)
        torch.testing.assert_close(method.lambdas, lambd)


def test_the_first_steps_weights_reproduce_its_update():
    matrix = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    agg = smto.create("moco", 3).aggregate(matrix, torch.tensor([1.0, 2.0, 0.5], dtype=F64))
    torch.testing.assert_close(agg.direction, agg.weights @ matrix)


def test_simplex_projection():
    torch.testing.assert_close(
        simplex_projection(torch.tensor([0.5, 0.2, 0.3], dtype=F64)),
        torch.tensor([0.5, 0.2, 0.3], dtype=F64),
    )
    torch.testing.assert_close(
        simplex_projection(torch.tensor([2.0, 0.0, -1.0], dtype=F64)),
        torch.tensor([1.0, 0.0, 0.0], dtype=F64),
    )
    torch.testing.assert_close(
        simplex_projection(torch.tensor([1.0, 1.0], dtype=F64)), torch.tensor([0.5, 0.5], dtype=F64)
    )
    v = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=F64)
    p = simplex_projection(v)
    assert float(p.sum()) == pytest.approx(1.0) and bool((p >= 0).all())
    # optimality: v - p is constant on the support of p
    residual = (v - p)[p > 0]
    torch.testing.assert_close(residual, residual[:1].expand_as(residual))


def test_the_papers_projection_keeps_lambda_on_the_simplex():
    method = smto.create("moco", 3, lambda_update="projection", gamma=5.0)
    g = torch.Generator().manual_seed(2)
    for _ in range(4):
        method.aggregate(torch.randn(3, 4, generator=g, dtype=F64), torch.ones(3, dtype=F64))
        assert float(method.lambdas.sum()) == pytest.approx(1.0)
        assert bool((method.lambdas >= 0).all())


def test_the_state_resumes_exactly():
    g = torch.Generator().manual_seed(4)
    matrix = torch.randn(2, 6, generator=g, dtype=F64)
    a = smto.create("moco", 2)
    a.aggregate(matrix, torch.ones(2, dtype=F64))
    b = smto.create("moco", 2)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(
        a.aggregate(-matrix, torch.ones(2, dtype=F64)).direction,
        b.aggregate(-matrix, torch.ones(2, dtype=F64)).direction,
    )
