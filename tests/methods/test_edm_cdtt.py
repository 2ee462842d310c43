"""EDM and CDTT: the bisector property, the two-task propositions, the tensioners."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.methods.cdtt import CDTT
from smto.methods.edm import EDM
from smto.solvers import SolverWarning

F64 = torch.float64


def interior_gradients(k: int, n: int, seed: int) -> torch.Tensor:
    """Unit vectors cos(t_i) q_0 + sin(t_i) q_i (q orthonormal, t_i in [45, 60] degrees), so
    that the min-norm point of their hull is interior, in a random orientation and with
    norms spread over two orders of magnitude."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, k + 1, generator=g, dtype=F64))
    angles = torch.deg2rad(45 + 15 * torch.rand(k, 1, generator=g, dtype=F64))
    units = torch.cos(angles) * q[:, 0] + torch.sin(angles) * q[:, 1:].T
    norms = torch.exp(2.0 * torch.randn(k, 1, generator=g, dtype=F64))
    return units * norms


def scipy_min_norm(units: np.ndarray) -> np.ndarray:
    """Independent min-norm point of the convex hull of the rows (SLSQP on the simplex)."""
    k = units.shape[0]
    a = units @ units.T
    res = minimize(
        lambda w: w @ a @ w,
        np.full(k, 1.0 / k),
        jac=lambda w: 2 * a @ w,
        bounds=[(0, 1)] * k,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(k)}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x


@pytest.mark.parametrize("k", range(2, 7))
def test_edm_direction_makes_equal_angles(k):
    grads = interior_gradients(k, n=4 * k, seed=k)
    units = grads / grads.norm(dim=1, keepdim=True)
    w = scipy_min_norm(units.numpy())
    assert (w > 1e-4).all(), "test construction: the min-norm point must be interior"
    result = EDM(k).aggregate(grads, torch.ones(k, dtype=F64))
    cosines = units @ result.direction / result.direction.norm()
    torch.testing.assert_close(cosines, cosines.mean().expand(k), rtol=1e-9, atol=0)
    assert result.weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(result.direction, result.weights @ grads)
    # d = gamma sum w_i u_i with gamma = 1 / sum(w_i / |g_i|) (PROTOCOL), w from scipy.
    norms = grads.norm(dim=1).numpy()
    expected = (w @ units.numpy()) / np.sum(w / norms)
    np.testing.assert_allclose(result.direction.numpy(), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("cos", [-0.95, -0.4, 0.0, 0.6, 0.99])
@pytest.mark.parametrize("ratio", [1.0, 0.1, 7.0])
def test_edm_two_tasks_closed_form(cos, ratio):
    # The authors' two-task form: d = (g_1 |g_2| + g_2 |g_1|) / (|g_1| + |g_2|); with equal
    # norms (main study, Appendix A.4, Proposition 4) the weights are equal.
    g = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(5, 2, generator=g, dtype=F64))
    e1, e2 = basis.T
    grads = torch.stack([2.0 * e1, 2.0 * ratio * (cos * e1 + (1 - cos**2) ** 0.5 * e2)])
    n1, n2 = grads.norm(dim=1)
    result = EDM(2).aggregate(grads, torch.ones(2, dtype=F64))
    torch.testing.assert_close(result.weights, torch.stack([n2, n1]) / (n1 + n2))
    if ratio == 1.0:
        torch.testing.assert_close(result.weights, torch.full((2,), 0.5, dtype=F64))


