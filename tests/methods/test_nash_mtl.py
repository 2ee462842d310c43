"""Nash-MTL: the bargaining solve, its failure reporting, clipping, reuse and state."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import Tensor

from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.methods.nash_mtl import NashMTL
from smto.solvers import SolverWarning
from smto.solvers.nash import nash_residual, solve_nash


def random_matrix(k: int, p: int, seed: int, spread: float = 0.0) -> Tensor:
    """A K x P float64 matrix of Gaussian rows, row norms varied by exp(spread * N(0, 1))."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(k, p, generator=g, dtype=torch.float64)
    return rows * torch.exp(spread * torch.randn(k, 1, generator=g, dtype=torch.float64))


def relative_residual(gram: np.ndarray, alpha: np.ndarray) -> float:
    """||A a - 1/a|| / ||1/a||."""
    return float(np.linalg.norm(gram @ alpha - 1 / alpha) / np.linalg.norm(1 / alpha))


CASES = [(k, seed) for k in range(2, 12) for seed in range(3)]


@pytest.mark.parametrize(("k", "seed"), CASES)
def test_solves_well_conditioned_instances(k: int, seed: int) -> None:
    matrix = random_matrix(k, k + 3 + seed, seed, spread=1.0)
    gram = (matrix @ matrix.T).numpy()
    alpha, info = solve_nash(gram)
    assert info["converged"] == 1.0
    assert np.all(alpha > 0)
    assert relative_residual(gram, alpha) < 1e-4
    assert nash_residual(gram, alpha) < 1e-6
    # the paper's property: every task gets g_i^T d = 1 / alpha_i, hence ||d||^2 = K
    d = alpha @ matrix.numpy()
    np.testing.assert_allclose(matrix.numpy() @ d, 1 / alpha, rtol=1e-5)
    assert np.linalg.norm(d) == pytest.approx(math.sqrt(k), rel=1e-5)


@pytest.mark.parametrize(("k", "seed"), CASES[::3])
def test_solution_does_not_depend_on_the_warm_start(k: int, seed: int) -> None:
    gram = random_matrix(k, k + 5, seed, spread=1.0) @ random_matrix(k, k + 5, seed, 1.0).T
    reference, _ = solve_nash(gram, tol=1e-12)
    rng = np.random.default_rng(seed)
    for init in (np.ones(k), rng.uniform(1e-3, 1e3, k), reference * 1e4, reference):
        alpha, info = solve_nash(gram, tol=1e-12, init=init)
        assert info["converged"] == 1.0
        np.testing.assert_allclose(alpha, reference, rtol=1e-9)
    # a warm start at the solution needs no Newton step; a scaled one only its ray scaling
    assert solve_nash(gram, init=reference * 7.0)[1]["solver_iterations"] == 0.0


@pytest.mark.parametrize(("k", "seed"), CASES[1::4])
def test_matches_an_independent_scipy_solve(k: int, seed: int) -> None:
    gram = (lambda m: (m @ m.T).numpy())(random_matrix(k, k + 4, seed, spread=0.5))

    def phi(a: np.ndarray) -> tuple[float, np.ndarray]:
        return 0.5 * a @ gram @ a - np.sum(np.log(a)), gram @ a - 1 / a

    def equations(a: np.ndarray) -> np.ndarray:
        return a * (gram @ a) - 1.0

    start = 1 / np.sqrt(np.diag(gram) * k)
    bounds = [(1e-12, None)] * k
    rough = scipy.optimize.minimize(phi, start, jac=True, method="L-BFGS-B", bounds=bounds)
    root = scipy.optimize.root(equations, rough.x, method="hybr", tol=1e-12)
    assert np.max(np.abs(equations(root.x))) < 1e-10
    alpha, _ = solve_nash(gram, tol=1e-10)
    np.testing.assert_allclose(alpha, root.x, rtol=1e-7)


def test_scale_and_normalization_conventions() -> None:
    # alpha solves the unnormalized equation: scaling G by s scales alpha by 1/s
    matrix = random_matrix(4, 9, 3)
    gram = (matrix @ matrix.T).numpy()
    alpha, _ = solve_nash(gram)
    scaled, _ = solve_nash(gram * 100.0)
    np.testing.assert_allclose(scaled, alpha / 10.0, rtol=1e-6)
    # M = A / ||A||_F has the solution alpha * sqrt(||A||_F)
    s = np.linalg.norm(gram)
    normalized, _ = solve_nash(gram / s)
    np.testing.assert_allclose(normalized, alpha * math.sqrt(s), rtol=1e-6)
    # rescaling one task's gradient rescales only its weight
    row_scaled = matrix.clone()
    row_scaled[2] *= 1e3
    alpha_rs, info = solve_nash(row_scaled @ row_scaled.T)
    assert info["converged"] == 1.0
    np.testing.assert_allclose(alpha_rs, alpha * np.array([1, 1, 1e-3, 1]), rtol=1e-6)


