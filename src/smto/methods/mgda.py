"""MGDA and MGDA-UB: the min-norm point of the convex hull of the (normalized) task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018
(arXiv 1810.04650).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from smto.method import Aggregation, GradientMethod, Scale
from smto.solvers import SolverWarning
from smto.solvers.min_norm import min_norm_weights

NORMALIZATIONS: tuple[str, ...] = ("loss+", "loss", "l2", "none")


class MGDA(GradientMethod):
    """Multiple-gradient descent: the task weights are the min-norm weights.

    Each task gradient is divided by a normalizer ``n_k`` (Sener & Koltun's
    ``gradient_normalizers``): ``"l2"``: ``||g_k||``; ``"loss"``: ``L_k``; ``"loss+"``:
    ``L_k ||g_k||``; ``"none"``: 1. The weights ``alpha`` (on the simplex) give the min-norm
    point of the convex hull of the normalized gradients ``g_k / n_k``. As in the original
    code, the update then backpropagates ``sum_k alpha_k L_k``: the direction is
    ``sum_k alpha_k g_k`` (of the unnormalized gradients), the weights are ``alpha``
    (``Scale.MEAN``: they sum to 1), and the heads also get ``sum_k alpha_k grad_k``.

    With ``space="features"`` this is MGDA-UB (the gradients of the shared representation).

    The loss-based normalizations need positive losses; a zero normalizer (a zero gradient
    or a zero loss) is floored at ``1e-12`` times the largest one, so the task's normalized
    gradient is very long (zero gradients stay zero) instead of NaN.

    Args:
        n_tasks: the number of tasks.
        normalization: ``"loss+"`` (default, as in the study), ``"loss"``, ``"l2"`` or
            ``"none"``.
        space: ``"params"`` (MGDA, default) or ``"features"`` (MGDA-UB).
    """

    display_name = "MGDA"
    scale = Scale.MEAN
    head_weighting = "weighted"

    def __init__(
        self, n_tasks: int, normalization: str = "loss+", space: str | None = None
    ) -> None:
        super().__init__(n_tasks, space)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        self.normalization = normalization
        self.solver_failures = 0

    def normalizers(self, gram: Tensor, losses: Tensor) -> Tensor:
        """The per-task normalizers ``n_k`` (float64, CPU) from the Gram matrix and losses."""
        norms = gram.diagonal().clamp_min(0.0).sqrt()
        if self.normalization == "none":
            return torch.ones_like(norms)
        if self.normalization == "l2":
            n = norms
        else:
            if bool((losses <= 0).any()) or not bool(torch.isfinite(losses).all()):
                raise ValueError(
                    f"MGDA normalization {self.normalization!r} divides by the losses, which "
                    f"must be positive and finite, got {losses.tolist()}; use "
                    "normalization='l2' or 'none'"
                )
            n = losses if self.normalization == "loss" else losses * norms
        largest = n.max()
        if largest <= 0:
            return torch.ones_like(n)
        return n.clamp_min(1e-12 * largest)

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        gram = matrix @ matrix.T
        cpu_gram = gram.to(device="cpu", dtype=torch.float64)
        cpu_losses = losses.to(device="cpu", dtype=torch.float64)
        n = self.normalizers(cpu_gram, cpu_losses)
        alpha, info = min_norm_weights(cpu_gram / torch.outer(n, n))
        if info["converged"] < 1.0:
            self.solver_failures += 1
            warnings.warn(
                f"MGDA: the min-norm solver did not converge in {info['solver_iterations']:.0f} "
                "iterations; using its best iterate",
                SolverWarning,
                stacklevel=2,
            )
        weights = alpha.to(device=matrix.device, dtype=matrix.dtype)
        return Aggregation(weights @ matrix, weights, info)

    def get_extra_state(self) -> dict[str, Any]:
        return {"solver_failures": self.solver_failures}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.solver_failures = int(state["solver_failures"])
