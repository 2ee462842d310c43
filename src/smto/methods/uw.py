"""Uncertainty weighting: task weights from learned homoscedastic uncertainties.

Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
Geometry and Semantics", CVPR 2018 (arXiv 1705.07115).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from smto.method import LossMethod, RunContext, Scale

LOSS_TYPES: dict[str, tuple[float, float]] = {
    "classification": (2.0, 1.0),
    "segmentation": (2.0, 1.0),
    "l1": (1.0, 1.0),
    "cosine": (1.0, 1.0),
    "mse": (2.0, 2.0),
}
"""(p, f) per loss type: the term of a task is eta + L exp(-p eta) / f, with eta = log sigma.
Kendall et al. give no rule for the cosine loss of surface normals (1 - cos, a distance on
the sphere); it takes the Laplace form of L1."""


class UW(LossMethod):
    """Minimizes sum_k eta_k + L_k exp(-p_k eta_k) / f_k, with eta learned (init 0).

    eta_k = log sigma_k is an ``nn.Parameter``: give ``method.parameters()`` to the optimizer.
    The likelihood of each task sets (p_k, f_k) through ``loss_types``: "classification" and
    "segmentation" (p=2, f=1: L/sigma^2 + log sigma), "l1" (Laplace, p=1, f=1:
    L/sigma + log sigma), "mse" (Gaussian, p=2, f=2: L/(2 sigma^2) + log sigma).
    ``None`` treats every task as classification.

    Scale (CUSTOM): weight exp(-p_k eta_k) / f_k, which starts at 1/f_k (sum K for
    classification tasks) and follows the learned uncertainties.
    """

    display_name = "UW"
    scale = Scale.CUSTOM

    @classmethod
    def defaults_from(cls, context: RunContext) -> dict[str, Any]:
        """The tasks' loss types: the run's problem's."""
        return {} if context.loss_types is None else {"loss_types": tuple(context.loss_types)}

    def __init__(self, n_tasks: int, loss_types: tuple[str, ...] | None = None) -> None:
        super().__init__(n_tasks)
        if loss_types is None:
            types = ("classification",) * n_tasks
        elif isinstance(loss_types, str) or not isinstance(loss_types, (tuple, list)):
            raise ValueError(
                f"loss_types must be a tuple of {n_tasks} loss types or None, got {loss_types!r}"
            )
        else:
            types = tuple(loss_types)
        if len(types) != n_tasks:
            raise ValueError(
                f"loss_types must have {n_tasks} entries (one per task), got {len(types)}: "
                f"{types!r}"
            )
        unknown = [t for t in types if t not in LOSS_TYPES]
        if unknown:
            raise ValueError(
                f"loss_types has unknown value(s) {unknown!r}; valid: {sorted(LOSS_TYPES)}"
            )
        self.loss_types = types
        self.eta = nn.Parameter(torch.zeros(n_tasks))
        self.register_buffer(
            "_p", torch.tensor([LOSS_TYPES[t][0] for t in types]), persistent=False
        )
        self.register_buffer(
            "_f", torch.tensor([LOSS_TYPES[t][1] for t in types]), persistent=False
        )

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        eta = self.eta.to(losses.dtype)
        scale = torch.exp(-self._p.to(losses.dtype) * eta) / self._f.to(losses.dtype)
        return eta + losses * scale, scale.detach()
