"""MGDA and MGDA-UB: the min-norm point of the convex hull of the (normalized) task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018
(arXiv 1810.04650).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale
from smto.solvers.min_norm import min_norm_weights

NORMALIZATIONS: tuple[str, ...] = ("loss+", "loss", "l2", "none")
UPDATES: tuple[str, ...] = ("raw", "normalized")


class MGDA(GramMethod):
    """Multiple-gradient descent: the task weights are the min-norm weights.

    Each task gradient is divided by a normalizer ``n_k`` (Sener & Koltun's
    ``gradient_normalizers``): ``"l2"``: ``||g_k||``; ``"loss"``: ``L_k``; ``"loss+"``:
    ``L_k ||g_k||``; ``"none"``: 1. The weights ``alpha`` (on the simplex) give the min-norm
    point of the convex hull of the normalized gradients ``g_k / n_k``.

    The update (``update``):

    * ``"raw"`` (default; Sener & Koltun's code, and the paper's
      ``sum_k alpha_k grad L_k``): ``sum_k alpha_k g_k``, weights ``alpha`` (``Scale.MEAN``:
      they sum to 1);
    * ``"normalized"`` (the main study's code, which its sweeps use): the min-norm point
      itself, ``sum_k alpha_k g_k / n_k``, weights ``alpha_k / n_k``. The two differ in
      direction and norm (cosine about 0.97, norm about 0.56x on the LeNet at step 1).

    With ``space="features"`` this is MGDA-UB (the gradients of the shared representation;
    the study backpropagates ``sum_k alpha_k L_k``, i.e. ``update="raw"``).

    Heads (``heads``): ``"sum"`` (default; the study's ``standard_head_backward`` and
    PROTOCOL.md) gives them the plain sum of their task gradients; ``"weighted"`` (Sener &
    Koltun's code, which backpropagates ``sum_k alpha_k L_k`` through everything) weights
    them by the reported weights.

    The loss-based normalizations need positive losses; a zero normalizer (a zero gradient
    or a zero loss) is floored at ``1e-12`` times the largest one, so the task's normalized
    gradient is very long (zero gradients stay zero) instead of NaN.

    Args:
        n_tasks: the number of tasks.
        normalization: ``"loss+"`` (default, as in the study), ``"loss"``, ``"l2"`` or
            ``"none"``.
        update: ``"raw"`` or ``"normalized"`` (see above).
        heads: ``"sum"`` or ``"weighted"`` (see above).
        space: ``"params"`` (MGDA, default) or ``"features"`` (MGDA-UB).
    """

    display_name = "MGDA"
    scale = Scale.MEAN

    def __init__(
        self,
        n_tasks: int,
        normalization: str = "loss+",
        update: str = "raw",
        heads: str = "sum",
        space: str | None = None,
    ) -> None:
        super().__init__(n_tasks, space, heads)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
        self.normalization = normalization
        self.update = update

    def normalizers(self, gram: Tensor, losses: Tensor) -> Tensor:
        """The per-task normalizers ``n_k`` (float64, CPU) from the Gram matrix and losses."""
        norms = gram.diagonal().clamp_min(0.0).sqrt()
        if self.normalization == "none":
            return torch.ones_like(norms)
        if self.normalization == "l2":
            n = norms
        else:
            if bool((losses <= 0).any()):
                raise ValueError(
                    f"MGDA normalization {self.normalization!r} divides by the losses, which "
                    f"must be positive, got {losses.tolist()}; use normalization='l2' or 'none'"
                )
            n = losses if self.normalization == "loss" else losses * norms
        largest = n.max()
        if largest <= 0:
            return torch.ones_like(n)
        return n.clamp_min(1e-12 * largest)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        n = self.normalizers(gram, losses)
        alpha, info = min_norm_weights(gram / torch.outer(n, n))
        weights = alpha if self.update == "raw" else alpha / n
        failure = None
        if info["converged"] < 1.0:
            failure = (
                f"the min-norm solver did not converge in {info['solver_iterations']:.0f} "
                "iterations; using its best iterate"
            )
        return GramWeights(weights, {"solver_iterations": info["solver_iterations"]}, failure)
