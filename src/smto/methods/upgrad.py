"""UPGrad: the mean of the task gradients, each projected onto the dual cone of all of them.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232 (2024),
Section 3.
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale
from smto.solvers.dual_cone import dual_cone_weights


class UPGrad(GramMethod):
    """Unconflicting projection of gradients: ``(1/K) sum_k pi(g_k)``, with ``pi`` the
    projection onto the dual cone ``{x : G x >= 0}`` of the task gradients.

    Each projection is ``G^T v_k`` with ``v_k`` the solution of ``min v^T A v`` subject to
    ``v >= e_k / K`` (A = G G^T; the paper's Proposition 1), solved exactly in float64 by
    :func:`smto.solvers.dual_cone.dual_cone_weights`; the weights are ``sum_k v_k``. The
    update has a non-negative inner product with every task gradient (non-conflicting), and is
    the mean gradient when no two gradients conflict.

    Scale (CUSTOM): the mean of the projections, as in the paper and torchjd's ``UPGrad``
    (default preferences 1/K). Every weight is at least 1/K, so they sum to 1 without
    conflict and to more than 1 with it. The weights do not change under a global rescaling
    of the gradients. torchjd's quadprog projector solves on the trace-normalized Gram matrix
    plus 1e-4 I; smto solves the unregularized problem (the two agree to about 1e-4
    relative, and exactly with torchjd's ``reg_eps=0`` on full-rank gradients).
    There are no hyperparameters.

    Args:
        n_tasks: the number of tasks.
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "UPGrad"
    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, space: str | None = None) -> None:
        super().__init__(n_tasks, space)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        k = gram.shape[0]
        targets = torch.eye(k, dtype=gram.dtype) / k
        v, info = dual_cone_weights(gram, targets)
        failure = None
        if info["converged"] < 1.0:
            failure = "the dual-cone projection did not meet its optimality conditions"
        return GramWeights(v.sum(dim=0), {"solver_iterations": info["solver_iterations"]}, failure)
