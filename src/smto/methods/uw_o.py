"""Analytical ("optimal") uncertainty weighting, UW-O.

Elich, Kirchdorfer, Köhler, Schott, "Examining Common Paradigms in Multi-Task Learning"
(arXiv 2311.04698), Appendix A1.1; Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting
in Multi-Task Learning", GCPR 2024 (arXiv 2408.07985).
"""

from __future__ import annotations

import math

from torch import Tensor

from smto.method import LossMethod, Scale


class UWO(LossMethod):
    """Minimizes sum_k L_k / stopgrad(L_k + eps).

    Uncertainty weighting with a Laplace likelihood, L_k / sigma_k + log sigma_k, has its
    minimum over sigma_k at sigma_k = L_k; inserting it (without gradient) gives this
    objective. Multiplying a loss by a constant leaves every gradient unchanged, for the
    heads and the shared parameters alike. ``eps`` (default 1e-8) only guards against a
    zero loss; it changes the weights by a relative eps / L_k. Its gradient is K times the
    gradient of :class:`~smto.methods.si.SI` (the sum of grad log L_k).

    Scale (CUSTOM): weight 1/(L_k + eps), i.e. the sum over tasks of grad L_k / L_k.
    """

    display_name = "UW-O"
    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, eps: float = 1e-8) -> None:
        super().__init__(n_tasks)
        if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        weights = 1.0 / (losses.detach() + self.eps)
        return losses * weights, weights
