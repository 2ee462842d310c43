"""The CAGrad toy: two objectives on the plane whose average has one global minimum.

Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021 (arXiv 2110.14048), Fig. 1 and their ``toy.py``; repeated
with more optimizers and learning rates by Elich et al., "Examining Common Paradigms in
Multi-Task Learning" (arXiv 2311.04698), Sec. 4.1.1, Table 1, Table A3 and Fig. 1. The
formulas are those of ``PROTOCOL.md`` ("Toy problems").
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

LOWER = 5e-6
"""The floor under the absolute values inside the logarithms (Liu et al.'s ``LOWER``)."""

STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
"""The three initial points of Liu et al.'s figure."""

PUBLISHED_MINIMUM = (0.0, -8.3552)
"""The minimum of the average loss as PROTOCOL.md and Elich et al. give it (4 decimals)."""


def task_losses(x: Tensor) -> Tensor:
    """The two objectives (L1, L2) at ``x = (x1, x2)``, differentiable, shape (2,).

    For x2 > 0 they are logarithmic valleys (weight ``c1 = max(tanh(x2/2), 0)``), for
    x2 < 0 quadratic bowls centred at x1 = 7 and x1 = -7 (weight ``c2 = max(tanh(-x2/2), 0)``).
    """
    x1, x2 = x[0], x[1]
    f1 = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), LOWER).log() + 6
    f2 = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), LOWER).log() + 6
    c1 = torch.clamp(torch.tanh(0.5 * x2), 0)
    c2 = torch.clamp(torch.tanh(-0.5 * x2), 0)
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    return torch.stack([f1 * c1 + f1_sq * c2, f2 * c1 + f2_sq * c2])


def average_loss(x: Tensor) -> Tensor:
    """The mean of the two objectives, the function whose minimum the methods should reach."""
    return task_losses(x).mean()


def _lowest_x2(offset: float) -> float:
    """argmin over x2 < 0 of tanh(-x2/2) (0.01 (x2 + 8)^2 - offset), to 1e-12."""
    result = minimize_scalar(
        lambda x2: math.tanh(-0.5 * x2) * (0.01 * (x2 + 8) ** 2 - offset),
        bounds=(-20.0, -1.0),
        method="bounded",
        options={"xatol": 1e-12},
    )
    return float(result.x)


def minimum() -> tuple[float, float]:
    """The global minimum of the average loss, (0, -8.35511...).

    For x2 < 0 the average is ``tanh(-x2/2) (x1^2/10 + 0.01 (x2+8)^2 - 15.1)``: the bracket
    is negative near its minimum, so x1 = 0 and the rest is a one-dimensional problem in x2.
    For x2 > 0 the logarithms are bounded below by log(LOWER) + 6 > -6.3 times c1 < 1, above
    the minimum's value of about -15.09. (PROTOCOL.md's -8.3552 is 9e-5 away: the average
    is flat in x2 there, f'' = 0.027, so a float32 search stops anywhere within ~1e-2.)
    """
    return 0.0, _lowest_x2(15.1)


def pareto_set(points: int = 201) -> np.ndarray:
    """The Pareto set of (L1, L2), an (points, 2) array from (-7, .) to (7, .).

    Every point with x2 > 0 is dominated (both losses > -6.3 there, -15.09 at the minimum),
    and for x2 < 0 ``w L1 + (1 - w) L2 = tanh(-x2/2) ((x1 - 7 (2w - 1))^2 / 10
    + 19.6 w (1 - w) + 0.01 (x2 + 8)^2 - 20)``: its minimizer is x1 = 7 (2w - 1) and the
    x2 minimizing a one-dimensional function, for each w in [0, 1].
    """
    weights = np.linspace(0.0, 1.0, points)
    return np.array([(7 * (2 * w - 1), _lowest_x2(20 - 19.6 * w * (1 - w))) for w in weights])


def loss_grid(
    bounds: tuple[float, float, float, float] = (-10.0, 10.0, -10.0, 10.0), resolution: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X1, X2, average loss) on a ``resolution`` x ``resolution`` grid, for contour plots."""
    x1, x2 = np.meshgrid(
        np.linspace(bounds[0], bounds[1], resolution), np.linspace(bounds[2], bounds[3], resolution)
    )
    points = torch.from_numpy(np.stack([x1.ravel(), x2.ravel()]))
    values = task_losses(points).mean(0).numpy().reshape(x1.shape)
    return x1, x2, values
