"""BayesAgg-MTL: task gradients weighted by their uncertainty under a posterior over the heads.

Achituve, Diamant, Netzer, Chechik, Fetaya, "Bayesian Uncertainty for Gradient Aggregation in
Multi-Task Learning", ICML 2024 (arXiv 2402.04005); the authors' code is
``BayesAgg_MTL/BayesAggMTL.py`` of ssi-research/BayesAgg_MTL, whose update this follows.

Each task's head is one linear layer ``w_k . h + b_k`` on the representation ``h``. A Gaussian
posterior over ``w_k`` makes the per-sample gradient ``g_bk = dl_bk / dh_b`` a random vector;
its mean and per-coordinate variance give the update of the representation

    dL/dh_b = (sum_k E[g_bk] / V[g_bk]) / (sum_k 1 / V[g_bk]) / B

(coordinate-wise, ``V`` clamped at 1e-8 and raised to ``sqrt_power``), backpropagated once
through the encoder. The heads get the plain gradient of the summed losses.

* Regression (``"mse"``: the batch mean of squared errors): the exact Bayesian linear
  regression posterior (unit noise, no bias), with the previous epoch's features as prior data
  over ``N(0, gamma I)``; the gradient ``2 w (w . h - y)`` has closed-form moments.
* Binary classification (``"classification"`` with one logit, the batch mean of BCE): a
  Laplace approximation at the current head (one Newton step with the Gauss-Newton Hessian),
  its prior the same approximation over the previous epoch's features and ``N(0, gamma I)``;
  the moments of ``(sigmoid(w . h + b) - y) w`` by ``num_mc_samples`` posterior samples.

The first ``warmup_epochs`` epochs train on the summed losses (the code's ``ls_epochs``).
Defaults are the authors' common command line (gamma 1, both powers 0.5, 1024 samples, one
warm-up epoch); their experiments tune gamma, the powers and the warm-up per dataset.

Differences from the official code: the regression moments are the Gaussian fourth-moment
identity written per coordinate (equal to the code's einsum expressions, tested) rather than
the D x D second-moment matrices; the binary tasks' posteriors are solved per task (the code
inverts one block-diagonal matrix over all tasks: the same numbers) and the Monte-Carlo
moments are taken without the S x B x K x D tensor; the regression prior statistics of an
epoch are accumulated as it runs (the code stores the features: the same sums); the binary
prior is taken at the end of each epoch (the code takes it at the next epoch's first batch,
with the same head parameters); the solves are in float64 (the code's are in float32, with
jitter). Multi-class heads are not supported (ConfigError). The code's trainer also clips
the gradient norms (heads 10, shared 5): that is the loop's business, not the method's.

A loop serves it through :class:`~smto.capabilities.HeadTargets` (the heads, the loss kinds,
each batch's targets) and :class:`~smto.capabilities.EpochEnd`; the engine does both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smto.capabilities import EpochEnd, HeadTargets
from smto.errors import ConfigError, check_finite
from smto.method import Method, Scale, Space, StepResult

F64 = torch.float64
VARIANCE_FLOOR = 1e-8
"""The official clamp of the gradient variances before the power."""


def regression_posterior(
    precision: Tensor, shift: Tensor, features: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """The Gaussian posterior (mean (D,), covariance (D, D)) of ``w`` in ``y = w . h + noise``
    (unit noise) given data ``features`` (B, D), ``targets`` (B,) and a prior in natural form:
    precision ``P`` and shift ``P mu``."""
    posterior_precision = precision + features.T @ features
    factor = torch.linalg.cholesky(posterior_precision)
    covariance = torch.cholesky_inverse(factor)
    mean = torch.cholesky_solve((shift + features.T @ targets)[:, None], factor)[:, 0]
    return mean, covariance


def regression_moments(
    mean: Tensor, covariance: Tensor, features: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean and per-coordinate variance (both (B, D)) of ``g_b = 2 w (w . h_b - y_b)`` for
    ``w ~ N(mean, covariance)``: with ``s_b = w . h_b - y_b`` (mean ``m_b``, variance ``v_b``)
    and ``c_b = Cov(w, s_b)``, ``E[g] = 2 (mean m + c)`` and
    ``V[g_d] = 4 (mean_d^2 v + m^2 S_dd + 2 mean_d m c_d + S_dd v + c_d^2)``."""
    m = features @ mean - targets  # (B,)
    c = features @ covariance  # (B, D): Cov(w, s_b) = S h_b
    v = (c * features).sum(dim=1)  # (B,)
    diagonal = covariance.diagonal()
    expected = 2 * (mean * m[:, None] + c)
    variance = 4 * (
        mean**2 * v[:, None]
        + m[:, None] ** 2 * diagonal
        + 2 * mean * m[:, None] * c
        + diagonal * v[:, None]
        + c**2
    )
    return expected, variance


