"""Random loss weighting (RLW): fresh random task weights at every step.

Lin, Ye, Xu, Shi, Zhang, Kwok, "Reasonable Effectiveness of Random Weighting: A Litmus Test
for Multi-Task Learning", TMLR 2022 (arXiv 2111.10603).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import LossMethod, Scale

DISPLAY_NAMES: dict[str, str] = {"normal": "RLW-Normal", "dirichlet": "RLW-Dirichlet"}


class RLW(LossMethod):
    """Minimizes sum_k w_k L_k with w drawn anew at every step and rescaled to sum K.

    ``distribution="normal"``: w = K softmax(x), x ~ N(0, I_K).
    ``distribution="dirichlet"``: w = K u, u ~ Dirichlet(1, ..., 1), drawn as normalized
    standard exponential variables (Gamma(1, 1)).
    The draws use torch's global random generator of the losses' device, so seeding torch
    (and checkpointing its RNG state) makes runs repeatable. The original (LibMTL) weights
    sum to 1; here they sum to K, as the main study's protocol states.
    The display name follows the distribution ("RLW-Normal", "RLW-Dirichlet").
    """

    display_name = "RLW"
    scale = Scale.SUM

    def __init__(self, n_tasks: int, distribution: str = "normal") -> None:
        super().__init__(n_tasks)
        if distribution not in DISPLAY_NAMES:
            raise ValueError(
                f"distribution must be one of {sorted(DISPLAY_NAMES)}, got {distribution!r}"
            )
        self.distribution = distribution
        self.display_name = DISPLAY_NAMES[distribution]

    def sample_weights(self, like: Tensor) -> Tensor:
        """Draws one weight vector (sums to K) on ``like``'s device and in its dtype."""
        if self.distribution == "normal":
            x = torch.randn(self.n_tasks, device=like.device, dtype=like.dtype)
            return self.n_tasks * torch.softmax(x, dim=0)
        u = torch.empty(self.n_tasks, device=like.device, dtype=like.dtype).exponential_()
        return self.n_tasks * u / u.sum()

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        weights = self.sample_weights(losses.detach())
        return losses * weights, weights