def test_edm_zero_gradient_stops_the_update_without_nan():
    grads = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=F64)
    result = EDM(3).aggregate(grads, torch.ones(3, dtype=F64))
    assert torch.isfinite(result.weights).all()
    torch.testing.assert_close(result.weights, torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    torch.testing.assert_close(result.direction, torch.zeros(3, dtype=F64))


# --- CDTT ---------------------------------------------------------------------------------


def original_cdtt(grads_seq, losses_seq, alpha, window=10):
    """A literal transcription of the authors' GradHistory.descent_direction (numpy, with
    their arccos / tan correction), on explicit N-dimensional vectors; EDM from scipy."""
    k = grads_seq[0].shape[0]
    acc = np.zeros((k, window))
    prev = None
    out = []
    for it, (grads, losses) in enumerate(zip(grads_seq, losses_seq)):
        norms = np.linalg.norm(grads, axis=1)
        units = grads / norms[:, None]
        w = scipy_min_norm(units)
        gamma = 1 / np.sum(w / norms)
        direction = gamma * (w @ units)
        acc[:, it % window] = norms
        if it + 1 >= window:
            current = acc.sum(axis=1)
            if prev is not None:
                v = direction.copy()
                for t in range(k):
                    x = current[t] / prev[t] + np.log10(losses[t])
                    tension = max(0.0, alpha / (1 + np.exp(-x * np.e + np.e)) + 1 - alpha)
                    diff = grads[t] - direction
                    v = v + tension * diff / np.linalg.norm(diff)

                def angle(a, b):
                    return np.arccos(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

                for t in range(k):
                    if angle(grads[t], v) * 180 / np.pi > 90:
                        unit = grads[t] / np.linalg.norm(grads[t])
                        perp = v - (v @ unit) * unit
                        beta = np.pi - angle(grads[t], v - grads[t])
                        v = np.tan(beta) * np.linalg.norm(grads[t]) * perp / np.linalg.norm(perp)
                direction = v
            prev = current
        out.append(direction)
    return out


def gradient_sequence(k, n, steps, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(k, n, generator=g, dtype=F64)
    seq, losses = [], []
    for _ in range(steps):
        drift = 0.3 * torch.randn(k, n, generator=g, dtype=F64)
        size = scale * torch.exp(0.5 * torch.randn(k, 1, generator=g, dtype=F64))
        seq.append((base + drift) * size)
        losses.append(torch.exp(torch.randn(k, generator=g, dtype=F64)))
    return seq, losses


@pytest.mark.parametrize(("k", "scale", "alpha"), [(2, 1.0, 0.3), (3, 0.5, 0.8), (3, 0.05, 1.0)])
def test_cdtt_matches_the_original_algorithm(k, scale, alpha):
    seq, losses = gradient_sequence(k, 8, steps=16, seed=k, scale=scale)
    method = CDTT(k, alpha=alpha)
    expected = original_cdtt([s.numpy() for s in seq], [loss.numpy() for loss in losses], alpha)
    corrected = 0
    for step, (grads, loss, exp) in enumerate(zip(seq, losses, expected)):
        result = method.aggregate(grads, loss)
        np.testing.assert_allclose(result.direction.numpy(), exp, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(result.direction, result.weights @ grads)
        active = step >= 10
        assert (result.info["tension_0"] > 0) == active
        corrected += result.info["corrections"] > 0
        assert result.info["cone_projection"] == 0.0
    if scale < 0.1:  # tension dominates small gradients: the correction must have been used
        assert corrected > 0


def test_cdtt_equals_edm_until_two_windows_and_without_tension():
    seq, losses = gradient_sequence(3, 6, steps=25, seed=4)
    edm, early, untensed = EDM(3), CDTT(3, window=10), CDTT(3, alpha=2.0, window=5)
    for step, (grads, loss) in enumerate(zip(seq, losses)):
        reference = edm.aggregate(grads, loss)
        first = early.aggregate(grads, loss)
        if step < 10:  # no previous full window yet: plain EDM
            torch.testing.assert_close(first.weights, reference.weights, rtol=0, atol=0)
        # alpha = 2 and tiny losses: alpha / (1 + exp(...)) + 1 - alpha < 0, so tension 0.
        second = untensed.aggregate(grads, torch.full_like(loss, 1e-6))
        assert all(second.info[f"tension_{i}"] == 0.0 for i in range(3))
        torch.testing.assert_close(second.weights, reference.weights, rtol=0, atol=0)


def test_cdtt_two_tasks_equal_norms_and_losses_give_equal_weights():
    # Main study, Appendix A.4, Proposition 5: equal losses, equal gradient norms (hence
    # equal norm histories) make the two tensions equal and they cancel: equal weights.
    g = torch.Generator().manual_seed(9)
    method = CDTT(2, alpha=0.6, window=3)
    for step in range(12):
        basis, _ = torch.linalg.qr(torch.randn(7, 2, generator=g, dtype=F64))
        e1, e2 = basis.T
        cos = float(torch.rand(1, generator=g)) * 1.8 - 0.9
        size = 0.5 + step * 0.1
        grads = size * torch.stack([e1, cos * e1 + (1 - cos**2) ** 0.5 * e2])
        loss = torch.full((2,), 0.3 + 0.05 * step, dtype=F64)
        result = method.aggregate(grads, loss)
        torch.testing.assert_close(result.weights, torch.full((2,), 0.5, dtype=F64))
        if step >= 3:
            assert result.info["tension_0"] == pytest.approx(result.info["tension_1"])
            assert result.info["tension_0"] > 0


def project_onto_cone_scipy(grads: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Independent Euclidean projection of v onto {x : grads x >= 0} (SLSQP in R^N)."""
    res = minimize(
        lambda x: 0.5 * np.sum((x - v) ** 2),
        v,
        jac=lambda x: x - v,
        constraints=[{"type": "ineq", "fun": lambda x: grads @ x, "jac": lambda x: grads}],
        method="SLSQP",
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    return res.x


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_cdtt_direction_never_opposes_a_task_gradient(k):
    g = torch.Generator().manual_seed(20 + k)
    method = CDTT(k, alpha=0.2, window=1)
    seq, losses = [], []
    for _ in range(30):
        # Small, conflicting gradients: unit tensions dominate and often overshoot.
        seq.append(0.05 * torch.randn(k, 6, generator=g, dtype=F64))
        losses.append(torch.exp(2 * torch.randn(k, generator=g, dtype=F64)))
    original = original_cdtt([s.numpy() for s in seq], [x.numpy() for x in losses], 0.2, 1)
    corrected = projected = 0
    for grads, loss, one_pass in zip(seq, losses, original):
        result = method.aggregate(grads, loss)
        scale = grads.norm(dim=1)
        tol = 1e-9 * result.direction.norm() * scale + 1e-14 * scale.max() ** 2
        assert (grads @ result.direction >= -tol).all()
        corrected += result.info["corrections"] > 0
        projected += result.info["cone_projection"]
        g_np = grads.numpy()
        if (g_np @ one_pass < -1e-9 * np.linalg.norm(one_pass) * scale.numpy()).any():
            # The original's single pass still opposes a task: we project its result.
            assert result.info["cone_projection"] == 1.0
            expected = project_onto_cone_scipy(g_np, one_pass)
        else:
            assert result.info["cone_projection"] == 0.0
            expected = one_pass
        np.testing.assert_allclose(result.direction.numpy(), expected, rtol=1e-5, atol=1e-8)
    assert corrected > 0
    if k >= 3:
        assert projected > 0


def test_cdtt_state_round_trip_mid_window():
    seq, losses = gradient_sequence(3, 5, steps=30, seed=2)
    method = CDTT(3, window=4)
    for grads, loss in zip(seq[:6], losses[:6]):  # mid second window
        method.aggregate(grads, loss)
    clone = CDTT(3, window=4)
    clone.load_state_dict(method.state_dict())
    for grads, loss in zip(seq[6:], losses[6:]):
        a, b = method.aggregate(grads, loss), clone.aggregate(grads, loss)
        torch.testing.assert_close(a.direction, b.direction, rtol=0, atol=0)
        assert a.info == b.info
    fresh = CDTT(3, window=4)
    fresh_out = [fresh.aggregate(g_, l_).direction for g_, l_ in zip(seq[:8], losses[:8])]
    assert not torch.equal(fresh_out[-1], method.aggregate(seq[7], losses[7]).direction)


def test_hyperparameter_validation():
    for bad in (-0.1, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="alpha"):
            CDTT(2, alpha=bad)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            CDTT(2, window=bad)
    assert CDTT(2).hyperparameters()["alpha"] == 0.3


@pytest.mark.parametrize("cls", [EDM, CDTT])
def test_runs_on_tinymtl_and_state_round_trips(cls):
    def run(method, model, steps, seed):
        out = []
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
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
    method = cls(2, window=3) if cls is CDTT else cls(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        run(method, model, 4, seed=0)
        clone_model = TinyMTL()
        clone_model.load_state_dict(model.state_dict())
        clone = cls(2, window=3) if cls is CDTT else cls(2)
        clone.load_state_dict(method.state_dict())
        a = run(method, model, 4, seed=10)
        b = run(clone, clone_model, 4, seed=10)
    for wa, wb in zip(a, b):
        torch.testing.assert_close(wa, wb, rtol=0, atol=0)
