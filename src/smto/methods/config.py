"""ConFIG: the conflict-free direction of equal cosine to every task gradient.

Liu, Chu, Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
Networks", ICLR 2025 (arXiv 2408.11104), Equation 2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale


def config_weights(gram: Tensor, dtype_eps: float) -> tuple[Tensor, int]:
    """ConFIG's weights on the Gram matrix A = G G^T (float64 on the CPU), and the rank used.

    With U the unit gradients (zero rows stay zero), the paper's direction is
    ``g_u = normalize(U^+ 1)`` and the update ``(sum_k g_k . g_u) g_u``. Since
    ``U^+ = U^T (U U^T)^+`` and ``U U^T = D^-1 A D^-1`` (D the gradient norms) is the cosine
    matrix C, ``U^+ 1 = G^T c`` with ``c = D^-1 C^+ 1``, and the update is
    ``((1^T A c) / (c^T A c)) G^T c``. C's pseudo-inverse keeps the eigenvalues above
    ``10 K dtype_eps`` times the largest (the Gram matrix's rounding); where the projection of
    1 onto the kept eigenvectors is at that rounding too (the unit gradients sum to zero, e.g.
    two opposite gradients), ``U^+ 1 = 0`` and the update is zero.
    """
    k = gram.shape[0]
    a = 0.5 * (gram + gram.T)
    norms = a.diagonal().clamp_min(0.0).sqrt()
    live = norms > 0.0
    weights = torch.zeros(k, dtype=torch.float64)
    if not bool(live.any()):
        return weights, 0
    n = norms[live]
    cosine = a[live][:, live] / (n[:, None] * n[None, :])
    lam, vec = torch.linalg.eigh(cosine)
    rounding = 10.0 * k * dtype_eps
    keep = lam > float(lam.max()) * rounding
    lam, vec = lam[keep], vec[:, keep]
    projection = vec.T @ torch.ones(int(live.sum()), dtype=torch.float64)
    if float(projection.norm()) <= math.sqrt(k) * rounding:
        return weights, int(keep.sum())
    weights[live] = (vec @ (projection / lam)) / n
    length = float(weights @ a.sum(dim=0))  # sum_k g_k . G^T c
    square = float(weights @ a @ weights)  # |G^T c|^2
    if not square > 0.0:
        return torch.zeros(k, dtype=torch.float64), int(keep.sum())
    return weights * (length / square), int(keep.sum())


class ConFIG(GramMethod):
    """ConFIG (conflict-free inverse gradients): the update has the same cosine with every
    task gradient, and its length is the sum of the gradients' projections on it.

    ``g_u = normalize(U^+ 1)`` solves ``u_k . g_u = const`` for the unit gradients u_k (the
    paper's Equation 2, with equal weights); for linearly independent gradients that constant
    is positive, so the update conflicts with no task (positive inner product with every
    gradient). The update ``(sum_k g_k . g_u) g_u`` is computed exactly on the Gram matrix
    (:func:`config_weights`), as torchjd's ``ConFIG`` computes it with a pseudo-inverse of the
    K x N unit matrix. The two agree on full-rank gradients; they differ only in the rank
    decision of nearly dependent ones (torchjd's cut is ``max(K, N) eps`` on the singular
    values of U, smto's ``10 K eps`` on the eigenvalues of U U^T, which the Gram matrix
    resolves), where the direction is ill-conditioned anyway, and where the unit gradients
    sum to zero (two opposite gradients), which gives a zero update here and rounding noise
    in torchjd. The paper's momentum variant (M-ConFIG) and the official code's other weight
    and length models are not included.

    Scale (CUSTOM): K identical gradients g give K g (the sum); otherwise the weights sum to
    neither 1 nor K. They do not change under a global rescaling of the gradients. There are
    no hyperparameters.

    Args:
        n_tasks: the number of tasks.
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "ConFIG"
    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, space: str | None = None) -> None:
        super().__init__(n_tasks, space)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        weights, rank = config_weights(gram, dtype_eps)
        return GramWeights(weights, {"rank": float(rank)})
