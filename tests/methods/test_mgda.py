"""The min-norm solver and MGDA / MGDA-UB, against independent solves and torchjd."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torchjd.aggregation import MGDAWeighting

import smto.methods.mgda as mgda_module
from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.method import Scale, Space
from smto.methods.mgda import MGDA
from smto.solvers import SolverWarning
from smto.solvers.min_norm import min_norm_weights, solve_min_norm


def scipy_min_norm(a: np.ndarray) -> np.ndarray:
    """An independent QP solve: SLSQP on the simplex, from several starts, best kept."""
    k = a.shape[0]
    best, best_value = None, np.inf
    for start in [np.full(k, 1.0 / k), *np.eye(k)]:
        result = minimize(
            lambda x: x @ a @ x,
            start,
            jac=lambda x: 2.0 * a @ x,
            bounds=[(0.0, 1.0)] * k,
            constraints=[
                {"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones(k)}
            ],
            method="SLSQP",
            options={"ftol": 1e-16, "maxiter": 2000},
        )
        x = np.clip(result.x, 0.0, None)
        x /= x.sum()
        if x @ a @ x < best_value:
            best, best_value = x, x @ a @ x
    return best


def random_matrix(seed: int) -> tuple[torch.Tensor, str]:
    """K x P matrices, K = 2..11, with P < K, duplicated and zero rows, rank one, shifted."""
    g = torch.Generator().manual_seed(seed)
    k = 2 + seed % 10
    kind = ["generic", "wide", "short", "duplicate", "zero", "rank1", "shifted"][seed % 7]
    p = {"short": max(1, k // 2), "wide": 3 * k}.get(kind, k + 3)
    m = torch.randn(k, p, generator=g, dtype=torch.float64)
    m = m * torch.exp(torch.randn(k, 1, generator=g, dtype=torch.float64))
    if kind == "duplicate":
        m[-1] = m[0]
    elif kind == "zero":
        m[k // 2] = 0.0
    elif kind == "rank1":
        m = torch.randn(k, 1, generator=g, dtype=torch.float64) * torch.randn(
            1, p, generator=g, dtype=torch.float64
        )
    elif kind == "shifted":  # all gradients close to a common one: no conflicts
        m = m + 10.0 * torch.randn(1, p, generator=g, dtype=torch.float64)
    return m, kind


def kkt_ok(a: np.ndarray, w: np.ndarray, tol: float) -> bool:
    g = a @ w
    q = w @ g
    support = w > 1e-12
    return bool(
        np.all(w >= 0)
        and abs(w.sum() - 1) < 1e-12
        and np.all(g >= q - tol)
        and np.all(np.abs(g[support] - q) <= tol)
    )


@pytest.mark.parametrize("seed", range(42))
def test_min_norm_matches_independent_qp(seed: int) -> None:
    m, kind = random_matrix(seed)
    a = (m @ m.T).numpy()
    w, info = min_norm_weights(torch.from_numpy(a))
    w = w.numpy()
    reference = scipy_min_norm(a)
    scale = a.diagonal().max()
    assert info["converged"] == 1.0
    assert w @ a @ w <= reference @ a @ reference + 1e-12 * scale
    assert kkt_ok(a, w, 1e-9 * scale)
    # The minimizer is unique when the Gram matrix is positive definite.
    if kind in ("generic", "wide") and np.linalg.eigvalsh(a)[0] > 1e-6 * scale:
        np.testing.assert_allclose(w, reference, atol=1e-6)


def test_min_norm_degenerate_cases() -> None:
    # Zero row: the origin is in the hull, so the min norm is 0.
    m = torch.tensor([[1.0, 2.0], [0.0, 0.0], [-3.0, 1.0]], dtype=torch.float64)
    w, info = min_norm_weights(m @ m.T)
    assert info["converged"] == 1.0 and float(w @ m @ m.T @ w) == pytest.approx(0.0, abs=1e-15)
    # All rows zero, all rows identical, and a non-finite matrix: no NaN.
    for gram in (torch.zeros(4, 4), torch.ones(5, 5), torch.full((3, 3), float("nan"))):
        w, info = min_norm_weights(gram)
        assert torch.isfinite(w).all() and float(w.sum()) == pytest.approx(1.0)
        assert (w >= 0).all()
    assert info["converged"] == 0.0  # the NaN matrix is reported, not hidden
    w, info = min_norm_weights(torch.ones(1, 1))
    assert w.tolist() == [1.0] and info["converged"] == 1.0


def test_min_norm_two_closed_form_and_scale_invariance() -> None:
    g1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    m = torch.stack([g1, g2])
    w, _ = min_norm_weights(m @ m.T)
    # By hand: on the segment g2 + t (g1 - g2), t = g2.(g2 - g1) / |g1 - g2|^2 with
    # g1 - g2 = (2, -2), g2.(g2 - g1) = (-1)(-2) + 2*2 = 6, |g1 - g2|^2 = 8: t = 3/4.
    assert w.tolist() == pytest.approx([0.75, 0.25], abs=1e-15)
    a = torch.randn(6, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gram = a @ a.T
    w1, _ = min_norm_weights(gram)
    w2, _ = min_norm_weights(gram * 1e-9)
    torch.testing.assert_close(w1, w2, rtol=0, atol=1e-10)


def test_min_norm_keeps_dtype_and_does_not_warn() -> None:
    gram = torch.eye(3, dtype=torch.float32) * torch.tensor([1.0, 2.0, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w, _ = min_norm_weights(gram)
    assert w.dtype == torch.float32
    # diag(1, 2, 4): w_k proportional to 1 / d_k.
    torch.testing.assert_close(w, torch.tensor([4.0, 2.0, 1.0]) / 7.0)


@pytest.mark.parametrize("seed", range(6))
def test_min_norm_agrees_with_torchjd(seed: int) -> None:
    """torchjd's MGDA is Sener's Frank-Wolfe (approximate): ours is at least as good and
    within its stopping tolerance."""
    m, _ = random_matrix(seed)
    gram = m @ m.T
    ours, _ = min_norm_weights(gram)
    theirs = MGDAWeighting(epsilon=1e-6, max_iters=10000)(gram)
    f_ours, f_theirs = float(ours @ gram @ ours), float(theirs @ gram @ theirs)
    scale = float(gram.diagonal().max())
    assert f_ours <= f_theirs + 1e-12 * scale
    assert f_theirs - f_ours <= 1e-4 * scale


def normalizer(kind: str, m: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    norms = m.norm(dim=1)
    return {"l2": norms, "loss": losses, "loss+": losses * norms, "none": torch.ones_like(losses)}[
        kind
    ]


@pytest.mark.parametrize("normalization", ["loss+", "loss", "l2", "none"])
def test_mgda_weights_are_min_norm_of_normalized_gradients(normalization: str) -> None:
    g = torch.Generator().manual_seed(3)
    m = torch.randn(4, 12, dtype=torch.float64, generator=g) * torch.tensor(
        [[0.1], [1.0], [5.0], [20.0]], dtype=torch.float64
    )
    losses = torch.tensor([0.5, 2.0, 1.0, 7.0], dtype=torch.float64)
    agg = MGDA(4, normalization=normalization).aggregate(m, losses)
    normalized = m / normalizer(normalization, m, losses)[:, None]
    reference = scipy_min_norm((normalized @ normalized.T).numpy())
    np.testing.assert_allclose(agg.weights.numpy(), reference, atol=1e-6)
    torch.testing.assert_close(agg.direction, agg.weights @ m)  # unnormalized gradients
    assert agg.info["converged"] == 1.0


def test_mgda_two_tasks_symmetry() -> None:
    """Equal gradient norms (and equal losses for loss+) give equal weights."""
    g = torch.Generator().manual_seed(0)
    m = torch.randn(2, 7, dtype=torch.float64, generator=g)
    m = m / m.norm(dim=1, keepdim=True) * 3.0
    losses = torch.tensor([1.3, 1.3], dtype=torch.float64)
    for normalization in ("loss+", "l2", "none"):
        w = MGDA(2, normalization=normalization).aggregate(m, losses).weights
        torch.testing.assert_close(w, torch.tensor([0.5, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("space", ["params", "features"])
def test_mgda_weighted_heads_get_the_alpha_weighted_gradients(space: str) -> None:
    """heads="weighted" (Sener & Koltun's code): everything gets grad sum_k alpha_k L_k."""
    torch.manual_seed(0)
    model = TinyMTL(3).double()
    x, ys = tiny_batch(3)
    x, ys = x.double(), [y.double() for y in ys]
    method = MGDA(3, heads="weighted", space=space)
    z, losses = tiny_losses(model, x, ys)
    result = method.backward(losses, model.encoder.parameters(), z)
    alpha = result.weights
    got = {name: p.grad.clone() for name, p in model.named_parameters()}
    # Independently: the gradient of sum_k alpha_k L_k. For MGDA-UB it is exact everywhere
    # (the encoder gets alpha @ (dL/dz) through z); for MGDA on parameters, too.
    model.zero_grad()
    _, losses = tiny_losses(model, x, ys)
    (alpha * losses).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, msg=name)
    assert method.space is Space(space)
    assert float(alpha.sum()) == pytest.approx(1.0)


