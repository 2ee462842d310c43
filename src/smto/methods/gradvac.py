"""GradVac: gradient vaccine, raising each pair's cosine towards an EMA target.

Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and Improving Multi-task
Optimization in Massively Multilingual Models", ICLR 2021 (arXiv 2010.05874).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale


def gradvac_weights(
    gram: Tensor, targets: Tensor, orders: list[list[int]], beta: float, eps: float
) -> tuple[Tensor, Tensor]:
    """GradVac's effective weights and the updated cosine targets, on the Gram matrix.

    Each modified gradient is ``g_i' = C[i] @ G`` (C starts as the identity). For task i and
    each other task j in the order ``orders[i]``: with ``phi = cos(g_i', g_j)`` and its target
    ``t = targets[i, j]``, if ``phi < t``, ``g_i'`` gets ``w g_j`` added, with
    ``w = |g_i'| (t sqrt(1 - phi^2) - phi sqrt(1 - t^2)) / (|g_j| sqrt(1 - t^2))`` (the
    paper's eq. 3, ``eps`` in the denominators), which sets the angle to the target one; then
    ``targets[i, j] <- (1 - beta) t + beta phi``. The update is ``sum_i g_i'``: weights
    ``sum_i C[i]``. Float64 CPU tensors; returns (weights, new targets).
    """
    k = gram.shape[0]
    coefficients = torch.eye(k, dtype=torch.float64)
    targets = targets.clone()
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    for i in range(k):
        inner = coefficients[i] @ gram  # g_i' . g_j for every j
        for j in orders[i]:
            norm_i = math.sqrt(max(float(inner @ coefficients[i]), 0.0))
            phi = float(inner[j]) / (norm_i * float(norms[j]) + eps)
            target = float(targets[i, j])
            if phi < target:
                room = math.sqrt(max(1.0 - target * target, 0.0))
                spread = math.sqrt(max(1.0 - phi * phi, 0.0))
                w = norm_i * (target * spread - phi * room) / (float(norms[j]) * room + eps)
                coefficients[i, j] += w
                inner = inner + w * gram[j]
            targets[i, j] = (1.0 - beta) * target + beta * phi
    return coefficients.sum(dim=0), targets


class GradVac(GramMethod):
    """Sets each pair's cosine at least to an EMA of its past cosines (the "vaccine").

    PCGrad's projection only acts when two gradients conflict (cosine < 0); GradVac raises
    the cosine of ``g_i'`` and ``g_j`` to a per-pair target ``phi_hat_ij`` learned as an EMA
    of the observed cosines (from 0, so at first it is PCGrad's condition, with a closed-form
    step to the target angle instead of the orthogonal projection). Tasks j are visited in a
    fresh random order per task (``torch.randperm(K - 1)`` of the others on torch's global CPU
    RNG, drawn as torchjd draws it, so a seeded run visits the same pairs).
    The update is the sum of the modified gradients (``Scale.SUM``), whose exact weights are
    tracked on the Gram matrix as in PCGrad. The targets are in ``state_dict()``.

    Args:
        n_tasks: the number of tasks.
        beta: the EMA factor of the targets (0.5, LibMTL's and torchjd's default).
        eps: added to the denominators (1e-8, as torchjd).
        space: ``"params"`` (default; the paper's whole-model variant) or ``"features"``.
    """

    display_name = "GradVac"
    scale = Scale.SUM

    def __init__(
        self, n_tasks: int, beta: float = 0.5, eps: float = 1e-8, space: str | None = None
    ) -> None:
        super().__init__(n_tasks, space)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.beta = float(beta)
        self.eps = float(eps)
        self.targets = torch.zeros(n_tasks, n_tasks, dtype=torch.float64)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        k = gram.shape[0]
        orders = []
        for i in range(k):
            others = [j for j in range(k) if j != i]
            orders.append([others[p] for p in torch.randperm(k - 1).tolist()])
        weights, self.targets = gradvac_weights(gram, self.targets, orders, self.beta, self.eps)
        return GramWeights(weights)

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "targets": self.targets.clone()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.targets = state["targets"].to(torch.float64).clone()
