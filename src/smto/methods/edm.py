"""EDM ("follow the bisector"): the direction making equal angles with all task gradients.

Katrutsa, Merkulov, Tursynbekov, Oseledets, "Follow the bisector: a simple method for
multi-objective optimization", arXiv 2007.06937.
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale
from smto.solvers.min_norm import min_norm_weights


def edm_weights(gram: Tensor) -> tuple[Tensor, Tensor, dict[str, float]]:
    """EDM's weights from the Gram matrix A = G G^T (float64 result, on ``gram``'s device).

    w is the min-norm point of the convex hull of the unit gradients u_i = g_i / |g_i|;
    d = gamma sum_i w_i u_i with gamma = 1 / sum_i (w_i / |g_i|), i.e. d = sum_i c_i g_i with
    c_i = gamma w_i / |g_i|, which sum to 1. For two tasks c = (|g_2|, |g_1|) / (|g_1| + |g_2|).
    A zero gradient counts as the zero vector in the hull: its task then gets all the weight
    (c = e_i, d = 0: a stationary task stops the shared update). Returns (c, |g|, solver info).
    """
    a = gram.to(torch.float64)
    norms = a.diagonal().clamp_min(0.0).sqrt()
    tiny = max(float(norms.max()) * 1e-20, 1e-300)
    safe = norms.clamp_min(tiny)
    w, info = min_norm_weights(a / (safe.unsqueeze(0) * safe.unsqueeze(1)))
    coefficients = w / safe
    return coefficients / coefficients.sum(), norms, info


class EDM(GramMethod):
    """EDM: d = sum_i c_i g_i, the "bisector" of the task gradients (see :func:`edm_weights`).

    Where the min-norm point of the unit gradients lies inside their convex hull, d makes the
    same angle with every task gradient. The min-norm point is solved exactly
    (:func:`smto.solvers.min_norm.min_norm_weights`) where the original runs Frank-Wolfe
    (at most 250 iterations, tolerance 1e-5); a solve that misses its optimality tolerance
    sets ``info["converged"] = 0``, counts ``solver_failures`` and warns
    (:class:`smto.solvers.SolverWarning`).

    Scale (MEAN): the weights c_i = gamma w_i / |g_i| sum to 1 (gamma = 1 / sum w_i / |g_i|);
    d is a weighted mean of the raw gradients, the smaller gradients weighted more.
    """

    display_name = "EDM"
    scale = Scale.MEAN

    def __init__(self, n_tasks: int, space: str | None = None) -> None:
        super().__init__(n_tasks, space)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        coefficients, _, info = edm_weights(gram)
        return GramWeights(
            coefficients, {"solver_iterations": info["solver_iterations"]}, min_norm_failure(info)
        )


def min_norm_failure(info: dict[str, float]) -> str | None:
    """The failure message of a min-norm solve whose ``info`` says it did not converge, else
    None."""
    if info.get("converged", 1.0) >= 1.0:
        return None
    return (
        f"the min-norm solver missed its tolerance after "
        f"{int(info.get('solver_iterations', 0))} iterations; using its best iterate"
    )
