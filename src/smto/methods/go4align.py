"""GO4Align: group optimization for multi-task alignment (adaptive group risk minimization).

Shen, Wang, Xiao, Van Noord, Worring, "GO4Align: Group Optimization for Multi-Task
Alignment", NeurIPS 2024 (arXiv 2404.06486). The paper was not available here; the update
follows the authors' release (github.com/autumn9999/GO4Align, ``methods/cluster_methods.py``,
class ``GO4ALIGN``, and the ``--robust_step_size`` / ``--num_groups`` defaults of
``experiments/nyuv2/trainer.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from smto.method import LossMethod, Scale


class GO4Align(LossMethod):
    """Weights each task by the mean risk-guided indicator of its group of tasks.

    Per step, with the detached losses ``L``:

    * the risk term ``p <- p * exp(-eta L) / sum_j p_j exp(-eta L_j)`` (from ``p = 1/K``: an
      exponentiated step on every earlier step's losses, the "risk information from previous
      iterations");
    * the indicators ``gamma_k = (sum_j L_j / L_k) p_k`` (the scale balance times the risk
      term);
    * the groups: the ``num_groups`` clusters of a K-means of the K scalars ``gamma`` (the
      "dynamical group assignment"), and each task's weight is its group's mean indicator;
      the objective is ``sum_k w_k L_k`` with ``w`` detached.

    With ``num_groups = 1`` every task gets ``mean(gamma)`` (Unit. Scal. times a step-dependent
    factor); with ``num_groups = K`` each task is its own group and ``w = gamma``.

    Differences from the authors' release: the release's K-means for ``num_groups >= 2`` is
    ``kmeans_pytorch.kmeans`` (its import is commented out there, so only the default
    ``num_groups = 1`` runs as released), Lloyd's iterations from randomly drawn centers, which
    can stop in a local optimum; here the clustering of the K scalars is the exact optimum (a
    dynamic program over the sorted indicators), deterministic and draw-free. The risk term is
    kept in float64 (the release: the losses' dtype).

    Scale (CUSTOM): the weights are the group means of ``gamma``, about ``sum_j L_j / (K L_k)``
    while ``p`` is near uniform. The risk term and the step count are in ``state_dict()``.

    Args:
        n_tasks: the number of tasks.
        num_groups: the number of task groups, 1..K (the release's default 1).
        robust_step_size: ``eta``, the step of the risk term (the release's default 1e-4).
    """

    display_name = "GO4Align"
    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, num_groups: int = 1, robust_step_size: float = 1e-4) -> None:
        super().__init__(n_tasks)
        if isinstance(num_groups, bool) or not isinstance(num_groups, int):
            raise ValueError(f"num_groups must be an integer in 1..{n_tasks}, got {num_groups!r}")
        if not 1 <= num_groups <= n_tasks:
            raise ValueError(
                f"num_groups must be an integer in 1..{n_tasks} (the number of tasks), "
                f"got {num_groups}"
            )
        if not isinstance(robust_step_size, (int, float)) or not (
            math.isfinite(robust_step_size) and robust_step_size >= 0.0
        ):
            raise ValueError(
                f"robust_step_size must be a finite number >= 0, got {robust_step_size!r}"
            )
        self.num_groups = num_groups
        self.robust_step_size = float(robust_step_size)
        self.register_buffer("risk", torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64))
        self.steps = 0

    def indicators(self, losses: Tensor) -> Tensor:
        """Advances the risk term by one step and returns ``gamma`` (float64, detached)."""
        detached = losses.detach().to(device=self.risk.device, dtype=self.risk.dtype)
        risk = self.risk * torch.exp(-self.robust_step_size * detached)
        self.risk.copy_(risk / risk.sum())
        self.steps += 1
        return detached.sum() / detached * self.risk

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        gamma = self.indicators(losses)
        if self.num_groups == 1:
            weights = gamma.mean().expand_as(gamma)
        elif self.num_groups == self.n_tasks:
            weights = gamma
        else:
            weights = group_means(gamma, self.num_groups)
        weights = weights.to(device=losses.device, dtype=losses.dtype)
        return losses * weights, weights

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


def group_means(values: Tensor, n_groups: int) -> Tensor:
    """Each value replaced by the mean of its cluster in the optimal ``n_groups``-means
    clustering of the 1-D ``values`` (least within-cluster squared deviation; optimal clusters
    of scalars are runs of the sorted values, found by dynamic programming). Ties between
    equally good clusterings go to the first split in sorted order."""
    if not 1 <= n_groups <= values.numel():
        raise ValueError(f"n_groups must be in 1..{values.numel()}, got {n_groups}")
    order = torch.argsort(values.detach().cpu(), stable=True)
    xs = values.detach().cpu().to(torch.float64)[order].tolist()
    n = len(xs)
    prefix, squares = [0.0], [0.0]
    for x in xs:
        prefix.append(prefix[-1] + x)
        squares.append(squares[-1] + x * x)

    def cost(i: int, j: int) -> float:  # the run xs[i:j]
        total = prefix[j] - prefix[i]
        return squares[j] - squares[i] - total * total / (j - i)

    best = [[math.inf] * (n + 1) for _ in range(n_groups + 1)]
    split = [[0] * (n + 1) for _ in range(n_groups + 1)]
    best[0][0] = 0.0
    for g in range(1, n_groups + 1):
        for j in range(g, n + 1):
            for i in range(g - 1, j):
                candidate = best[g - 1][i] + cost(i, j)
                if candidate < best[g][j]:
                    best[g][j], split[g][j] = candidate, i
    means = [0.0] * n
    j = n
    for g in range(n_groups, 0, -1):
        i = split[g][j]
        mean = (prefix[j] - prefix[i]) / (j - i)
        means[i:j] = [mean] * (j - i)
        j = i
    result = torch.empty(n, dtype=torch.float64)
    result[order] = torch.tensor(means, dtype=torch.float64)
    return result.to(values.device)
