"""Aligned-MTL: align the principal components of the task gradients to a stable system.

Senushkin, Patakin, Kuznetsov, Konushin, "Independent Component Alignment for Multi-Task
Learning", CVPR 2023 (arXiv 2305.19000), Algorithm 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale

SCALE_MODES: tuple[str, ...] = ("min", "median", "rmse")


def balance_transformation(
    gram: Tensor, scale_mode: str = "min", dtype_eps: float | None = None
) -> tuple[Tensor, int]:
    """The balance matrix B = sqrt(lambda_s) V Lambda^{-1/2} V^T of the Gram matrix G G^T.

    lambda, V are the eigenpairs of G G^T restricted to its numerical rank (eigenvalues above
    max(lambda) K eps, eps of ``dtype_eps``, default that of ``gram``, as in the original);
    lambda_s is the smallest kept eigenvalue ("min", the paper's choice), the median
    ("median") or the mean ("rmse"). The rows of B^T G = (G^T B)^T are the aligned gradients:
    orthogonal, all of norm sqrt(lambda_s) on the span of G. Returns (B, rank); B = I when all
    gradients vanish.
    """
    k = gram.shape[0]
    a = gram.to(torch.float64)
    precision = torch.finfo(gram.dtype).eps if dtype_eps is None else dtype_eps
    lam, vec = torch.linalg.eigh(a)
    tol = lam.max() * k * precision
    keep = lam > tol
    rank = int(keep.sum())
    if rank == 0:
        return torch.eye(k, dtype=a.dtype, device=a.device), 0
    lam, vec = lam[keep], vec[:, keep]
    if scale_mode == "min":
        target = lam.min()
    elif scale_mode == "median":
        target = torch.median(lam)
    else:
        target = lam.mean()
    b = target.sqrt() * (vec / lam.sqrt()) @ vec.T
    return b, rank


class AlignedMTL(GramMethod):
    """Aligned-MTL: update G^T B w with B the balance transformation of the Gram matrix
    (:func:`balance_transformation`) and w = 1/K each (uniform task preferences).

    The principal components of the gradient system are rescaled to a common norm
    sqrt(lambda_s) (``scale_mode``: "min", the paper's default, "median" or "rmse" = mean
    eigenvalue), which makes its condition number 1. Reported weights: B w, so that
    direction = sum_k weights_k g_k.

    Scale (CUSTOM): with w = 1/K the update is the mean of the aligned gradients (torchjd's
    ``AlignedMTL`` convention). The original implementations (SamsungLabs/MTL, LibMTL) sum
    them (w = 1), a K times larger update. For orthogonal gradients of equal norm B = I and
    the weights are 1/K.
    """

    display_name = "Aligned-MTL"
    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, scale_mode: str = "min", space: str | None = None) -> None:
        super().__init__(n_tasks, space)
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")
        self.scale_mode = scale_mode

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        b, rank = balance_transformation(gram, self.scale_mode, dtype_eps)
        return GramWeights(b.sum(dim=1) / self.n_tasks, {"rank": float(rank)})
