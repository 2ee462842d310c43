"""BayesAgg-MTL: the posteriors, the gradient moments and the aggregation against closed forms
and against the official code's formulas written out; a run of the engine and its resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import smto
from smto.errors import ConfigError
from smto.methods.bayesagg_mtl import (
    aggregate,
    binary_moments,
    binary_posterior,
    regression_moments,
    regression_posterior,
)
from smto.train import RunConfig, load_run, run_dir, train

F64 = torch.float64


def _random_gaussian(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=F64)
    root = torch.randn(d, d, generator=g, dtype=F64) / d
    return mean, root @ root.T + 0.1 * torch.eye(d, dtype=F64)


def test_the_regression_posterior_is_bayesian_linear_regression_in_numpy():
    """Prior N(0, gamma I) and data (H, y) with unit noise: precision I/gamma + H^T H and mean
    precision^-1 H^T y (numpy); adding data to the prior is the same as one posterior over all."""
    rng = np.random.default_rng(0)
    h, y, gamma = rng.normal(size=(5, 3)), rng.normal(size=5), 0.5
    precision = np.eye(3) / gamma + h.T @ h
    mean, covariance = regression_posterior(
        torch.eye(3, dtype=F64) / gamma, torch.zeros(3, dtype=F64), torch.tensor(h), torch.tensor(y)
    )
    np.testing.assert_allclose(covariance.numpy(), np.linalg.inv(precision), rtol=1e-10)
    np.testing.assert_allclose(mean.numpy(), np.linalg.solve(precision, h.T @ y), rtol=1e-10)
    # The first two rows as the prior of the last three: the same posterior.
    p0 = torch.eye(3, dtype=F64) / gamma + torch.tensor(h[:2].T @ h[:2])
    again, _ = regression_posterior(
        p0, torch.tensor(h[:2].T @ y[:2]), torch.tensor(h[2:]), torch.tensor(y[2:])
    )
    np.testing.assert_allclose(again.numpy(), mean.numpy(), rtol=1e-10)


def _official_exact_moments(features, labels, mu, sigma):
    """``ExactMoments.compute_moments`` of the official code, written out for one output (its
    einsum expressions; the variance before the clamp and the power)."""
    mu, sigma, labels = mu[None], sigma[None], labels[:, None]
    h = features
    mumu = torch.einsum("od,oe->ode", mu, mu)
    s_mumu, s_mumu_neg = sigma + mumu, sigma - mumu
    mu_h = torch.einsum("od,be->obde", mu, h).permute(1, 0, 2, 3)
    e_wxww = (
        torch.einsum("bode,oef->bodf", mu_h, s_mumu)
        + torch.einsum("ode,bofe->bodf", s_mumu, mu_h)
        + torch.einsum("bd,od,oef->boef", h, mu, s_mumu_neg)
    )
    hh = torch.einsum("bd,be->bde", h, h)
    hh_hh = hh + hh.permute(0, 2, 1)
    tr = torch.diagonal(torch.einsum("bdf,ofe->bode", hh, sigma), dim1=-2, dim2=-1).sum(-1)
    e_wxwxww = (
        torch.einsum("ode,bef,ofg->bodg", s_mumu, hh_hh, s_mumu)
        + torch.einsum("od,bde,oe,ofg->bofg", mu, hh, mu, s_mumu_neg)
        + torch.einsum("bo,ode->bode", tr, s_mumu)
    )
    e_g = 2 * (torch.einsum("ode,bd->boe", s_mumu, h) - torch.einsum("bo,od->bod", labels, mu))
    e_gg = 4 * (
        torch.einsum("bo,ode->bode", labels**2, s_mumu)
        - 2 * torch.einsum("bo,bode->bode", labels, e_wxww)
        + e_wxwxww
    )
    variance = torch.diagonal(e_gg - torch.einsum("bod,boe->bode", e_g, e_g), dim1=-2, dim2=-1)
    return e_g[:, 0], variance[:, 0]


def test_the_regression_moments_are_the_official_formulas_and_monte_carlos():
    g = torch.Generator().manual_seed(1)
    mean, covariance = _random_gaussian(4, seed=2)
    h, y = torch.randn(6, 4, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    expected, variance = regression_moments(mean, covariance, h, y)
    official_mean, official_variance = _official_exact_moments(h, y, mean, covariance)
    torch.testing.assert_close(expected, official_mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(variance, official_variance, rtol=1e-10, atol=1e-10)
    # An independent check: the moments of 2 w (w . h - y) over 100k samples of w.
    w = mean + torch.randn(100_000, 4, generator=g, dtype=F64) @ torch.linalg.cholesky(covariance).T
    samples = 2 * w[:, None, :] * (w @ h.T - y)[:, :, None]
    torch.testing.assert_close(expected, samples.mean(0), rtol=0.03, atol=0.03)
    torch.testing.assert_close(variance, samples.var(0), rtol=0.06, atol=0.06)


def test_the_binary_posterior_is_a_newton_step_with_the_exact_hessian():
    """For the logistic loss the Gauss-Newton matrix is the Hessian: the precision equals the
    autograd Hessian of sum BCE + the prior's quadratic, and the mean is theta - H^-1 grad;
    iterated, it stops at the MAP (zero gradient)."""
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(20, 3, generator=g, dtype=F64), torch.ones(20, 1, dtype=F64)], 1)
    y = (torch.rand(20, generator=g, dtype=F64) < 0.5).to(F64)
    prior_mean, prior_precision = _random_gaussian(4, seed=4)
    prior_precision = torch.linalg.inv(prior_precision)
    theta = torch.randn(4, generator=g, dtype=F64)

    def objective(t):
        d = t - prior_mean
        return F.binary_cross_entropy_with_logits(x @ t, y, reduction="sum") + 0.5 * d @ (
            prior_precision @ d
        )

    mean, precision = binary_posterior(theta, prior_mean, prior_precision, x, y)
    hessian = torch.autograd.functional.hessian(objective, theta)
    gradient = torch.autograd.functional.jacobian(objective, theta)
    torch.testing.assert_close(precision, hessian, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(mean, theta - torch.linalg.solve(hessian, gradient))
    for _ in range(20):
        mean, _ = binary_posterior(mean, prior_mean, prior_precision, x, y)
    assert torch.autograd.functional.jacobian(objective, mean).abs().max() < 1e-10


def test_the_binary_moments_and_the_aggregation_are_the_official_formulas():
    """``ApproxMomentsBinaryTasks.dL_dh`` and ``GaussianAgg`` of the official code on the same
    posterior samples: the (S, B, K, D) gradients, their mean and variance over the samples,
    the precision-weighted mean over tasks divided by the batch size."""
    g = torch.Generator().manual_seed(5)
    s, b, k, d = 50, 7, 3, 4
    h = torch.randn(b, d, generator=g, dtype=F64)
    y = (torch.rand(b, k, generator=g) < 0.5).to(F64)
    samples = torch.randn(s, k, d + 1, generator=g, dtype=F64)
    logits = torch.einsum("bd,sod->sbo", h, samples[..., :-1]) + samples[:, None, :, -1]
    per_sample = torch.einsum("sod,sbo->sbod", samples[..., :-1], torch.sigmoid(logits) - y)
    official_mean = per_sample.mean(0)
    official_variance = (per_sample**2).mean(0) - official_mean**2
    ours = [binary_moments(samples[:, t], h, y[:, t]) for t in range(k)]
    expected = torch.stack([m for m, _ in ours], 1)
    variance = torch.stack([v for _, v in ours], 1)
    torch.testing.assert_close(expected, official_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(variance, official_variance, rtol=1e-10, atol=1e-12)

    power = torch.tensor([0.5, 0.5, 0.5], dtype=F64)
    direction, weights = aggregate(expected, variance, power)
    clamped = torch.clamp(official_variance, min=1e-8) ** 0.5
    official = (1 / (1 / clamped).sum(1)) * (official_mean / clamped).sum(1) / b
    torch.testing.assert_close(direction, official, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weights.sum(1), torch.ones(b, d, dtype=F64))


def test_equal_uncertainties_average_and_a_certain_task_dominates():
    expected = torch.tensor([[[1.0, 2.0], [3.0, -2.0]]], dtype=F64)  # (B=1, K=2, D=2)
    same = torch.ones_like(expected)
    direction, _ = aggregate(expected, same, torch.ones(2, dtype=F64))
    torch.testing.assert_close(direction, torch.tensor([[2.0, 0.0]], dtype=F64))
    sure = torch.tensor([[[1e-6, 1e-6], [1.0, 1.0]]], dtype=F64)
    direction, _ = aggregate(expected, sure, torch.ones(2, dtype=F64))
    torch.testing.assert_close(direction, expected[:, 0], rtol=1e-5, atol=1e-5)


class _Squeeze(nn.Module):
    def forward(self, x):
        return x.squeeze(-1)


def _bound(kinds, n_tasks=2, d=3, **params):
    method = smto.create("bayesagg_mtl", n_tasks, **params)
    heads = [nn.Sequential(nn.Linear(d, 1), _Squeeze()) for _ in range(n_tasks)]
    method.bind_heads(heads, kinds)
    return method, heads


def test_after_the_warmup_the_step_is_the_aggregate_and_the_heads_get_their_gradients():
    """One regression and one binary head on a linear encoder: the encoder's gradient is the
    aggregated representation gradient backpropagated (computed here from the module's
    functions with the same random draws), the heads' the plain gradient of their loss."""
    torch.manual_seed(0)
    method, heads = _bound(["mse", "classification"], warmup_epochs=0, num_mc_samples=64)
    encoder = nn.Linear(4, 3)
    x = torch.randn(10, 4)
    targets = [torch.randn(10), (torch.rand(10) < 0.5).float()]
    z = encoder(x)
    losses = torch.stack(
        [
            ((heads[0](z) - targets[0]) ** 2).mean(),
            F.binary_cross_entropy_with_logits(heads[1](z), targets[1]),
        ]
    )
    method.observe_targets(targets)
    state = torch.random.get_rng_state()
    result = method.backward(losses, list(encoder.parameters()), z)

    torch.random.set_rng_state(state)
    h = z.detach().to(F64)
    y = [t.to(F64) for t in targets]
    eye, zeros = torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64)
    mean, covariance = regression_posterior(eye, zeros, h, y[0])
    m0, v0 = regression_moments(mean, covariance, h, y[0])
    head = heads[1][0]
    theta = torch.cat([head.weight.detach()[0], head.bias.detach()]).to(F64)
    inputs = torch.cat([h, torch.ones(10, 1, dtype=F64)], 1)
    post_mean, precision = binary_posterior(
        theta, torch.zeros(4, dtype=F64), torch.eye(4, dtype=F64), inputs, y[1]
    )
    factor = torch.linalg.cholesky(precision)
    noise = torch.randn(64, 4).to(F64)
    samples = post_mean + torch.linalg.solve_triangular(factor.T, noise.T, upper=True).T
    m1, v1 = binary_moments(samples, h, y[1])
    direction, weights = aggregate(
        torch.stack([m0, m1], 1), torch.stack([v0, v1], 1), torch.tensor([0.5, 0.5], dtype=F64)
    )
    torch.testing.assert_close(encoder.weight.grad, direction.float().T @ x, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.weights, weights.mean(dim=(0, 2)).float())
    for k in range(2):
        expected = torch.autograd.grad(losses[k], heads[k][0].weight, retain_graph=True)[0]
        torch.testing.assert_close(heads[k][0].weight.grad, expected)


