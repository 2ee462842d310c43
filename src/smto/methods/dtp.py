"""DTP: dynamic task prioritization, a focal-loss weight per task from a smoothed KPI.

Guo, Haque, Huang, Yeung, Fei-Fei, "Dynamic Task Prioritization for Multitask Learning",
ECCV 2018, Section 3 (task-level prioritization). Neither LibMTL nor torchjd implements it;
the authors released no code.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from smto.capabilities import TaskKPIs
from smto.method import LossMethod, Scale

KPIS: tuple[str, ...] = ("loss", "given")
"""Where the KPIs come from: ``exp(-L_k)`` of each batch, or :meth:`DTP.observe_kpis`."""

KPI_FLOOR = 1e-8
"""KPIs are clipped to [1e-8, 1] before the log (a KPI of 0 would give an infinite weight)."""


class DTP(LossMethod, TaskKPIs):
    """Weights task k by the focal loss of its smoothed KPI: ``w_k = -(1 - kbar_k)^gamma
    log(kbar_k)``, so a task that performs worse (lower KPI) gets more weight, and a mastered
    task (KPI 1) none; the objective is ``sum_k w_k L_k`` with ``w`` detached.

    The KPI ``kappa_k`` of a step is smoothed as in the paper, ``kbar <- alpha kappa +
    (1 - alpha) kbar``, starting from the first KPI seen.

    The paper's KPIs are task metrics in [0, 1] (accuracy, average precision, PCK), which the
    loss-only ``backward(losses, ...)`` does not carry. Two sources:

    * ``kpi="loss"`` (default): ``kappa_k = exp(-L_k)`` of the batch, a KPI that every loop
      serves. For a cross-entropy loss it is the geometric mean of the probability the model
      gives the true class (the likelihood per example), a soft accuracy; for a squared error
      it is a Gaussian likelihood's kernel. This is smto's proxy, not the paper's KPI.
    * ``kpi="given"``: the loop measures the paper's KPIs and calls :meth:`observe_kpis`
      (the :class:`smto.capabilities.TaskKPIs` capability) before each ``backward``; a
      ``backward`` without an observed KPI raises. smto's engine does not serve it (its
      problems' metrics are per split, not per batch, and not all in [0, 1]).

    Scale (CUSTOM): the weights are the focal values, each in [0, inf) (about 0.1 to 1 for
    KPIs between 0.4 and 0.9 at gamma = 1). The paper also prioritizes examples within a task
    (a focal loss on each example); that changes the task's loss, not its weight, and is left
    to the problem. The paper's values of gamma and alpha were not available here: the
    defaults are the focal loss's plain form (gamma = 1) and a light smoothing (alpha = 0.1).

    Args:
        n_tasks: the number of tasks.
        gamma: the focusing parameter (>= 0; 0 gives ``-log(kbar)``).
        alpha: the weight of the newest KPI in the moving average, in (0, 1].
        kpi: ``"loss"`` or ``"given"`` (see above).
    """

    display_name = "DTP"
    scale = Scale.CUSTOM

    def __init__(
        self, n_tasks: int, gamma: float = 1.0, alpha: float = 0.1, kpi: str = "loss"
    ) -> None:
        super().__init__(n_tasks)
        if not isinstance(gamma, (int, float)) or not (math.isfinite(gamma) and gamma >= 0.0):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        if not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be a number in (0, 1], got {alpha!r}")
        if kpi not in KPIS:
            raise ValueError(f"kpi must be one of {KPIS}, got {kpi!r}")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.kpi = kpi
        self.smoothed: Tensor | None = None
        self._observed = False

    def observe_kpis(self, kpis: Tensor) -> None:
        """Smooths in the (K,) KPIs of the latest batch (``kpi="given"`` only)."""
        if self.kpi != "given":
            raise ValueError('DTP.observe_kpis needs kpi="given" (the default "loss" uses exp(-L))')
        values = torch.as_tensor(kpis).detach().to(torch.float64).flatten()
        if values.shape != (self.n_tasks,) or not bool(torch.isfinite(values).all()):
            raise ValueError(f"DTP needs {self.n_tasks} finite KPIs, got {kpis!r}")
        if bool(((values < 0) | (values > 1)).any()):
            raise ValueError(f"DTP's KPIs must be in [0, 1] (higher is better), got {kpis!r}")
        self._smooth(values)
        self._observed = True

    def _smooth(self, kpis: Tensor) -> None:
        clipped = kpis.clamp(KPI_FLOOR, 1.0)
        previous = self.smoothed
        if previous is None:
            self.smoothed = clipped
        else:
            previous = previous.to(clipped)
            self.smoothed = self.alpha * clipped + (1.0 - self.alpha) * previous

    def focal_weights(self) -> Tensor:
        """``-(1 - kbar)^gamma log(kbar)`` of the smoothed KPIs (float64)."""
        if self.smoothed is None:
            raise RuntimeError("DTP has no KPI yet")
        kbar = self.smoothed
        return -((1.0 - kbar) ** self.gamma) * torch.log(kbar)

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        if self.kpi == "loss":
            self._smooth(torch.exp(-losses.detach().to(torch.float64)))
        elif not self._observed:
            raise RuntimeError(
                'DTP(kpi="given") needs method.observe_kpis(kpis) with the batch\'s per-task '
                'KPIs before each backward (or use the default kpi="loss")'
            )
        self._observed = False
        weights = self.focal_weights().to(device=losses.device, dtype=losses.dtype)
        return losses * weights, weights

    def get_extra_state(self) -> dict[str, Any]:
        return {"smoothed": None if self.smoothed is None else self.smoothed.clone()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        smoothed = state["smoothed"]
        self.smoothed = None if smoothed is None else smoothed.clone()
