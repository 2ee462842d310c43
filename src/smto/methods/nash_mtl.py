"""Nash-MTL: the task gradients' Nash bargaining solution, clipped.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, "Multi-Task Learning as a
Bargaining Game", ICML 2022, arXiv 2202.01017.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale
from smto.solvers.nash import solve_nash


class NashMTL(GramMethod):
    """Nash-MTL: d = sum_i alpha_i g_i with ``G G^T alpha = 1/alpha`` (alpha > 0), clipped.

    The bargaining solution gives every task the same "utility" ``alpha_i g_i^T d = 1``
    (:func:`smto.solvers.nash.solve_nash`: exact damped-Newton solve in float64, where the
    original runs 20 iterations of a cvxpy/ECOS sequential convex approximation). Then, as the
    original does with ``clip_grad_norm_`` on the shared parameters, the direction is scaled
    by ``min(1, max_norm / (||d|| + 1e-6))`` (``max_norm`` 0 or None: no clipping).

    Weights are recomputed every ``update_weights_every`` steps (steps 0, n, 2n, ...); the
    steps in between reuse the last alpha on their own gradients (clipped again). Where the
    solve fails (``info["converged"] = 0``: no solution, as with a zero gradient or a
    non-negative combination of the gradients that vanishes, or one rounding cannot reach),
    the previous alpha is kept, as in the original (all ones before the first success),
    ``solver_failures`` counts it and a :class:`smto.solvers.SolverWarning` is issued.
    Successful solves are warm-started from the previous alpha.

    Scale (CUSTOM): the reported weights are the effective ones, ``alpha_i`` times the clip
    factor (``direction == weights @ G``). Unclipped, ``||d||^2 = alpha^T G G^T alpha = K``:
    the update has norm sqrt(K) whatever the gradients' scale, and ``alpha_i`` scales as
    ``1 / ||g_i||``. With the default ``max_norm = 1`` and K >= 2 the clip is always active:
    the shared update has norm 1 (a normalized-gradient step).

    Heads (``heads``): ``"sum"`` (default, PROTOCOL.md) gives them the plain sum of their
    task gradients; ``"weighted"`` (the main study's and Navon et al.'s code, which
    backpropagate ``sum_i alpha_i L_i`` and clip only the shared parameters) gives them
    ``sum_i alpha_i grad L_i`` with the unclipped alpha.

    ``info``: ``converged``, ``solver_iterations``, ``residual``
    (``max_i |alpha_i (G G^T alpha)_i - 1|``), ``weights_updated`` (1 on solving steps; the
    other steps report converged 1, 0 iterations and the residual of the last solve).
    """

    display_name = "Nash-MTL"
    scale = Scale.CUSTOM

    def __init__(
        self,
        n_tasks: int,
        max_norm: float | None = 1.0,
        update_weights_every: int = 1,
        max_iter: int = 100,
        tol: float = 1e-6,
        heads: str = "sum",
        space: str | None = None,
    ) -> None:
        super().__init__(n_tasks, space, heads)
        if max_norm is not None and (
            isinstance(max_norm, bool)
            or not isinstance(max_norm, (int, float))
            or math.isnan(max_norm)
            or max_norm < 0
        ):
            raise ValueError(
                f"max_norm must be a non-negative number (0 or None: no clipping), got {max_norm!r}"
            )
        if (
            not isinstance(update_weights_every, int)
            or isinstance(update_weights_every, bool)
            or update_weights_every < 1
        ):
            raise ValueError(
                f"update_weights_every must be a positive integer, got {update_weights_every!r}"
            )
        if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 < tol < 1.0:
            raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
        self.max_norm = max_norm
        self.update_weights_every = update_weights_every
        self.max_iter = max_iter
        self.tol = tol
        self.register_buffer("alpha", torch.ones(n_tasks, dtype=torch.float64))
        self.steps = 0
        self._last_residual = math.nan

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        solving = self.steps % self.update_weights_every == 0
        info = {
            "solver_iterations": 0.0,
            "residual": self._last_residual,
            "weights_updated": float(solving),
        }
        failure = None
        if solving:
            init = self.alpha if self.steps > 0 else None
            alpha, solved = solve_nash(gram, tol=self.tol, max_iter=self.max_iter, init=init)
            info["solver_iterations"] = solved["solver_iterations"]
            info["residual"] = solved["residual"]
            if solved["converged"] == 1.0:
                self.alpha.copy_(torch.from_numpy(alpha))
                self._last_residual = solved["residual"]
            else:
                failure = (
                    f"no solution of G G^T alpha = 1/alpha found (residual "
                    f"{solved['residual']:.3g} after {int(solved['solver_iterations'])} Newton "
                    "steps: a zero gradient or conflicting gradients?); keeping the previous "
                    "weights"
                )
        self.steps += 1
        alpha = self.alpha.detach().cpu().clone()
        weights = alpha
        if self.max_norm:
            # clamped: on a nearly rank-one Gram, rounding can make the quadratic form < 0
            norm = max(float(alpha @ gram @ alpha), 0.0) ** 0.5
            weights = alpha * min(1.0, self.max_norm / (norm + 1e-6))
        return GramWeights(weights, info, failure, head_weights=alpha)

    def get_extra_state(self) -> dict[str, Any]:
        return {
            **super().get_extra_state(),
            "steps": self.steps,
            "last_residual": self._last_residual,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.steps = int(state["steps"])
        self._last_residual = float(state["last_residual"])
