"""Dynamic Weight Average (DWA): task weights from the rate of change of epoch losses.

Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019
(arXiv 1803.10704), eq. 7.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from smto.capabilities import EpochEnd
from smto.method import LossMethod, Scale


class DWA(LossMethod, EpochEnd):
    """Minimizes sum_k w_k L_k with w_k = K exp(r_k / T) / sum_j exp(r_j / T).

    r_k = Lbar_k(t-1) / Lbar_k(t-2) is the ratio of the task's mean training loss over the
    last two epochs; w = 1 during the first two epochs. ``temperature`` T > 0 smooths the
    weights (large T: closer to uniform).

    Every call to :meth:`terms` (hence :meth:`backward`) adds the detached losses to the
    running epoch sums; :meth:`end_epoch`, which a trainer calls at the end of each training
    epoch, appends the epoch mean (the mean of the batch losses, as in the original) to the
    history. History and running sums are in ``state_dict()``.

    Scale (SUM): the weights sum to K.
    """

    display_name = "DWA"
    scale = Scale.SUM

    def __init__(self, n_tasks: int, temperature: float = 2.0) -> None:
        super().__init__(n_tasks)
        if (
            not isinstance(temperature, (int, float))
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.history: list[Tensor] = []
        self._loss_sum: Tensor | None = None
        self._n_batches = 0

    def current_weights(self, like: Tensor) -> Tensor:
        """The weights of the current epoch, on ``like``'s device and in its dtype."""
        if len(self.history) < 2:
            return torch.ones(self.n_tasks, device=like.device, dtype=like.dtype)
        ratio = self.history[-1].to(like.device) / self.history[-2].to(like.device)
        weights = self.n_tasks * torch.softmax(ratio / self.temperature, dim=0)
        return weights.to(like.dtype)

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        detached = losses.detach()
        batch = detached.to(torch.float64)
        if self._loss_sum is None:
            self._loss_sum = batch
        else:
            self._loss_sum = self._loss_sum.to(batch.device) + batch
        self._n_batches += 1
        weights = self.current_weights(detached)
        return losses * weights, weights

    def end_epoch(self) -> None:
        """Appends this epoch's mean losses to the history and resets the running sums."""
        if self._loss_sum is None:
            warnings.warn(
                "DWA.end_epoch() was called but no losses were seen this epoch; "
                "the epoch is not recorded",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self.history.append(self._loss_sum / self._n_batches)
        self._loss_sum = None
        self._n_batches = 0

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "history": [h.clone() for h in self.history],
            "loss_sum": None if self._loss_sum is None else self._loss_sum.clone(),
            "n_batches": self._n_batches,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.history = [h.clone() for h in state["history"]]
        loss_sum = state["loss_sum"]
        self._loss_sum = None if loss_sum is None else loss_sum.clone()
        self._n_batches = int(state["n_batches"])