def test_mgda_validation_and_conventions() -> None:
    assert MGDA.scale is Scale.MEAN and MGDA(2).heads == "sum"
    with pytest.raises(ValueError, match="heads"):
        MGDA(2, heads="alpha")
    with pytest.raises(ValueError, match="update"):
        MGDA(2, update="study")
    with pytest.raises(ValueError, match="normalization"):
        MGDA(2, normalization="L2")
    method = MGDA(2, normalization="loss+")
    with pytest.raises(ValueError, match="positive"):
        method.aggregate(torch.eye(2), torch.tensor([1.0, -1.0]))
    # Zero gradient: a zero normalizer does not give NaN; the min norm is the zero vector.
    m = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    agg = MGDA(2, normalization="l2").aggregate(m, torch.ones(2, dtype=torch.float64))
    assert agg.weights.tolist() == [0.0, 1.0] and agg.direction.abs().max() == 0


def test_mgda_solver_failure_is_counted_warned_and_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(gram, max_iter=250, tol=1e-5):
        k = gram.shape[0]
        return torch.full((k,), 1.0 / k, dtype=gram.dtype), {
            "converged": 0.0,
            "solver_iterations": 250.0,
        }

    monkeypatch.setattr(mgda_module, "min_norm_weights", failing)
    method = MGDA(2)
    with pytest.warns(SolverWarning):
        agg = method.aggregate(torch.eye(2), torch.ones(2))
    assert agg.info["converged"] == 0.0 and method.solver_failures == 1
    restored = MGDA(2)
    restored.load_state_dict(method.state_dict())
    assert restored.solver_failures == 1


def test_mgda_state_round_trip_gives_identical_steps() -> None:
    torch.manual_seed(0)
    model = TinyMTL(2)
    x, ys = tiny_batch(2)
    first = MGDA(2)
    second = MGDA(2)
    second.load_state_dict(first.state_dict())
    outs = []
    for method in (first, second):
        model.zero_grad()
        z, losses = tiny_losses(model, x, ys)
        outs.append(method.backward(losses, model.encoder.parameters(), z).weights)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(10))
def test_warm_start_gives_the_same_minimum(seed: int) -> None:
    """CAGrad warm-starts the active set with a guessed support: any guess, same minimum."""
    m, _ = random_matrix(seed)
    a = (m @ m.T).numpy()
    cold, converged, _ = solve_min_norm(a)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        guess = rng.random(a.shape[0]) < 0.5
        warm, warm_converged, _ = solve_min_norm(a, support=guess)
        assert converged and warm_converged
        assert warm @ a @ warm == pytest.approx(cold @ a @ cold, rel=1e-10, abs=1e-14)