def test_heads_and_losses_it_does_not_fit_are_config_errors():
    method = smto.create("bayesagg_mtl", 2)
    deep = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(ConfigError, match=r"one linear layer .* head 1 "):
        method.bind_heads([nn.Linear(3, 1), deep], ["mse", "mse"])
    with pytest.raises(ConfigError, match="task 0's loss is 'l1'"):
        method.bind_heads([nn.Linear(3, 1), nn.Linear(3, 1)], ["l1", "mse"])
    with pytest.raises(ValueError, match=r"serve smto\.capabilities\.HeadTargets"):
        z = torch.randn(4, 3, requires_grad=True)
        smto.create("bayesagg_mtl", 2).backward(z.sum(1)[:2] ** 2, [], z)
    # A summed (not averaged) squared error is not the loss it models.
    method, heads = _bound(["mse", "mse"])
    z = torch.randn(5, 3, requires_grad=True)
    y = [torch.randn(5), torch.randn(5)]
    losses = torch.stack([((heads[k](z) - y[k]) ** 2).sum() for k in range(2)])
    method.observe_targets(y)
    with pytest.raises(ConfigError, match="task 0's loss to be the batch mean of squared"):
        method.backward(losses, [], z)


def test_multi_mnist_lenet_heads_are_refused_by_the_engine(tmp_path):
    """The engine binds the heads before training: the toy's fit; an unfitting model fails
    with the reason before any step (the LeNet's heads are two layers deep)."""
    from smto.models.lenet import multi_lenet

    method = smto.create("bayesagg_mtl", 2)
    model = multi_lenet(("CL", "RR"))
    with pytest.raises(ConfigError, match="one linear layer"):
        method.bind_heads(list(model.heads.values()), ["classification", "mse"])


TOY = {"problem": "toy_regression", "tasks": "T1_T2", "batch_size": 64, "lr": 3e-3}


def test_it_trains_the_toy_regression_and_resumes_bit_identically(tmp_path):
    config = RunConfig(**TOY, method="bayesagg_mtl", epochs=3)
    full = train(config, tmp_path / "full")
    assert full.status == "completed"
    first, last = full.history[0], full.history[-1]
    assert first["weights"] == {"T1": 1.0, "T2": 1.0}  # the warm-up epoch sums the losses
    assert sum(last["weights"].values()) == pytest.approx(1.0)
    assert sum(last["train_loss"].values()) < sum(first["train_loss"].values())

    class Stop(Exception):
        pass

    def stop_after_two(record):
        if len(record.history) == 2:
            raise Stop

    with pytest.raises(Stop):
        train(config, tmp_path / "cut", on_epoch_end=stop_after_two)
    assert load_run(run_dir(config, tmp_path / "cut")).status == "failed"
    resumed = train(config, tmp_path / "cut")
    strip = lambda r: [  # noqa: E731
        {k: v for k, v in e.items() if k not in ("seconds", "train_seconds")} for e in r.history
    ]
    assert strip(resumed) == strip(full)
    assert resumed.best_test == full.best_test
