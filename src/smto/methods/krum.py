"""Krum and Multi-Krum: the task gradient(s) closest to their neighbours.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS 2017 (arXiv 1703.02757).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale

DISTANCES: tuple[str, ...] = ("squared", "euclidean")


class Krum(GramMethod):
    """Krum: with ``f = n_byzantine``, each gradient's score is the sum of its distances to
    its ``K - f - 2`` nearest other gradients; the update is the gradient of smallest score
    (Multi-Krum, ``n_selected = m``: the mean of the m of smallest scores). The distances come
    from the Gram matrix, ``|g_i - g_j|^2 = A_ii + A_jj - 2 A_ij``.

    ``distance``: ``"squared"`` (default) sums squared distances, as the paper's score does;
    ``"euclidean"`` sums distances, as torchjd's ``Krum``. Where ``K < f + 3`` (torchjd
    raises; the paper asks for ``K > 2 f + 2``) every score is an empty sum, and the update is
    the mean of all gradients: at the default ``f = 0`` Krum selects from ``K = 3`` on, and is
    Unit. Scal. for two tasks. Scores equal within the rounding of the Gram matrix share the
    last selected places equally: with one neighbour (``K = f + 3``) the two mutually nearest
    gradients always tie and the update is their mean (torchjd picks one of them).

    Scale (MEAN): the weights are ``1/m`` on the selected tasks (tied ones share), 1/K each
    in the mean case.
    They do not change under a global rescaling of the gradients.

    Args:
        n_tasks: the number of tasks.
        n_byzantine: ``f``, the number of gradients that may be adversarial (default 0).
        n_selected: ``m``, the number of gradients averaged (default 1: Krum).
        distance: ``"squared"`` or ``"euclidean"`` (see above).
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "Krum"
    scale = Scale.MEAN

    def __init__(
        self,
        n_tasks: int,
        n_byzantine: int = 0,
        n_selected: int = 1,
        distance: str = "squared",
        space: str | None = None,
    ) -> None:
        super().__init__(n_tasks, space)
        if not isinstance(n_byzantine, int) or isinstance(n_byzantine, bool) or n_byzantine < 0:
            raise ValueError(f"n_byzantine must be an integer >= 0, got {n_byzantine!r}")
        if (
            not isinstance(n_selected, int)
            or isinstance(n_selected, bool)
            or not 1 <= n_selected <= n_tasks
        ):
            raise ValueError(
                f"n_selected must be an integer in [1, n_tasks = {n_tasks}], got {n_selected!r}"
            )
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        self.n_byzantine = n_byzantine
        self.n_selected = n_selected
        self.distance = distance

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        k = gram.shape[0]
        neighbours = k - self.n_byzantine - 2
        if neighbours < 1:
            return GramWeights(torch.full((k,), 1.0 / k, dtype=gram.dtype))
        norms = gram.diagonal()
        squared = (norms[:, None] + norms[None, :] - 2.0 * gram).clamp_min(0.0)
        squared.fill_diagonal_(torch.inf)  # a gradient is not its own neighbour
        nearest = torch.topk(squared, neighbours, dim=1, largest=False).values
        # One squared distance from the Gram matrix is exact to about 8 K eps max |g|^2.
        rounding = 8.0 * k * dtype_eps * float(norms.max())
        if self.distance == "squared":
            scores, tol = nearest.sum(dim=1), neighbours * rounding
        else:
            scores, tol = nearest.sqrt().sum(dim=1), neighbours * rounding**0.5
        bound = torch.sort(scores).values[self.n_selected - 1]
        inside = scores < bound - tol
        tied = ~inside & (scores <= bound + tol)
        weights = inside.to(gram.dtype) / self.n_selected
        share = (self.n_selected - int(inside.sum())) / (self.n_selected * int(tied.sum()))
        weights[tied] = share
        return GramWeights(weights)
