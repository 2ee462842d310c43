"""SDMGrad: MGDA's weights pulled towards a preferred direction, by a few projected steps.

Xiao, Ban, Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
Algorithms", NeurIPS 2023 (arXiv 2305.18409), Algorithm 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale


def project_onto_simplex(v: Tensor) -> Tensor:
    """The Euclidean projection of ``v`` (shape K) onto the probability simplex: ``max(v -
    theta, 0)`` with ``theta`` from the sorted entries (Held, Wolfe & Crowder 1974), after
    shifting ``v`` by its largest entry (the projection commutes with such shifts, and the
    largest entry's own test then never rounds away, however large ``v`` is)."""
    k = v.shape[0]
    v = v - v.max()
    u = torch.sort(v, descending=True).values
    thresholds = (torch.cumsum(u, dim=0) - 1.0) / torch.arange(1, k + 1, dtype=v.dtype)
    rho = int(torch.nonzero(u > thresholds).max())
    return (v - thresholds[rho]).clamp_min(0.0)


def sdmgrad_weights(
    gram: Tensor, w: Tensor, lr: float, momentum: float, n_iter: int, lambda_: float
) -> Tensor:
    """SDMGrad's inner solve: ``n_iter`` projected SGD steps with momentum on
    ``0.5 |G^T w|^2 + lambda (G^T w_0) . (G^T w)`` over the simplex (``w_0 = 1/K``), from
    ``w``, on ``A / (s^2 + 1e-8)`` with ``s`` the mean gradient norm (the official code's
    scale normalization). Float64 CPU tensors; returns the new ``w``."""
    k = gram.shape[0]
    scale = gram.diagonal().clamp_min(0.0).sqrt().mean()
    a = gram / (scale.pow(2) + 1e-8)
    preference = torch.full((k,), 1.0 / k, dtype=gram.dtype)
    velocity: Tensor | None = None
    for _ in range(n_iter):
        grad = a @ (w + lambda_ * preference)
        velocity = grad if velocity is None else momentum * velocity + grad
        w = project_onto_simplex(w - lr * velocity)
    return w


class SDMGrad(GramMethod):
    """Stochastic direction-oriented multi-objective gradient descent: the update is
    ``G^T (w + lambda w_0) / (1 + lambda)``, with ``w_0 = 1/K`` (the mean gradient as the
    preferred direction) and ``w`` on the simplex minimizing
    ``0.5 |G^T w|^2 + lambda (G^T w_0) . (G^T w)`` (MGDA's problem for ``lambda = 0``),
    approximately, by :func:`sdmgrad_weights`, warm-started from the previous step's ``w``
    (kept in ``state_dict()``).

    Single batch: the paper (and torchjd's ``SDMGradWeighting``, LibMTL) estimates the inner
    problem's matrix from two independent batches and the update from a third, which a
    ``backward(losses)`` interface does not provide. smto uses this step's Gram matrix for
    both, which is torchjd's ``SDMGradWeighting`` applied to ``G G^T`` (a biased estimate of
    the paper's; the convergence guarantee is for the three-batch version). The paper's
    objective-sampling variant (SDMGrad-OS) is not included.

    Scale (MEAN): the weights sum to 1. The scale normalization adds an absolute 1e-8 (the
    official code's), so the weights depend on the scale of tiny gradients.

    Args:
        n_tasks: the number of tasks.
        lambda_: the pull towards the mean gradient (0.3, the authors' experiments, LibMTL
            and torchjd).
        inner_lr: the inner SGD's learning rate (10, the official code and torchjd's ``lr``;
            LibMTL uses 5).
        inner_momentum: the inner SGD's momentum (0.5).
        n_iter: the inner steps per step (20).
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "SDMGrad"
    scale = Scale.MEAN

    def __init__(
        self,
        n_tasks: int,
        lambda_: float = 0.3,
        inner_lr: float = 10.0,
        inner_momentum: float = 0.5,
        n_iter: int = 20,
        space: str | None = None,
    ) -> None:
        super().__init__(n_tasks, space)
        if not lambda_ >= 0.0:
            raise ValueError(f"lambda_ must be >= 0, got {lambda_}")
        if not inner_lr > 0.0:
            raise ValueError(f"inner_lr must be > 0, got {inner_lr}")
        if not 0.0 <= inner_momentum < 1.0:
            raise ValueError(f"inner_momentum must be in [0, 1), got {inner_momentum}")
        if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 1:
            raise ValueError(f"n_iter must be an integer >= 1, got {n_iter!r}")
        self.lambda_ = float(lambda_)
        self.inner_lr = float(inner_lr)
        self.inner_momentum = float(inner_momentum)
        self.n_iter = n_iter
        self.w = torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        k = gram.shape[0]
        self.w = sdmgrad_weights(
            gram, self.w, self.inner_lr, self.inner_momentum, self.n_iter, self.lambda_
        )
        preference = torch.full((k,), 1.0 / k, dtype=torch.float64)
        return GramWeights((self.w + self.lambda_ * preference) / (1.0 + self.lambda_))

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "w": self.w.clone()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.w = state["w"].to(torch.float64).clone()
