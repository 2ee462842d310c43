"""IMTL-L, IMTL-G and the hybrid IMTL: the paper's conditions, the K x K reformulation, torchjd."""

from __future__ import annotations

import warnings

import pytest
import torch
from torchjd.aggregation import IMTLG as TorchjdIMTLG

from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.method import Space
from smto.methods.imtl import IMTL, IMTLG, IMTLL, imtl_g_weights
from smto.solvers import SolverWarning


def random_gradients(k: int, n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp(2 * torch.randn(k, 1, generator=g, dtype=dtype))
    return torch.randn(k, n, generator=g, dtype=dtype) * scales


def explicit_alpha(grads: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """The paper's formula built from the N-dimensional D and U (no Gram shortcut)."""
    units = grads / grads.norm(dim=1, keepdim=True)
    d = grads[0:1] - grads[1:]
    u = units[0:1] - units[1:]
    m = d @ u.T + eps * torch.eye(grads.shape[0] - 1, dtype=grads.dtype)
    rest = (grads[0] @ u.T) @ torch.linalg.inv(m)
    return torch.cat([(1 - rest.sum()).reshape(1), rest])


@pytest.mark.parametrize("k", range(2, 9))
def test_imtlg_equal_projections_on_unit_gradients(k):
    grads = random_gradients(k, k + 7, seed=k)
    result = IMTLG(k).aggregate(grads, torch.ones(k, dtype=grads.dtype))
    units = grads / grads.norm(dim=1, keepdim=True)
    projections = units @ result.direction
    torch.testing.assert_close(projections, projections.mean().expand(k), rtol=1e-9, atol=0)
    assert result.weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(result.direction, result.weights @ grads)
    assert result.info["converged"] == 1.0


@pytest.mark.parametrize("eps", [0.0, 1e-3, 0.5])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_imtlg_gram_form_matches_explicit_formula(k, eps):
    grads = random_gradients(k, 11, seed=10 + k)
    alpha, solved = imtl_g_weights(grads @ grads.T, eps)
    assert solved
    torch.testing.assert_close(alpha, explicit_alpha(grads, eps), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", range(2, 9))
def test_imtlg_matches_torchjd(k):
    # torchjd's IMTL-G weights pinv(A) |g| / sum(...) are the same alpha for independent
    # gradients (both give equal projections with weights summing to 1), same scale (mean).
    grads = random_gradients(k, 3 * k, seed=100 + k)
    result = IMTLG(k).aggregate(grads, torch.ones(k, dtype=grads.dtype))
    torch.testing.assert_close(result.direction, TorchjdIMTLG()(grads), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("cos", [-0.9, -0.3, 0.0, 0.4, 0.95])
def test_imtlg_two_tasks_equal_norm_gives_equal_weights(cos):
    # Main study, Appendix A.4 (IMTL-G under Assumption 1: |g_1| = |g_2|).
    g = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64))
    e1, e2 = basis.T
    sin = (1 - cos**2) ** 0.5
    grads = 2.5 * torch.stack([e1, cos * e1 + sin * e2])
    weights = IMTLG(2).aggregate(grads, torch.ones(2, dtype=grads.dtype)).weights
    torch.testing.assert_close(weights, torch.full((2,), 0.5, dtype=grads.dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_imtlg_collinear_gradients_warn_and_stay_finite(dtype):
    g = torch.Generator().manual_seed(5)
    base = torch.randn(9, generator=g, dtype=dtype)
    grads = torch.stack([base, 3 * base, 0.5 * base])
    method = IMTLG(3)
    with pytest.warns(SolverWarning):
        result = method.aggregate(grads, torch.ones(3, dtype=dtype))
    assert torch.isfinite(result.weights).all()
    assert torch.isfinite(result.direction).all()
    assert result.info["converged"] == 0.0
    assert method.solver_failures == 1
    assert result.weights.sum().item() == pytest.approx(1.0, rel=1e-5)
    # Every combination has equal projections here; the fallback is a descent direction.
    assert (grads @ result.direction > 0).all()
    assert method.state_dict()["_extra_state"]["solver_failures"] == 1


def test_imtlg_zero_gradient_does_not_produce_nan():
    grads = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    result = IMTLG(2).aggregate(grads, torch.ones(2, dtype=grads.dtype))
    assert torch.isfinite(result.weights).all()
    assert result.weights.sum().item() == pytest.approx(1.0)


def test_imtlg_default_space_is_features_and_eps_is_validated():
    assert IMTLG(2).space is Space.FEATURES
    assert IMTLG(2, space="params").space is Space.PARAMS
    assert IMTL(2).space is Space.FEATURES
    for bad in (-1e-6, float("nan"), float("inf"), "1e-6"):
        with pytest.raises(ValueError, match="eps"):
            IMTLG(2, eps=bad)
    assert IMTLG(2, eps=1e-6).hyperparameters()["eps"] == 1e-6


def test_imtl_l_terms_and_gradient_of_s():
    method = IMTLL(3)
    with torch.no_grad():
        method.s.copy_(torch.tensor([0.0, -1.0, 0.7]))
    losses = torch.tensor([2.0, 0.5, 3.0], requires_grad=True)
    terms, weights = method.terms(losses)
    s = method.s.detach()
    torch.testing.assert_close(terms.detach(), torch.exp(s) * losses.detach() - s)
    terms.sum().backward()
    torch.testing.assert_close(method.s.grad, torch.exp(s) * losses.detach() - 1)
    torch.testing.assert_close(weights, torch.exp(s))
    torch.testing.assert_close(losses.grad, weights)
    assert [name for name, _ in method.named_parameters()] == ["s"]


def test_imtl_hybrid_update_on_tinymtl():
    torch.manual_seed(0)
    model = TinyMTL(n_tasks=3).double()
    x, ys = tiny_batch(3, seed=1)
    x, ys = x.double(), [y.double() for y in ys]
    method = IMTL(3).double()
    assert [p is method.s for p in method.parameters()] == [True]
    with torch.no_grad():
        method.s.copy_(torch.tensor([0.3, -0.2, 0.1]))
    scales = torch.exp(method.s.detach())

    # Expected: IMTL-G on the representation gradients of e^s L, pushed through the encoder.
    z, losses = tiny_losses(model, x, ys)
    raw = torch.stack(
        [torch.autograd.grad(losses[k], z, retain_graph=True)[0].reshape(-1) for k in range(3)]
    )
    alpha = explicit_alpha(raw * scales[:, None])
    direction = (alpha * scales) @ raw
    expected = torch.autograd.grad(z, list(model.encoder.parameters()), direction.view_as(z))
    expected_s = scales * losses.detach() - 1
    expected_heads = [
        torch.autograd.grad(scales[k] * losses[k], head.weight, retain_graph=True)[0]
        for k, head in enumerate(model.heads)
    ]

    z, losses = tiny_losses(model, x, ys)
    result = method.backward(losses, features=z)
    torch.testing.assert_close(result.weights, alpha)
    for p, e in zip(model.encoder.parameters(), expected):
        torch.testing.assert_close(p.grad, e)
    torch.testing.assert_close(method.s.grad, expected_s)
    for head, e in zip(model.heads, expected_heads):  # heads: gradient of their scaled loss
        torch.testing.assert_close(head.weight.grad, e)
    assert result.info[f"loss_scale_{1}"] == pytest.approx(float(scales[1]))


@pytest.mark.parametrize("cls", [IMTLL, IMTLG, IMTL])
def test_runs_on_tinymtl_and_state_round_trips(cls):
    def run(method, model, steps, seed):
        out = []
        opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.05)
        for step in range(steps):
            x, ys = tiny_batch(2, seed=seed + step)
            z, losses = tiny_losses(model, x, ys)
            opt.zero_grad()
            result = method.backward(losses, model.encoder.parameters(), z)
            opt.step()
            assert result.weights.shape == (2,)
            out.append(result.weights.clone())
        return out

    torch.manual_seed(0)
    model = TinyMTL()
    method = cls(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        run(method, model, 3, seed=0)
        clone_model = TinyMTL()
        clone_model.load_state_dict(model.state_dict())
        clone = cls(2)
        clone.load_state_dict(method.state_dict())
        a = run(method, model, 3, seed=10)
        b = run(clone, clone_model, 3, seed=10)
    for wa, wb in zip(a, b):
        torch.testing.assert_close(wa, wb, rtol=0, atol=0)


def test_display_names():
    assert (IMTLL.display_name, IMTLG.display_name, IMTL.display_name) == (
        "IMTL-L",
        "IMTL-G",
        "IMTL",
    )
