"""MoCo: multi-objective gradient correction with tracked gradients and a moving lambda.

Fernando, Shen, Liu, Chaudhury, Murugesan, Chen, "Mitigating Gradient Bias in
Multi-objective Learning: A Provably Convergent Approach", ICLR 2023 (arXiv 2210.12624).
The defaults and the details follow the authors' code as LibMTL has it
(``LibMTL/weighting/MoCo.py``): each gradient rescaled to the norm of its loss, decaying step
sizes ``beta / t^beta_sigma`` and ``gamma / t^gamma_sigma``, and a softmax for lambda's update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from smto.method import Aggregation, GradientMethod, Scale

EPS = 1e-8
LAMBDA_UPDATES = ("softmax", "projection")


def simplex_projection(v: Tensor) -> Tensor:
    """The Euclidean projection of ``v`` onto the probability simplex (sort-based)."""
    u, _ = torch.sort(v, descending=True)
    cumulative = u.cumsum(dim=0) - 1.0
    index = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    rho = int((u - cumulative / index > 0).nonzero().max())
    return (v - cumulative[rho] / (rho + 1)).clamp_min(0.0)


class MoCo(GradientMethod):
    """Tracks each task's gradient and moves the task weights lambda along ``-Y Y^T lambda``.

    Per step t, with ``h_k = g_k L_k / (|g_k| + 1e-8)`` (the authors' rescaling):
    ``y_k <- y_k - b_t (y_k - h_k)`` with ``b_t = beta / t^beta_sigma`` (from y = 0),
    ``lambda <- update(lambda - c_t (Y Y^T + rho I) lambda)`` with ``c_t = gamma /
    t^gamma_sigma``, where ``update`` is a softmax (the authors' code, default) or the
    projection onto the simplex (the paper, ``lambda_update="projection"``); the update is
    ``Y^T lambda``. lambda starts at 1/K.

    Reported weights: this step's coefficients ``lambda_k b_t L_k / (|g_k| + 1e-8)`` of
    ``g_k``; the update also carries the tracked gradients of earlier steps. Scale (CUSTOM).
    The tracked gradients and lambda are in ``state_dict()``.

    Args:
        n_tasks: the number of tasks.
        beta, beta_sigma: the tracking step size and its decay (0.5, 0.5).
        gamma, gamma_sigma: lambda's step size and its decay (0.1, 0.5).
        rho: the l2 regularization of lambda's update (0).
        lambda_update: ``"softmax"`` (the authors' code) or ``"projection"`` (the paper).
        space: ``"params"`` (default, as the authors) or ``"features"``.
    """

    display_name = "MoCo"
    scale = Scale.CUSTOM

    def __init__(
        self,
        n_tasks: int,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        lambda_update: str = "softmax",
        space: str | None = None,
    ) -> None:
        super().__init__(n_tasks, space)
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        for name, value in (("beta_sigma", beta_sigma), ("gamma", gamma), ("rho", rho)):
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not gamma_sigma >= 0.0:
            raise ValueError(f"gamma_sigma must be >= 0, got {gamma_sigma}")
        if lambda_update not in LAMBDA_UPDATES:
            raise ValueError(
                f"lambda_update must be one of {LAMBDA_UPDATES}, got {lambda_update!r}"
            )
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.gamma, self.gamma_sigma = float(gamma), float(gamma_sigma)
        self.rho = float(rho)
        self.lambda_update = lambda_update
        self.steps = 0
        self.tracked: Tensor | None = None
        self.lambdas = torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        self._check_rows(matrix)
        self.steps += 1
        b = self.beta / self.steps**self.beta_sigma
        c = self.gamma / self.steps**self.gamma_sigma
        scale = losses.to(matrix.dtype) / (matrix.norm(dim=1) + EPS)
        rescaled = scale[:, None] * matrix
        if self.tracked is None or self.tracked.shape != matrix.shape:
            self.tracked = torch.zeros_like(matrix)
        tracked = self.tracked.to(matrix)
        self.tracked = tracked - b * (tracked - rescaled)
        gram = (self.tracked @ self.tracked.T).to(device="cpu", dtype=torch.float64)
        regularized = gram + self.rho * torch.eye(self.n_tasks, dtype=torch.float64)
        moved = self.lambdas - c * regularized @ self.lambdas
        if self.lambda_update == "softmax":
            self.lambdas = torch.softmax(moved, dim=0)
        else:
            self.lambdas = simplex_projection(moved)
        lambdas = self.lambdas.to(device=matrix.device, dtype=matrix.dtype)
        return Aggregation(lambdas @ self.tracked, lambdas * b * scale, {})

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "tracked": self.tracked, "lambdas": self.lambdas.clone()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.tracked = state["tracked"]
        self.lambdas = state["lambdas"].to(torch.float64).clone()