def test_two_identical_gradients_have_the_closed_form_solution() -> None:
    # a singular Gram matrix with a solution: A = |g|^2 [[1, 1], [1, 1]] -> alpha = 1/(sqrt2 |g|)
    g = random_matrix(1, 6, 4)[0]
    alpha, info = solve_nash(torch.stack([g, g]) @ torch.stack([g, g]).T)
    assert info["converged"] == 1.0
    np.testing.assert_allclose(alpha, 1 / (math.sqrt(2) * float(g.norm())) * np.ones(2))
    # rank K - 1 with no vanishing non-negative combination: also solvable
    h = random_matrix(1, 6, 5)[0]
    rows = torch.stack([g, h, g + h])
    alpha, info = solve_nash(rows @ rows.T)
    assert info["converged"] == 1.0
    assert nash_residual((rows @ rows.T).numpy(), alpha) < 1e-6


def _unsolvable() -> dict[str, Tensor]:
    g = random_matrix(1, 5, 7)[0]
    h = random_matrix(1, 5, 8)[0]
    angles = torch.tensor([0.3, 0.3 + 2 * math.pi / 3, 0.3 + 4 * math.pi / 3], dtype=torch.float64)
    return {
        "opposite": torch.stack([g, -2.5 * g]),
        "zero gradient": torch.stack([g, torch.zeros_like(g), h]),
        "three at 120 degrees": torch.stack([angles.cos(), angles.sin()], dim=1),
        "opposite pair and a third": torch.stack([g, -g, h]),
        "nearly opposite": torch.tensor([[1.0, 0.0], [-1.0, 1e-6]], dtype=torch.float64),
    }


@pytest.mark.parametrize("name", list(_unsolvable()))
def test_reports_instances_without_a_solution(name: str) -> None:
    rows = _unsolvable()[name]
    gram = rows @ rows.T
    alpha, info = solve_nash(gram)
    assert info["converged"] == 0.0
    assert np.all(np.isfinite(alpha)) and np.all(alpha > 0)
    assert info["solver_iterations"] <= 100


