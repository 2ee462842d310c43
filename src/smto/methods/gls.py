"""GLS: the geometric loss strategy, the geometric mean of the task losses.

Chennupati, Sistu, Yogamani, Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation and
Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019 (arXiv 1904.08492).
"""

from __future__ import annotations

from torch import Tensor

from smto.method import LossMethod, Scale


class GLS(LossMethod):
    """Minimizes (prod_k L_k)^(1/K), so task k's gradient is weighted by GLS / (K L_k).

    The objective is not a sum of per-task terms, but its gradient at this step is that of
    ``sum_k c log(L_k) / K`` with ``c`` the detached geometric mean: those are the terms, and
    the weights ``c / (K L_k)`` are exactly d GLS / d L_k. Like SI it does not depend on the
    relative scale of the losses (only on their geometric mean's); the losses must be positive.

    Scale (CUSTOM): weights GLS / (K L_k). LibMTL reports ``L_k / (K prod L)`` as the weights
    of the same update; smto reports the derivatives, which reproduce it.
    """

    display_name = "GLS"
    scale = Scale.CUSTOM

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        log_losses = losses.log()
        geometric_mean = log_losses.detach().mean().exp()
        weights = geometric_mean / (self.n_tasks * losses.detach())
        return geometric_mean * log_losses / self.n_tasks, weights
