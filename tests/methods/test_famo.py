"""FAMO (Liu et al. 2023): logits trained by their own Adam from the decrease of log losses."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.methods.famo import FAMO


def leaf(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).clone().requires_grad_()


def reference_logits(befores, afters, lr: float, gamma: float, min_losses) -> np.ndarray:
    """The FAMO logit update written out: softmax Jacobian^T delta, then Adam with L2 decay."""
    k = len(befores[0])
    w, m, v = np.zeros(k), np.zeros(k), np.zeros(k)
    for t, (before, after) in enumerate(zip(befores, afters, strict=True), start=1):
        delta = np.log(before - min_losses + 1e-8) - np.log(after - min_losses + 1e-8)
        z = np.exp(w) / np.exp(w).sum()
        g = z * (delta - z @ delta) + gamma * w  # (diag(z) - z z^T) delta
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        w = w - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def test_logits_follow_the_famo_update_rule() -> None:
    rng = np.random.default_rng(0)
    min_losses = np.array([0.1, 0.0, 0.3])
    befores = [rng.uniform(0.5, 2.0, 3) for _ in range(6)]
    afters = [b * rng.uniform(0.6, 1.1, 3) for b in befores]
    method = FAMO(3, logit_lr=0.05, gamma=0.01, min_losses=(0.1, 0.0, 0.3)).double()
    for before, after in zip(befores, afters, strict=True):
        method.backward(leaf(before))
        method.post_step(torch.as_tensor(after, dtype=torch.float64))
    expected = reference_logits(befores, afters, 0.05, 0.01, min_losses)
    np.testing.assert_allclose(method.logits.numpy(), expected, rtol=1e-10, atol=1e-12)

    # reported weights: z / (c D), D = L - L_min + 1e-8, c = sum z / D; they sum to 1
    losses = np.array([0.7, 1.9, 0.4])
    z = np.exp(expected) / np.exp(expected).sum()
    gaps = losses - min_losses + 1e-8
    weights = z / ((z / gaps).sum() * gaps)
    x = leaf(losses)
    result = method.backward(x)
    np.testing.assert_allclose(result.weights.numpy(), weights, rtol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), weights, rtol=1e-10)
    assert result.weights.sum().item() == pytest.approx(1.0)


def test_task_whose_loss_decreased_less_gains_logit() -> None:
    method = FAMO(2).double()
    method.backward(leaf([1.0, 1.0]))
    method.post_step(torch.tensor([0.5, 0.9], dtype=torch.float64))
    # the first Adam step moves each logit by lr against the sign of its gradient
    torch.testing.assert_close(
        method.logits, torch.tensor([-0.025, 0.025], dtype=torch.float64), atol=1e-6, rtol=0
    )
    weights = method.backward(leaf([1.0, 1.0])).weights
    assert weights[1] > weights[0]


def test_proposition_6_equal_losses_keep_equal_weights_fed_losses() -> None:
    """Main study, App. A.4, Prop. 6 (K = 3): equal losses and equal logits stay equal."""
    method = FAMO(3, gamma=0.01).double()
    method.logits.fill_(0.4)
    g = torch.Generator().manual_seed(0)
    values = torch.rand(61, generator=g, dtype=torch.float64) + 0.5
    for t in range(60):
        param = values[t].clone().requires_grad_()
        weights = method.backward(torch.stack([param, param, param])).weights
        assert torch.equal(weights, weights[0].expand(3))
        assert torch.equal(method.logits, method.logits[0].expand(3))
        method.post_step(values[t + 1].expand(3))
    # the logits did move (weight decay), equally
    assert abs(method.logits[0].item() - 0.4) > 0.1


def test_proposition_6_symmetric_model() -> None:
    """Two identical heads with identical targets: losses, logits and weights stay equal."""
    torch.manual_seed(0)
    model = TinyMTL(n_tasks=2)
    model.heads[1].load_state_dict(model.heads[0].state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    method = FAMO(2)
    first_loss = None
    x, ys = tiny_batch(2, seed=0)
    ys = [ys[0], ys[0].clone()]
    for _ in range(60):
        z, losses = tiny_losses(model, x, ys)
        first_loss = losses.detach() if first_loss is None else first_loss
        optimizer.zero_grad()
        weights = method.backward(losses, model.encoder.parameters(), z).weights
        assert torch.equal(losses[0], losses[1])
        assert torch.equal(weights[0], weights[1])
        optimizer.step()
        with torch.no_grad():
            _, new_losses = tiny_losses(model, x, ys)
        method.post_step(new_losses)
        assert torch.equal(method.logits[0], method.logits[1])
    assert losses[0].item() < 0.9 * first_loss[0].item()  # training happened


def test_logits_are_a_buffer_not_a_parameter() -> None:
    method = FAMO(3)
    assert list(method.parameters()) == []
    assert "logits" in method.state_dict()


def test_state_round_trip_mid_run() -> None:
    g = torch.Generator().manual_seed(1)
    stream = torch.rand(12, 3, generator=g, dtype=torch.float64) + 0.2
    method = FAMO(3).double()
    for t in range(5):
        method.backward(leaf(stream[t]))
        method.post_step(stream[t] * 0.8 + 0.05 * t)
    method.backward(leaf(stream[5]))  # snapshot between backward and post_step
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    copy_ = FAMO(3).double()
    copy_.load_state_dict(torch.load(buffer, weights_only=True))
    stale = FAMO(3).double()
    stale.logits.copy_(method.logits)  # logits only, without the Adam state
    stale.backward(leaf(stream[5]))
    runs = {"original": method, "copy": copy_, "stale": stale}
    weights: dict[str, list[torch.Tensor]] = {name: [] for name in runs}
    for t in range(5, 11):
        for name, m in runs.items():
            m.post_step(stream[t] * 0.7)
            weights[name].append(m.backward(leaf(stream[t + 1])).weights)
    for a, b in zip(weights["original"], weights["copy"], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(weights["original"][-1], weights["stale"][-1])


def test_post_step_without_backward_is_a_clear_error() -> None:
    method = FAMO(2)
    with pytest.raises(RuntimeError, match="backward"):
        method.post_step(torch.ones(2))
    method.backward(leaf([1.0, 2.0]).float())
    method.post_step(torch.ones(2))
    with pytest.raises(RuntimeError, match="backward"):
        method.post_step(torch.ones(2))


def test_moving_the_method_keeps_updating_its_logits() -> None:
    method = FAMO(2)
    method.backward(leaf([1.0, 2.0]).float())
    method.post_step(torch.tensor([0.5, 1.9]))
    moved = copy.deepcopy(method).double()
    moved.backward(leaf([1.0, 2.0]))
    before = moved.logits.clone()
    moved.post_step(torch.tensor([0.5, 1.9], dtype=torch.float64))
    assert moved.logits.dtype == torch.float64
    assert not torch.equal(moved.logits, before)
    assert moved.optimizer().state[moved.logits]["step"].item() == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"logit_lr": 0.0}, "logit_lr"),
        ({"gamma": -1.0}, "gamma"),
        ({"min_losses": (0.0,)}, "min_losses"),
        ({"min_losses": (0.0, float("nan"))}, "min_losses"),
    ],
)
def test_invalid_hyperparameters_are_clear_errors(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FAMO(2, **kwargs)
