"""DB-MTL: dual balancing of the losses (log) and of the gradient magnitudes (max norm).

Lin, Ye, Xu, Shi, Zhang, Kwok, "Dual-Balancing for Multi-Task Learning", arXiv 2308.12029
(2023). Its first version, SI-MTL (Lin et al., "A Scale-Invariant Task Balancing Approach
for Multi-Task Learning", arXiv 2308.12029v1), is the same without the EMA: registered as
``si_mtl`` (``beta=0``). Details the paper leaves open follow the authors' code in LibMTL
(``LibMTL/weighting/DB_MTL.py``): the EMA's zero start and its ``beta / step^beta_sigma``
factor, and the 1e-8 in the log and in the norm ratio.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from smto.method import Aggregation, GradientMethod, Scale

EPS = 1e-8


class DBMTL(GradientMethod):
    """Balances the losses by taking their logs and the gradients by scaling them to one norm.

    Per step t, with ``h_k = grad log(L_k + 1e-8) = g_k / (L_k + 1e-8)``:
    ``b = beta / t^beta_sigma``, the EMA ``m_k <- (1 - b) h_k + b m_k`` (from m = 0, as the
    authors' code: no bias correction), and the update ``sum_k alpha_k m_k`` with
    ``alpha_k = max_j |m_j| / (|m_k| + 1e-8)``: every task's EMA gradient gets the norm of the
    largest one.

    Reported weights: this step's coefficients ``alpha_k (1 - b) / (L_k + 1e-8)`` of ``g_k``;
    the update also carries ``b`` times the EMA of earlier steps (after a first step the
    direction is not ``weights @ G`` alone). Scale (CUSTOM).

    Heads: the plain sum of their task gradients (PROTOCOL.md); in LibMTL they get the
    gradients of the log losses, which ``heads="weighted"`` gives (weights 1 / (L_k + 1e-8)).

    Args:
        n_tasks: the number of tasks.
        beta: the EMA factor (LibMTL's default 0.9).
        beta_sigma: the decay exponent of the EMA factor (LibMTL's default 0: constant).
        space: ``"params"`` (default, as the authors) or ``"features"``.
        heads: ``"sum"`` (default) or ``"weighted"`` (LibMTL).
    """

    display_name = "DB-MTL"
    scale = Scale.CUSTOM

    def __init__(
        self,
        n_tasks: int,
        beta: float = 0.9,
        beta_sigma: float = 0.0,
        space: str | None = None,
        heads: str = "sum",
    ) -> None:
        super().__init__(n_tasks, space, heads)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if not beta_sigma >= 0.0:
            raise ValueError(f"beta_sigma must be >= 0, got {beta_sigma}")
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)
        self.steps = 0
        self.ema: Tensor | None = None

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        self._check_rows(matrix)
        self.steps += 1
        factor = self.beta / self.steps**self.beta_sigma
        inverse = 1.0 / (losses.to(matrix.dtype) + EPS)
        log_grads = inverse[:, None] * matrix
        if self.ema is None or self.ema.shape != matrix.shape:
            self.ema = torch.zeros_like(matrix)
        self.ema = log_grads + factor * (self.ema.to(matrix) - log_grads)
        norms = self.ema.norm(dim=1)
        alpha = norms.max() / (norms + EPS)
        direction = alpha @ self.ema
        weights = alpha * (1.0 - factor) * inverse
        return Aggregation(direction, weights, {}, inverse)

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "ema": self.ema}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.ema = state["ema"]
