"""TrimmedMean: the coordinate-wise trimmed mean of the task gradients.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018 (arXiv 1803.01498).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import Aggregation, GradientMethod, Scale


class TrimmedMean(GradientMethod):
    """In each coordinate, the ``t = trim_number`` largest and ``t`` smallest of the K task
    gradients' entries are removed and the remaining ``K - 2t`` averaged (the paper's
    beta-trimmed mean with ``beta = t / K``; torchjd's ``TrimmedMean(trim_number)``). With
    ``K < 2t + 1`` (torchjd raises) ``t`` is lowered to ``(K - 1) // 2``: the coordinate-wise
    median for ``K = 3``, the mean for two tasks.

    The update is not a combination of the gradients with one weight per task (each
    coordinate keeps other tasks). The reported weight of task k is its mean weight over the
    coordinates: the fraction of coordinates where its entry is kept, divided by ``K - 2t``
    (Scale MEAN: they sum to 1; without trimming they are 1/K). It is not a Gram method.

    Args:
        n_tasks: the number of tasks.
        trim_number: ``t``, the entries removed at each end of each coordinate (default 1).
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "TrimmedMean"
    scale = Scale.MEAN

    def __init__(self, n_tasks: int, trim_number: int = 1, space: str | None = None) -> None:
        super().__init__(n_tasks, space)
        if not isinstance(trim_number, int) or isinstance(trim_number, bool) or trim_number < 0:
            raise ValueError(f"trim_number must be an integer >= 0, got {trim_number!r}")
        self.trim_number = trim_number

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        self._check_rows(matrix)
        k, n = matrix.shape
        t = min(self.trim_number, (k - 1) // 2)
        values, indices = torch.sort(matrix, dim=0)
        direction = values[t : k - t].mean(dim=0)
        kept = torch.bincount(indices[t : k - t].reshape(-1), minlength=k)
        weights = kept.to(matrix.dtype) / (n * (k - 2 * t))
        return Aggregation(direction, weights, {"trimmed": float(t)})