def test_method_reports_failure_and_keeps_the_previous_alpha() -> None:
    good = random_matrix(3, 8, 9)
    method = NashMTL(3, max_norm=None)
    first = method.aggregate(good, torch.zeros(3))
    assert first.info["converged"] == 1.0
    bad = _unsolvable()["opposite pair and a third"]
    bad = torch.cat([bad, torch.zeros(3, 3, dtype=torch.float64)], dim=1)
    with pytest.warns(SolverWarning, match="Nash-MTL"):
        result = method.aggregate(bad, torch.zeros(3))
    assert result.info["converged"] == 0.0
    assert method.solver_failures == 1
    torch.testing.assert_close(result.weights, first.weights)
    torch.testing.assert_close(result.direction, first.weights @ bad)
    assert method.get_extra_state()["solver_failures"] == 1
    # before any success, the original's initial alpha (ones) is used
    fresh = NashMTL(3, max_norm=None)
    with pytest.warns(SolverWarning):
        result = fresh.aggregate(bad, torch.zeros(3))
    torch.testing.assert_close(result.weights, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("cosine", [0.9, 0.3, 0.0, -0.5, -0.95])
def test_two_gradients_of_equal_norm_get_equal_weights(cosine: float) -> None:
    # Proposition 2 of the main study (App. A.4); closed form alpha = 1/(|g| sqrt(1 + cos))
    norm = 3.0
    g1 = torch.tensor([norm, 0.0, 0.0], dtype=torch.float64)
    g2 = norm * torch.tensor([cosine, math.sqrt(1 - cosine**2), 0.0], dtype=torch.float64)
    matrix = torch.stack([g1, g2]) @ torch.linalg.qr(random_matrix(3, 3, 11))[0]
    alpha, info = solve_nash(matrix @ matrix.T)
    assert info["converged"] == 1.0
    np.testing.assert_allclose(alpha, np.full(2, 1 / (norm * math.sqrt(1 + cosine))), rtol=1e-9)
    for max_norm in (None, 1.0):
        weights = NashMTL(2, max_norm=max_norm).aggregate(matrix, torch.zeros(2)).weights
        assert float(weights[0]) == pytest.approx(float(weights[1]), rel=1e-9)


@pytest.mark.parametrize(("ratio", "cosine"), [(1.0, 0.5), (10.0, 0.2), (0.01, -0.7)])
def test_two_task_closed_form(ratio: float, cosine: float) -> None:
    # K = 2: c_1 = c_2 by symmetry of the cosine form, so alpha_i = 1 / (|g_i| sqrt(1 + cos))
    g1 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    g2 = 2.0 * ratio * torch.tensor([cosine, math.sqrt(1 - cosine**2)], dtype=torch.float64)
    alpha, _ = solve_nash(torch.stack([g1, g2]) @ torch.stack([g1, g2]).T)
    expected = 1 / (np.array([2.0, 2.0 * ratio]) * math.sqrt(1 + cosine))
    np.testing.assert_allclose(alpha, expected, rtol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_clipping(k: int) -> None:
    matrix = random_matrix(k, 12, 12 + k, spread=1.0)
    alpha, _ = solve_nash(matrix @ matrix.T)
    expected = torch.from_numpy(alpha) @ matrix
    for max_norm in (None, 0.0, 1e9):
        result = NashMTL(k, max_norm=max_norm).aggregate(matrix, torch.zeros(k))
        torch.testing.assert_close(result.direction, expected)
        torch.testing.assert_close(result.weights, torch.from_numpy(alpha))
    for max_norm in (0.1, 1.0, math.sqrt(k) - 0.01):
        result = NashMTL(k, max_norm=max_norm).aggregate(matrix, torch.zeros(k))
        norm = float(result.direction.norm())
        assert norm <= max_norm
        assert norm == pytest.approx(max_norm, rel=1e-5)
        torch.testing.assert_close(result.direction, result.weights @ matrix)
        torch.testing.assert_close(result.direction, expected * norm / math.sqrt(k))


def test_update_weights_every_reuses_alpha_between_updates() -> None:
    k = 3
    matrices = [random_matrix(k, 10, 20 + t, spread=0.5) for t in range(7)]
    method = NashMTL(k, max_norm=None, update_weights_every=3)
    results = [method.aggregate(m, torch.zeros(k)) for m in matrices]
    solved = [torch.from_numpy(solve_nash(m @ m.T)[0]) for m in matrices]
    for t, result in enumerate(results):
        source = t - t % 3
        torch.testing.assert_close(result.weights, solved[source], rtol=1e-5, atol=0)
        torch.testing.assert_close(result.direction, result.weights @ matrices[t])
        assert result.info["weights_updated"] == float(t % 3 == 0)
    assert results[1].info["solver_iterations"] == 0.0
    assert not torch.allclose(results[1].weights, solved[1], rtol=1e-2)


def test_state_round_trip_gives_identical_outputs() -> None:
    k = 3
    matrices = [random_matrix(k, 10, 40 + t, spread=0.5) for t in range(8)]
    method = NashMTL(k, max_norm=1.0, update_weights_every=3)
    for m in matrices[:3]:
        method.aggregate(m, torch.zeros(k))
    with pytest.warns(SolverWarning):  # step 3 solves, a zero gradient has no solution
        method.aggregate(torch.zeros(k, 10, dtype=torch.float64), torch.zeros(k))
    assert method.solver_failures == 1
    method.aggregate(matrices[3], torch.zeros(k))  # step 4: mid-cycle
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = NashMTL(k, max_norm=1.0, update_weights_every=3)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.steps == method.steps and restored.solver_failures == 1
    for m in matrices[4:]:
        a = method.aggregate(m, torch.zeros(k))
        b = restored.aggregate(m, torch.zeros(k))
        assert torch.equal(a.direction, b.direction) and torch.equal(a.weights, b.weights)
        assert a.info == b.info


def test_backward_on_tiny_model() -> None:
    torch.manual_seed(0)
    model = TinyMTL(n_tasks=3)
    x, ys = tiny_batch(3, seed=1)
    method = NashMTL(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        z, losses = tiny_losses(model, x, ys)
        with warnings.catch_warnings():
            warnings.simplefilter("error", SolverWarning)
            result = method.backward(losses, model.encoder.parameters(), z)
        assert result.weights.shape == (3,)
        assert result.info["converged"] == 1.0
        shared = torch.cat([p.grad.flatten() for p in model.encoder.parameters()])
        assert float(shared.norm()) <= 1.0 + 1e-6
        optimizer.step()
    # heads get the plain sum of their task gradients (here: their own loss's gradient)
    optimizer.zero_grad()
    z, losses = tiny_losses(model, x, ys)
    expected = torch.autograd.grad(losses[0], model.heads[0].weight, retain_graph=True)[0]
    method.backward(losses, model.encoder.parameters(), z)
    torch.testing.assert_close(model.heads[0].weight.grad, expected)


def test_features_space_on_tiny_model() -> None:
    torch.manual_seed(1)
    model = TinyMTL(n_tasks=2)
    x, ys = tiny_batch(2, seed=2)
    z, losses = tiny_losses(model, x, ys)
    result = NashMTL(2, space="features").backward(losses, features=z)
    assert result.weights.shape == (2,)
    assert model.encoder[0].weight.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_norm": -1.0}, "max_norm"),
        ({"max_norm": float("nan")}, "max_norm"),
        ({"update_weights_every": 0}, "update_weights_every"),
        ({"update_weights_every": 1.5}, "update_weights_every"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": 0.0}, "tol"),
        ({"tol": 2.0}, "tol"),
        ({"space": "losses"}, "params"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        NashMTL(2, **kwargs)


def test_hyperparameters_are_attributes() -> None:
    method = NashMTL(2, max_norm=0.5, update_weights_every=2, max_iter=30, tol=1e-7)
    params = method.hyperparameters()
    assert params["max_norm"] == 0.5 and params["update_weights_every"] == 2
    assert params["max_iter"] == 30 and params["tol"] == 1e-7


# --- cross-check against the original algorithm, as packaged by torchjd (cvxpy + ECOS) ------


def _torchjd_nash(k: int, **kwargs):
    pytest.importorskip("cvxpy")
    pytest.importorskip("ecos")
    from torchjd.aggregation import NashMTL as TorchJDNashMTL

    return TorchJDNashMTL(n_tasks=k, **kwargs)


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (3, 1), (5, 2), (8, 3), (11, 4)])
def test_matches_torchjd_on_well_conditioned_instances(k: int, seed: int) -> None:
    # torchjd's copy of the original: 20 SCA iterations with cvxpy/ECOS on A / ||A||_F; its
    # constraint alpha_i * ||A|| * (A/||A|| alpha)_i >= 1 targets the unnormalized solution.
    matrix = random_matrix(k, k + 10, 100 + seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = _torchjd_nash(k, max_norm=0.0).weighting(matrix)
        clipped = _torchjd_nash(k, max_norm=1.0).weighting(matrix)
    alpha, _ = solve_nash(matrix @ matrix.T)
    np.testing.assert_allclose(alpha, reference.numpy(), rtol=1e-4)
    ours = NashMTL(k, max_norm=1.0).aggregate(matrix, torch.zeros(k)).weights
    torch.testing.assert_close(ours, clipped, rtol=1e-4, atol=0)


def test_matches_torchjd_reuse_schedule() -> None:
    k = 3
    reference = _torchjd_nash(k, max_norm=1.0, update_weights_every=2)
    method = NashMTL(k, max_norm=1.0, update_weights_every=2)
    for t in range(4):
        matrix = random_matrix(k, 12, 200 + t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = reference.weighting(matrix)
        torch.testing.assert_close(
            method.aggregate(matrix, torch.zeros(k)).weights, expected, rtol=1e-4, atol=0
        )


def test_where_torchjd_disagrees_its_answer_violates_the_equation() -> None:
    # With unequal gradient norms the original's SCA can stop at its start (ones) when ECOS
    # raises, or where a constraint is slack; ours then still solves A alpha = 1/alpha.
    disagreements = 0
    for seed in range(304, 310):
        k = 5
        matrix = random_matrix(k, k + 10, seed, spread=1.0)
        gram = (matrix @ matrix.T).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = _torchjd_nash(k, max_norm=0.0).weighting(matrix).numpy()
        alpha, info = solve_nash(gram)
        assert info["converged"] == 1.0 and nash_residual(gram, alpha) < 1e-6
        if not np.allclose(alpha, reference, rtol=1e-3):
            disagreements += 1
            assert nash_residual(gram, reference) > 1e-2
    assert disagreements >= 1  # seeds 307 (stays at ones) and 308 (a slack constraint)


def test_clipping_survives_a_quadratic_form_rounded_below_zero(monkeypatch) -> None:
    """Nearly opposite gradients and large weights: alpha G alpha, exactly >= 0, can round
    below zero (seen on the CAGrad toy with Adam); the clipping must not take its square root
    as a complex number."""
    import smto.methods.nash_mtl as module

    for seed in range(100):  # about 2 in 5 such pairs round below zero
        g = torch.Generator().manual_seed(seed)
        v = torch.randn(5, generator=g, dtype=torch.float64)
        matrix = torch.stack([v, -v * (1 + 1e-13 * torch.randn((), generator=g).item())])
        alpha = np.array([800.0, 800.0 * float(v.norm() / matrix[1].norm())])
        gram = (matrix @ matrix.T).numpy()
        if float(alpha @ gram @ alpha) < 0:  # the rounding this test is about
            break
    else:
        pytest.fail("no pair rounded below zero")
    solved = {"solver_iterations": 1.0, "residual": 0.0, "converged": 1.0}
    monkeypatch.setattr(module, "solve_nash", lambda *a, **k: (alpha, solved))
    result = NashMTL(2, max_norm=1.0).aggregate(matrix, torch.zeros(2))
    assert torch.isfinite(result.direction).all() and torch.isfinite(result.weights).all()
    torch.testing.assert_close(result.weights, torch.from_numpy(alpha))  # norm 0: no clipping
