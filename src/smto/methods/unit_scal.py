"""Unitary scalarization: the uniform mean of the task losses.

Kurin et al., "In Defense of the Unitary Scalarization for Deep Multi-Task Learning",
NeurIPS 2022 (arXiv 2201.04122).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import LossMethod, Scale


class UnitScal(LossMethod):
    """Minimizes (1/K) sum_k L_k: every task weighted 1/K."""

    display_name = "Unit. Scal."
    scale = Scale.MEAN

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        weights = torch.full_like(losses.detach(), 1.0 / self.n_tasks)
        return losses * weights, weights
