"""CAGrad: the inner problem against scipy, its dual, Proposition 1, alpha = 0, torchjd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import smto.methods.cagrad as cagrad_module
from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.method import Scale
from smto.methods.cagrad import CAGrad
from smto.solvers import SolverWarning


def objective(a: np.ndarray, w: np.ndarray, c: float) -> float:
    """The original's objective, written out here independently."""
    k = a.shape[0]
    return float(w @ a @ np.ones(k) / k + c * np.sqrt(w @ a @ w + 1e-8))


def scipy_solve(a: np.ndarray, c: float) -> float:
    """Direct SLSQP minimization over the simplex from several starts; the best value."""
    k = a.shape[0]
    best = np.inf
    for start in [np.full(k, 1.0 / k), *np.eye(k)[:2]]:
        result = minimize(
            lambda x: objective(a, x, c),
            start,
            jac=lambda x: a @ np.full(k, 1.0 / k) + c * (a @ x) / np.sqrt(x @ a @ x + 1e-8),
            bounds=[(0.0, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0}],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 3000},
        )
        x = np.clip(result.x, 0.0, None)
        best = min(best, objective(a, x / x.sum(), c))
    return best


def random_matrix(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = 2 + seed % 9
    p = [k + 4, max(1, k - 1), 3 * k][seed % 3]
    m = torch.randn(k, p, dtype=torch.float64, generator=g)
    m = m * torch.exp(torch.randn(k, 1, dtype=torch.float64, generator=g))
    if seed % 4 == 1:
        m[-1] = m[0]
    if seed % 5 == 2:
        m[0] = 0.0
    return m


def inner_weights(agg_weights: torch.Tensor, alpha: float, rescale: int) -> np.ndarray:
    """Recovers w of the inner problem from the effective weights (1/K + lam w) / r."""
    k = agg_weights.shape[0]
    r = {0: 1.0, 1: 1.0 + alpha**2, 2: 1.0 + alpha}[rescale]
    lam_w = agg_weights.numpy() * r - 1.0 / k
    return lam_w / lam_w.sum()


@pytest.mark.parametrize("seed", range(18))
@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_inner_problem_matches_scipy(seed: int, alpha: float) -> None:
    m = random_matrix(seed)
    a = (m @ m.T).numpy()
    c = alpha * math.sqrt(a.mean())
    agg = CAGrad(m.shape[0], alpha=alpha).aggregate(m, torch.ones(m.shape[0]))
    assert agg.info["converged"] == 1.0
    w = inner_weights(agg.weights, alpha, 1)
    ours, reference = objective(a, w, c), scipy_solve(a, c)
    assert abs(ours - reference) <= 1e-6 * abs(reference)
    torch.testing.assert_close(agg.direction, agg.weights @ m)


@pytest.mark.parametrize("seed", range(8))
def test_update_solves_the_primal_problem(seed: int) -> None:
    """Without rescaling the update d lies on the sphere |d - g0| = c and attains the dual
    value: min_k g_k.d = min_w g_w.g0 + c |g_w| (strong duality of max-min over the ball)."""
    m = random_matrix(seed)
    alpha = 0.5
    agg = CAGrad(m.shape[0], alpha=alpha, rescale=0).aggregate(m, torch.ones(m.shape[0]))
    g0 = m.mean(dim=0)
    c = alpha * float(g0.norm())
    d = agg.direction
    if float((d - g0) @ (d - g0)) == 0.0:  # |g_w| = 0: g0 alone
        return
    assert float((d - g0).norm()) == pytest.approx(c, rel=1e-10)
    a = (m @ m.T).numpy()
    w = inner_weights(agg.weights, alpha, 0)
    dual = float(w @ a @ np.full(len(w), 1.0 / len(w)) + c * math.sqrt(max(w @ a @ w, 0.0)))
    assert float((m @ d).min()) == pytest.approx(dual, rel=1e-5, abs=1e-5 * float(a.max()))


def test_alpha_zero_is_exactly_the_mean() -> None:
    m = random_matrix(3)
    k = m.shape[0]
    for rescale in (0, 1, 2):
        agg = CAGrad(k, alpha=0.0, rescale=rescale).aggregate(m, torch.ones(k))
        assert torch.equal(agg.weights, torch.full((k,), 1.0 / k, dtype=m.dtype))
        torch.testing.assert_close(agg.direction, m.mean(dim=0), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_proposition_1_equal_norms_give_equal_weights(seed: int) -> None:
    """Main study, App. A.4, Proposition 1: two gradients of equal norm, equal weights."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(2, 6, dtype=torch.float64, generator=g)
    m = m / m.norm(dim=1, keepdim=True) * (0.1 + seed)
    for alpha in (0.2, 0.5, 0.8):
        weights = CAGrad(2, alpha=alpha).aggregate(m, torch.ones(2)).weights
        assert float(weights[0]) == pytest.approx(float(weights[1]), rel=1e-8)


@pytest.mark.parametrize("seed", range(6))
def test_matches_torchjd(seed: int) -> None:
    """torchjd's CAGrad (cvxpy + Clarabel) reports 1/K + (c / |g_w|) w, like the original's
    log: without the rescale factor and without the 1e-8 inside the square root, so the
    comparison is ours * (1 + alpha^2) at a tolerance covering both."""
    pytest.importorskip("cvxpy")
    from torchjd.aggregation import CAGradWeighting

    m = random_matrix(seed) * 3.0
    k = m.shape[0]
    alpha = 0.5
    ours = CAGrad(k, alpha=alpha).aggregate(m, torch.ones(k)).weights * (1 + alpha**2)
    theirs = CAGradWeighting(c=alpha)(m @ m.T)
    if not theirs.any():
        # torchjd's convention where the optimal g_w is near zero (|g_w| < 1e-4 after scaling
        # the Gram matrix to unit trace), which happens here with a zero gradient (seed 2):
        # the zero update. The original (and we) keep g0 + (c / |g_w|) g_w, with g_w of the
        # order of sqrt(1e-8) set by the constant inside the square root.
        w = inner_weights(ours / (1 + alpha**2), alpha, 1)
        a = (m @ m.T).numpy()
        assert math.sqrt(w @ a @ w / np.trace(a)) < 1e-4
        return
    # The direction is unique; the weights are not where gradients repeat (seed 1).
    scale = float(m.norm(dim=1).max())
    np.testing.assert_allclose((ours @ m).numpy(), (theirs @ m).numpy(), atol=1e-4 * scale)
    if torch.linalg.matrix_rank(m) == k:
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-4, rtol=1e-4)


def test_rescale_options_and_scale() -> None:
    assert CAGrad.scale is Scale.CUSTOM
    m = random_matrix(5)
    k = m.shape[0]
    weights = {
        r: CAGrad(k, alpha=0.8, rescale=r).aggregate(m, torch.ones(k)).weights for r in (0, 1, 2)
    }
    torch.testing.assert_close(weights[1], weights[0] / (1 + 0.8**2))
    torch.testing.assert_close(weights[2], weights[0] / 1.8)


def test_validation() -> None:
    for bad in (-0.1, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="alpha"):
            CAGrad(2, alpha=bad)
    for bad in (3, -1, True, 1.0):
        with pytest.raises(ValueError, match="rescale"):
            CAGrad(2, rescale=bad)


def test_solver_failure_is_counted_warned_and_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(gram, c, tol=1e-9):
        k = gram.shape[0]
        return np.full(k, 1.0 / k), {"converged": 0.0, "solver_iterations": 3.0, "gap": 1.0}

    monkeypatch.setattr(cagrad_module, "cagrad_inner", failing)
    method = CAGrad(2)
    with pytest.warns(SolverWarning):
        agg = method.aggregate(torch.eye(2, dtype=torch.float64), torch.ones(2))
    assert agg.info["converged"] == 0.0 and method.solver_failures == 1
    restored = CAGrad(2)
    restored.load_state_dict(method.state_dict())
    assert restored.solver_failures == 1


def test_runs_through_backward_and_round_trips() -> None:
    torch.manual_seed(0)
    model = TinyMTL(3)
    x, ys = tiny_batch(3)
    first, second = CAGrad(3), CAGrad(3)
    second.load_state_dict(first.state_dict())
    outs = []
    for method in (first, second):
        model.zero_grad()
        z, losses = tiny_losses(model, x, ys)
        result = method.backward(losses, model.encoder.parameters(), z)
        assert result.weights.shape == (3,) and result.info["converged"] == 1.0
        outs.append(result.weights)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
