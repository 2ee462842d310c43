"""PCGrad: projecting conflicting gradients.

Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning",
NeurIPS 2020 (arXiv 2001.06782).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale


def pcgrad_weights(gram: Tensor, orders: Tensor) -> Tensor:
    """PCGrad's coefficient matrix C (K x K) from the Gram matrix and the visiting orders.

    Row i of C gives the projected gradient of task i as ``C[i] @ G``: starting from
    ``g_i``, for each task j in ``orders[i]`` (a permutation of 0..K-1; i itself is skipped),
    if the current projected gradient conflicts with the ORIGINAL ``g_j``
    (``<g_i^PC, g_j> < 0``), it is projected onto the normal plane of ``g_j``:
    ``g_i^PC -= <g_i^PC, g_j> / |g_j|^2 g_j``. Inner products come from the Gram matrix, so no
    vector of length N is touched. ``gram`` and ``orders`` are on the CPU.
    """
    k = gram.shape[0]
    a = gram.to(torch.float64).numpy()
    coefficients = torch.eye(k, dtype=torch.float64)
    c = coefficients.numpy()
    for i in range(k):
        row = c[i]
        for j in orders[i].tolist():
            if j == i:
                continue
            inner = float(row @ a[:, j])
            if inner < 0.0:
                row[j] -= inner / a[j, j]
    return coefficients


class PCGrad(GramMethod):
    """Projects each task gradient off the other tasks' gradients it conflicts with.

    For each task i, in a random order of the other tasks (a fresh ``torch.randperm`` per
    task, from torch's global CPU RNG, as torchjd and the original's
    per-task shuffle), ``g_i`` is projected off each ORIGINAL ``g_j`` it conflicts with at
    that moment; the update is the sum of the projected gradients (``Scale.SUM``: without
    conflicts it is the plain sum, weights 1 each).

    Every projected gradient is a linear combination of the original ones, so the method
    tracks the K x K coefficients on the Gram matrix and reports the exact effective weights
    ``w = sum_i C[i]``: the direction is ``w @ G``.

    Args:
        n_tasks: the number of tasks.
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "PCGrad"
    scale = Scale.SUM

    def __init__(self, n_tasks: int, space: str | None = None) -> None:
        super().__init__(n_tasks, space)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        k = gram.shape[0]
        orders = torch.stack([torch.randperm(k) for _ in range(k)])
        return GramWeights(pcgrad_weights(gram, orders).sum(dim=0))
