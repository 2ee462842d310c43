"""MoDo: MGDA's weights moved by one projected gradient step per step.

Chen, Fernando, Ying, Chen, "Three-Way Trade-Off in Multi-Objective Learning: Optimization,
Generalization and Conflict-Avoidance", NeurIPS 2023 and JMLR 2024 (arXiv 2305.20057),
Algorithm 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale
from smto.methods.sdmgrad import project_onto_simplex


class MoDo(GramMethod):
    """Multi-objective gradient with double sampling: the weights take one projected step
    ``lambda <- Proj_simplex(lambda - gamma (G G^T lambda + rho lambda))`` on MGDA's
    (rho-regularized) problem per step, and the update is ``G^T lambda``. ``lambda`` starts at
    1/K and is kept in ``state_dict()``.

    Single batch: the paper's double sampling estimates ``G G^T`` from two independent
    batches (``G_1 G_2^T``, unbiased) and LibMTL takes the update from a third; a
    ``backward(losses)`` interface has one batch, so smto uses this step's Gram matrix for
    both, which is torchjd's ``MoDoWeighting`` applied to ``G G^T`` (the paper's guarantee is
    for the double-sampled version).

    Scale (MEAN): the weights sum to 1. ``gamma`` multiplies the raw Gram matrix, so the
    weights depend on the gradients' scale.

    Args:
        n_tasks: the number of tasks.
        gamma: the weights' learning rate (1e-3, LibMTL's default; torchjd's is 0.1).
        rho: the l2 regularization of the weights' problem (0.1, LibMTL and torchjd).
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "MoDo"
    scale = Scale.MEAN

    def __init__(
        self, n_tasks: int, gamma: float = 1e-3, rho: float = 0.1, space: str | None = None
    ) -> None:
        super().__init__(n_tasks, space)
        if not gamma > 0.0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if not rho >= 0.0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        self.gamma = float(gamma)
        self.rho = float(rho)
        self.lambd = torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        step = gram @ self.lambd + self.rho * self.lambd
        self.lambd = project_onto_simplex(self.lambd - self.gamma * step)
        return GramWeights(self.lambd.clone())

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "lambd": self.lambd.clone()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.lambd = state["lambd"].to(torch.float64).clone()
