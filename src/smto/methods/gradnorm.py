"""GradNorm: learned task weights that equalize the tasks' gradient norms and training rates.

Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss
Balancing in Deep Multitask Networks", ICML 2018 (arXiv 1711.02257). The parameterization and
the loss reference follow LibMTL (``LibMTL/weighting/GradNorm.py``): weights ``K softmax(s)``,
the first epoch with uniform weights, and the first epoch's mean losses as ``L_k(0)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from smto.capabilities import EpochEnd
from smto.method import Aggregation, GradientMethod, Scale


class GradNorm(GradientMethod, EpochEnd):
    """The update ``sum_k w_k g_k`` with learned weights ``w = K softmax(s)``.

    From the second epoch on, each step also gives the logits ``s`` the gradient of the
    GradNorm loss ``sum_k | |w_k g_k| - mean_j |w_j g_j| r_k^alpha |`` (the target detached),
    where ``r_k = Ltilde_k / mean(Ltilde)`` is the relative inverse training rate and
    ``Ltilde_k = L_k / L_k(0)``: tasks that train slower get larger gradients. ``alpha`` is the
    restoring force (the paper's default 1.5). ``s`` is an ``nn.Parameter``: give
    ``method.parameters()`` to the optimizer (the trainer does), which steps it with the model.

    Differences from the paper, as in LibMTL: the weights are ``K softmax(s)`` (the paper
    renormalizes free weights to sum K after each step); ``L_k(0)`` is the mean loss of the
    first epoch, which trains with uniform weights (the paper takes the initial loss); the
    norms are those of the gradients in the method's space (the shared parameters by default,
    the representation with ``space="features"``), not of the last shared layer only.
    A trainer calls :meth:`end_epoch` after each training epoch (a loop that never does stays
    uniform). Scale (SUM): the weights sum to K.

    Args:
        n_tasks: the number of tasks.
        alpha: the restoring force (1.5).
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "GradNorm"
    scale = Scale.SUM

    def __init__(self, n_tasks: int, alpha: float = 1.5, space: str | None = None) -> None:
        super().__init__(n_tasks, space)
        if not alpha >= 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.logits = nn.Parameter(torch.zeros(n_tasks))
        self.epoch = 0
        self.initial_losses: Tensor | None = None
        self._loss_sum: Tensor | None = None
        self._n_batches = 0

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        self._check_rows(matrix)
        if self.initial_losses is None:
            batch = losses.detach().to(device="cpu", dtype=torch.float64)
            self._loss_sum = batch if self._loss_sum is None else self._loss_sum + batch
            self._n_batches += 1
            weights = torch.ones(self.n_tasks, dtype=matrix.dtype, device=matrix.device)
            return Aggregation(weights @ matrix, weights, {})
        norms = matrix.norm(dim=1)
        with torch.enable_grad():
            logits = self.logits.to(device=matrix.device, dtype=matrix.dtype)
            weights = self.n_tasks * torch.softmax(logits, dim=0)
            weighted_norms = weights * norms
            initial = self.initial_losses.to(device=matrix.device, dtype=matrix.dtype)
            ratios = losses.to(matrix.dtype) / initial
            target = (weighted_norms.mean() * (ratios / ratios.mean()) ** self.alpha).detach()
            balance = (weighted_norms - target).abs().sum()
            (grad,) = torch.autograd.grad(balance, self.logits)
        self.logits.grad = grad if self.logits.grad is None else self.logits.grad + grad
        weights = weights.detach()
        return Aggregation(weights @ matrix, weights, {"gradnorm_loss": float(balance.detach())})

    def end_epoch(self) -> None:
        """Ends an epoch; after the first with losses, their mean becomes ``L_k(0)``."""
        if self.initial_losses is None and self._loss_sum is not None:
            self.initial_losses = self._loss_sum / self._n_batches
        self.epoch += 1

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "initial_losses": self.initial_losses,
            "loss_sum": self._loss_sum,
            "n_batches": self._n_batches,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.initial_losses = state["initial_losses"]
        self._loss_sum = state["loss_sum"]
        self._n_batches = int(state["n_batches"])
