"""Fixed task weights: sum_k w_k L_k with given weights.

Used by the main study (Gama & Grassi 2025, arXiv 2505.10347, Section 4.5, "FwLe0.9") with
weights extracted from a method's recorded per-epoch weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from smto.method import LossMethod, Scale


class FixedWeights(LossMethod):
    """Minimizes sum_k w_k L_k for fixed weights ``w`` (default: 1/K each).

    The weights are used as given (not renormalized), so their sum sets the scale.
    """

    display_name = "Fixed weights"
    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, weights: tuple[float, ...] | None = None) -> None:
        super().__init__(n_tasks)
        values = [1.0 / n_tasks] * n_tasks if weights is None else [float(w) for w in weights]
        if len(values) != n_tasks:
            raise ValueError(
                f"weights must have {n_tasks} entries (one per task), got {len(values)}"
            )
        if any(not math.isfinite(w) or w < 0 for w in values):
            raise ValueError(f"weights must be finite and non-negative, got {values}")
        self.weights = tuple(values)
        self.register_buffer("_weights", torch.tensor(values), persistent=False)

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        weights = self._weights.to(losses.dtype)
        return losses * weights, weights
