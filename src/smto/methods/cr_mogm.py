"""CR-MOGM: a gradient-manipulation method's weights smoothed by a moving average.

Zhou, Zhang, Jiang, Zhong, Gu, Zhu, "On the Convergence of Stochastic Multi-Objective
Gradient Manipulation and Beyond", NeurIPS 2022 (correlation-reduced MOGM, Algorithm 2).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale
from smto.methods.cagrad import CAGrad
from smto.methods.dualproj import DualProj
from smto.methods.mgda import MGDA
from smto.methods.pcgrad import PCGrad
from smto.methods.upgrad import UPGrad

BASES: tuple[str, ...] = ("mgda", "cagrad", "pcgrad", "upgrad", "dualproj")
"""The Gram methods whose weights CR-MOGM can smooth (each with its defaults; MGDA without
a normalization, the paper's MGDA)."""


def _base(name: str, n_tasks: int, space: str | None) -> GramMethod:
    if name == "mgda":
        return MGDA(n_tasks, normalization="none", space=space)
    classes: dict[str, type[GramMethod]] = {
        "cagrad": CAGrad,
        "pcgrad": PCGrad,
        "upgrad": UPGrad,
        "dualproj": DualProj,
    }
    return classes[name](n_tasks, space=space)


class CRMOGM(GramMethod):
    """Correlation-reduced MOGM: the weights ``lambda_hat_t`` of a base method (MGDA by
    default) are replaced by ``lambda_t = alpha lambda_{t-1} + (1 - alpha) lambda_hat_t``,
    ``lambda_1 = lambda_hat_1``, and the update is ``G^T lambda_t``. The paper shows that the
    raw stochastic weights are correlated with the stochastic gradients, which biases the
    update, and that the average reduces that correlation.

    ``alpha`` is fixed (torchjd's ``CRMOGMWeighting``, whose default 0.9 this is); the
    paper's Corollary 1 lets it grow towards 1 as the learning rate decays: set
    ``method.alpha`` between steps for such a schedule. The smoothed weights and the base's
    own state are in ``state_dict()``; a base's solver failure is reported as this method's.

    Scale (CUSTOM): the base's. With MGDA (default) the weights are on the simplex and sum
    to 1, as with any base of Scale MEAN (an average of points of the simplex).

    Args:
        n_tasks: the number of tasks.
        base: the method whose weights are smoothed, one of :data:`BASES`.
        alpha: the weight of the previous weights, in [0, 1] (0.9; 0 is the base itself).
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "CR-MOGM"
    scale = Scale.CUSTOM

    def __init__(
        self, n_tasks: int, base: str = "mgda", alpha: float = 0.9, space: str | None = None
    ) -> None:
        super().__init__(n_tasks, space)
        if base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {base!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.base = base
        self.alpha = float(alpha)
        self.inner = _base(base, n_tasks, space)
        self.smoothed: Tensor | None = None

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        result = self.inner.weigh(gram, losses, dtype_eps)
        current = result.weights.to(torch.float64)
        if self.smoothed is None:
            self.smoothed = current.clone()
        else:
            self.smoothed = self.alpha * self.smoothed + (1.0 - self.alpha) * current
        return GramWeights(self.smoothed.clone(), result.info, result.failure)

    def get_extra_state(self) -> dict[str, Any]:
        smoothed = None if self.smoothed is None else self.smoothed.clone()
        return {**super().get_extra_state(), "smoothed": smoothed}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        smoothed = state["smoothed"]
        self.smoothed = None if smoothed is None else smoothed.to(torch.float64).clone()