def binary_posterior(
    theta: Tensor, prior_mean: Tensor, prior_precision: Tensor, inputs: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """The Laplace posterior (mean, precision) of a logistic head ``theta = (w, b)`` at
    ``theta``: one Newton step of the summed BCE plus the Gaussian prior, with the Gauss-Newton
    Hessian. ``inputs`` (B, D + 1) are the features with a column of ones."""
    probabilities = torch.sigmoid(inputs @ theta)
    gradient = inputs.T @ (probabilities - targets) + prior_precision @ (theta - prior_mean)
    curvature = probabilities * (1 - probabilities)
    precision = (inputs * curvature[:, None]).T @ inputs + prior_precision
    step = torch.cholesky_solve(gradient[:, None], torch.linalg.cholesky(precision))[:, 0]
    return theta - step, precision


def binary_moments(samples: Tensor, features: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Monte-Carlo mean and per-coordinate variance (both (B, D)) of
    ``g_b = (sigmoid(w . h_b + b) - y_b) w`` over posterior ``samples`` (S, D + 1) of
    ``(w, b)``: ``E[g] = mean_s r_sb w_s`` and ``V[g] = mean_s r_sb^2 w_s^2 - E[g]^2``."""
    weights, biases = samples[:, :-1], samples[:, -1]
    residuals = torch.sigmoid(weights @ features.T + biases[:, None]) - targets  # (S, B)
    n = samples.shape[0]
    expected = residuals.T @ weights / n
    second = (residuals**2).T @ weights**2 / n
    return expected, second - expected**2


def aggregate(expected: Tensor, variance: Tensor, power: Tensor) -> tuple[Tensor, Tensor]:
    """The precision-weighted mean over tasks of (B, K, D) gradient means, each task's
    variance clamped at 1e-8 and raised to its ``power`` (K,), divided by B; and the (B, K, D)
    weights, which sum to one over the tasks."""
    precision = 1 / variance.clamp(min=VARIANCE_FLOOR) ** power[None, :, None]
    weights = precision / precision.sum(dim=1, keepdim=True)
    return (weights * expected).sum(dim=1) / expected.shape[0], weights


def _linear_of(head: nn.Module, task: int) -> nn.Linear:
    """The head's one linear layer, which must hold all of its parameters, with one output."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1 or linears[0].bias is None or linears[0].out_features != 1:
        raise ConfigError(
            f"BayesAgg-MTL needs every head to be one linear layer with a bias and one output "
            f"on the representation; head {task} ({type(head).__name__}) is not"
        )
    if {id(p) for p in head.parameters()} != {id(p) for p in linears[0].parameters()}:
        raise ConfigError(
            f"BayesAgg-MTL needs every head's only parameters to be its last linear layer's; "
            f"head {task} has others"
        )
    return linears[0]


class BayesAggMTL(Method, HeadTargets, EpochEnd):
    """Uncertainty-weighted aggregation of the per-sample representation gradients.

    See the module docstring for the update, the defaults and the differences from the
    official code. The reported weights are each task's mean share (over the batch and the
    representation's coordinates) of the precision weights, which sum to one; during the
    warm-up, ones (the summed losses). Scale (CUSTOM): per coordinate, a weighted mean of the
    tasks' expected gradients.

    Args:
        n_tasks: the number of tasks.
        gamma: the prior variance of the heads' parameters (1.0).
        sqrt_power: the power of the regression gradients' variances (0.5).
        sqrt_power_cls: the power of the binary tasks' variances (0.5).
        num_mc_samples: posterior samples of each binary head per step (1024).
        warmup_epochs: epochs on the summed losses first (1).
    """

    display_name = "BayesAgg-MTL"
    scale = Scale.CUSTOM

    def __init__(
        self,
        n_tasks: int,
        gamma: float = 1.0,
        sqrt_power: float = 0.5,
        sqrt_power_cls: float = 0.5,
        num_mc_samples: int = 1024,
        warmup_epochs: int = 1,
    ) -> None:
        super().__init__(n_tasks)
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if not (sqrt_power >= 0 and sqrt_power_cls >= 0):
            raise ValueError(f"the powers must be >= 0, got {sqrt_power}, {sqrt_power_cls}")
        if num_mc_samples < 1 or warmup_epochs < 0:
            raise ValueError(
                f"num_mc_samples must be >= 1 and warmup_epochs >= 0, got {num_mc_samples}, "
                f"{warmup_epochs}"
            )
        self.space = Space.FEATURES
        self.gamma = float(gamma)
        self.sqrt_power = float(sqrt_power)
        self.sqrt_power_cls = float(sqrt_power_cls)
        self.num_mc_samples = int(num_mc_samples)
        self.warmup_epochs = int(warmup_epochs)
        self._heads: list[nn.Linear] | None = None
        self._kinds: list[str] = []
        self._checked = False
        self._targets: list[Tensor] | None = None
        self.epoch = 0
        self._priors: list[tuple[Tensor, Tensor] | None] = [None] * n_tasks
        self._sums: list[tuple[Tensor, Tensor] | None] = [None] * n_tasks
        self._seen: list[list[tuple[Tensor, Tensor]]] = [[] for _ in range(n_tasks)]

    # -- what the loop serves -----------------------------------------------------------

    def bind_heads(self, heads: Sequence[nn.Module], loss_types: Sequence[str]) -> None:
        """Finds each head's linear layer and the task's kind: "mse" is regression,
        "classification" binary (checked on the first batch: one logit, BCE)."""
        if len(heads) != self.n_tasks or len(loss_types) != self.n_tasks:
            raise ConfigError(
                f"BayesAgg-MTL was built for {self.n_tasks} tasks, got {len(heads)} heads and "
                f"{len(loss_types)} loss types"
            )
        kinds = {"mse": "regression", "classification": "binary"}
        for k, kind in enumerate(loss_types):
            if kind not in kinds:
                raise ConfigError(
                    f"BayesAgg-MTL supports regression (mse) and binary classification heads; "
                    f"task {k}'s loss is {kind!r}"
                )
        self._heads = [_linear_of(head, k) for k, head in enumerate(heads)]
        self._kinds = [kinds[kind] for kind in loss_types]
        self._checked = False

    def observe_targets(self, targets: Sequence[Tensor]) -> None:
        """Keeps the batch's (B,) targets of each task for the next ``backward``."""
        if len(targets) != self.n_tasks:
            raise ValueError(f"BayesAgg-MTL needs {self.n_tasks} targets, got {len(targets)}")
        self._targets = [t.detach() for t in targets]

    def end_epoch(self) -> None:
        """The epoch's data becomes the prior of the next epoch's posteriors."""
        if self._heads is not None:
            for k, kind in enumerate(self._kinds):
                if kind == "regression" and self._sums[k] is not None:
                    self._priors[k] = self._sums[k]
                elif kind == "binary" and self._seen[k]:
                    inputs = torch.cat([x for x, _ in self._seen[k]])
                    targets = torch.cat([y for _, y in self._seen[k]])
                    mean, precision = self._base_prior(inputs.shape[1], inputs.device)
                    self._priors[k] = binary_posterior(
                        self._theta(k), mean, precision, inputs, targets
                    )
        self._sums = [None] * self.n_tasks
        self._seen = [[] for _ in range(self.n_tasks)]
        self.epoch += 1

    # -- the step -----------------------------------------------------------------------

    def backward(
        self,
        losses: Tensor,
        shared_params: Iterable[Tensor] | None = None,
        features: Tensor | None = None,
    ) -> StepResult:
        """Sums the losses during the warm-up; then writes the heads' summed gradients and
        backpropagates the aggregated representation gradient through the encoder."""
        self._check_losses(losses)
        if self._heads is None or self._targets is None:
            raise ValueError(
                "BayesAgg-MTL needs its heads and each batch's targets: serve "
                "smto.capabilities.HeadTargets (bind_heads, observe_targets)"
            )
        if features is None or features.dim() != 2 or not features.requires_grad:
            raise ConfigError("BayesAgg-MTL needs the (B, D) representation, with its graph")
        h = features.detach().to(F64)
        targets = [t.to(F64).reshape(-1) for t in self._targets]
        if not self._checked:
            self._check_fit(losses, features, targets)
        self._remember(h, targets)
        self._targets = None
        if self.epoch < self.warmup_epochs:
            losses.sum().backward()
            return self._report(torch.ones(self.n_tasks, device=losses.device))
        head_params = [p for head in self._heads for p in (head.weight, head.bias)]
        total = losses.sum()
        for p, g in zip(head_params, torch.autograd.grad(total, head_params, retain_graph=True)):
            p.grad = g if p.grad is None else p.grad + g
        expected, variance = zip(*(self._moments(k, h, targets[k]) for k in range(self.n_tasks)))
        powers = [self.sqrt_power_cls if k == "binary" else self.sqrt_power for k in self._kinds]
        power = torch.tensor(powers, dtype=F64, device=h.device)
        direction, weights = aggregate(torch.stack(expected, 1), torch.stack(variance, 1), power)
        check_finite("aggregated representation gradient", direction)
        features.backward(direction.to(features.dtype))
        return self._report(weights.mean(dim=(0, 2)).to(losses.dtype))

    # -- the pieces ---------------------------------------------------------------------

    def _theta(self, k: int) -> Tensor:
        head = self._heads[k]
        return torch.cat([head.weight.detach()[0], head.bias.detach()]).to(F64)

    def _base_prior(self, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``N(0, gamma I)``: mean and precision."""
        eye = torch.eye(size, dtype=F64, device=device)
        return torch.zeros(size, dtype=F64, device=device), eye / self.gamma

    def _remember(self, h: Tensor, targets: list[Tensor]) -> None:
        """This epoch's data, for the next epoch's priors: the regression prior's natural
        parameters as running sums, the binary tasks' features and targets."""
        for k, kind in enumerate(self._kinds):
            if kind == "regression":
                if self._sums[k] is None:
                    _, precision = self._base_prior(h.shape[1], h.device)
                    self._sums[k] = (precision, torch.zeros(h.shape[1], dtype=F64, device=h.device))
                precision, shift = self._sums[k]
                self._sums[k] = (precision + h.T @ h, shift + h.T @ targets[k])
            else:
                ones = torch.ones(h.shape[0], 1, dtype=F64, device=h.device)
                self._seen[k].append((torch.cat([h, ones], dim=1), targets[k]))

    def _moments(self, k: int, h: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        prior = self._priors[k]
        if self._kinds[k] == "regression":
            if prior is None:
                prior = (self._base_prior(h.shape[1], h.device)[1], h.new_zeros(h.shape[1]))
            mean, covariance = regression_posterior(prior[0], prior[1], h, targets)
            return regression_moments(mean, covariance, h, targets)
        if prior is None:
            prior = self._base_prior(h.shape[1] + 1, h.device)
        inputs = torch.cat([h, torch.ones(h.shape[0], 1, dtype=F64, device=h.device)], dim=1)
        mean, precision = binary_posterior(self._theta(k), prior[0], prior[1], inputs, targets)
        # Samples of N(mean, precision^-1): mean + L^-T eps, with precision = L L^T.
        factor = torch.linalg.cholesky(precision)
        noise = torch.randn(self.num_mc_samples, mean.shape[0], device=h.device).to(F64)
        samples = mean + torch.linalg.solve_triangular(factor.T, noise.T, upper=True).T
        return binary_moments(samples, h, targets)

    def _check_fit(self, losses: Tensor, features: Tensor, targets: list[Tensor]) -> None:
        """On the first batch: each loss is its kind's loss of the linear layer's output (so
        the head is that layer alone), else a ConfigError naming the task."""
        with torch.no_grad():
            for k, (head, kind) in enumerate(zip(self._heads, self._kinds, strict=True)):
                output = F.linear(features, head.weight, head.bias)[:, 0].to(F64)
                if targets[k].shape != output.shape:
                    raise ConfigError(
                        f"BayesAgg-MTL needs one target per sample for task {k}, got shape "
                        f"{tuple(self._targets[k].shape)}"
                    )
                if kind == "regression":
                    expected = ((output - targets[k]) ** 2).mean()
                else:
                    expected = F.binary_cross_entropy_with_logits(output, targets[k])
                name = "the batch mean of squared errors" if kind == "regression" else "BCE"
                if not torch.allclose(losses[k].detach().to(F64), expected, rtol=1e-4, atol=1e-6):
                    raise ConfigError(
                        f"BayesAgg-MTL needs task {k}'s loss to be {name} of its head's linear "
                        f"layer on the representation; the loss differs ({losses[k].item():.6g} "
                        f"vs {expected.item():.6g})"
                    )
        self._checked = True

    # -- state ------------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "priors": self._priors,
            "sums": self._sums,
            "seen": self._seen,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._priors = list(state["priors"])
        self._sums = list(state["sums"])
        self._seen = [list(s) for s in state["seen"]]
