"""DualProj: the mean task gradient, projected onto the dual cone of the task gradients.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232 (2024),
Appendix (the aggregator of Lopez-Paz & Ranzato's GEM, NeurIPS 2017, Equation 11).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale
from smto.solvers.dual_cone import dual_cone_weights


class DualProj(GramMethod):
    """The projection ``pi(mean_k g_k)`` of the mean gradient onto the dual cone
    ``{x : G x >= 0}`` of the task gradients.

    The projection is ``G^T v`` with ``v`` the solution of ``min v^T A v`` subject to
    ``v >= 1/K`` (A = G G^T; Proposition 1 of the paper), solved exactly in float64 by
    :func:`smto.solvers.dual_cone.dual_cone_weights`; the weights are ``v``. The update has a
    non-negative inner product with every task gradient, and is the mean gradient itself when
    that conflicts with no task gradient.

    Scale (CUSTOM): the projection of the mean, as in the paper and torchjd's ``DualProj``
    (default preferences 1/K). Every weight is at least 1/K: they sum to 1 when the mean
    conflicts with no gradient, to more otherwise. The weights do not change under a global
    rescaling of the gradients. torchjd's quadprog projector solves on the trace-normalized
    Gram matrix plus 1e-4 I; smto solves the unregularized problem (see :class:`UPGrad
    <smto.methods.upgrad.UPGrad>`). There are no hyperparameters.

    Args:
        n_tasks: the number of tasks.
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "DualProj"
    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, space: str | None = None) -> None:
        super().__init__(n_tasks, space)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        k = gram.shape[0]
        v, info = dual_cone_weights(gram, torch.full((1, k), 1.0 / k, dtype=gram.dtype))
        failure = None
        if info["converged"] < 1.0:
            failure = "the dual-cone projection did not meet its optimality conditions"
        return GramWeights(v[0], {"solver_iterations": info["solver_iterations"]}, failure)
