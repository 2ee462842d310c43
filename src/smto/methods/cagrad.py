"""CAGrad: conflict-averse gradient descent.

Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task Learning",
NeurIPS 2021 (arXiv 2110.14048).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import brentq
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale
from smto.solvers.min_norm import solve_min_norm

EPS = 1e-8
"""The constant inside the square root of CAGrad's objective (as in the original)."""


def cagrad_inner(gram: np.ndarray, c: float, tol: float = 1e-9) -> tuple[np.ndarray, dict]:
    """Minimizes F(w) = g0^T g_w + c sqrt(|g_w|^2 + 1e-8) over the simplex (g_w = w @ G).

    With ``sqrt(x) = min_{s > 0} (x / s + s) / 2``, F(w) = min_s Phi(w, s) where, for a fixed
    s, minimizing Phi over w is the min-norm problem of the shifted points
    ``g_i + (s / c) g0`` (solved exactly by ``smto.solvers.min_norm.solve_min_norm``).
    phi(s) = min_w Phi(w, s) is convex in s (Phi is jointly convex: a perspective), with derivative
    ``(c / 2) (1 - (|g_w(s)|^2 + 1e-8) / s^2)``, so the optimal s is the root of
    ``s^2 - |g_w(s)|^2 - 1e-8``, bracketed by ``[sqrt(1e-8), sqrt(max_k |g_k|^2 + 1e-8)]``
    and found by Brent's method; ``|g_w(s)|`` is unique (the min-norm point is), so the root
    is well defined. Only K x K quantities are used.

    Returns w and info: ``converged`` (the root was found, every inner solve converged and
    the Frank-Wolfe duality gap ``grad.w - min_k grad_k``, an upper bound on
    F(w) - min F, is below 1e-6 of ``max_k |g_k|^2``), ``solver_iterations`` (inner solves).
    """
    k = gram.shape[0]
    a = 0.5 * (gram + gram.T)
    b = np.full(k, 1.0 / k)
    ab = a @ b
    beta = float(b @ ab)
    inner_ok = True
    calls = 0
    support: np.ndarray | None = None

    def solve(s: float) -> np.ndarray:
        nonlocal inner_ok, calls, support
        t = s / c
        shifted = a + t * (ab[:, None] + ab[None, :]) + t * t * beta
        w, converged, _ = solve_min_norm(shifted, support=support)
        support = w > 0
        calls += 1
        inner_ok = inner_ok and converged
        return w

    def residual(s: float) -> float:
        w = solve(s)
        return s * s - max(float(w @ a @ w), 0.0) - EPS

    lo = math.sqrt(EPS)
    hi = math.sqrt(max(float(np.max(np.diag(a))), 0.0) + EPS)
    root_ok = True
    if residual(lo) >= 0.0:
        s = lo
    elif residual(hi) <= 0.0:
        s = hi
    else:
        s, result = brentq(residual, lo, hi, xtol=1e-14, rtol=tol, full_output=True, disp=False)
        root_ok = bool(result.converged)
    w = solve(s)
    q = max(float(w @ a @ w), 0.0)
    grad = ab + c * (a @ w) / math.sqrt(q + EPS)
    gap = float(grad @ w - np.min(grad))
    scale = max(float(np.max(np.diag(a))), EPS)
    converged = root_ok and inner_ok and gap <= 1e-6 * scale
    return w, {"converged": float(converged), "solver_iterations": float(calls), "gap": gap}


class CAGrad(GramMethod):
    """Conflict-averse gradient descent.

    With the Gram matrix ``A = G G^T``, the mean gradient ``g0`` and ``c = alpha |g0|``, the
    weights ``w`` minimize ``w^T A b + c sqrt(w^T A w + 1e-8)`` over the simplex
    (``b = 1/K``, see :func:`cagrad_inner`), and the update is
    ``(g0 + (c / |g_w|) g_w) / r`` with ``r = 1 + alpha^2`` (``rescale=1``, default),
    ``1 + alpha`` (``rescale=2``) or 1 (``rescale=0``), as in the original.

    Scale: ``Scale.CUSTOM``. The reported weights are the effective ones,
    ``(1/K + (c / |g_w|) w) / r`` (direction = weights @ G); they sum to
    ``(1 + c / |g_w|) / r``. The original logs ``1/K + (c / |g_w|) w`` without the rescale
    factor. ``alpha = 0`` gives exactly the mean gradient (no solve). Unlike the original,
    ``c`` and ``c / |g_w|`` carry no ``+1e-8`` (so alpha = 0 is exact); if ``|g_w| = 0``
    the correction is dropped (``g0`` alone).

    Args:
        n_tasks: the number of tasks.
        alpha: the radius of the ball around ``g0``, relative to ``|g0|`` (>= 0).
        rescale: 0, 1 or 2 (see above).
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "CAGrad"
    scale = Scale.CUSTOM

    def __init__(
        self, n_tasks: int, alpha: float = 0.5, rescale: int = 1, space: str | None = None
    ) -> None:
        super().__init__(n_tasks, space)
        if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not isinstance(rescale, int) or isinstance(rescale, bool) or rescale not in (0, 1, 2):
            raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")
        self.alpha = float(alpha)
        self.rescale = rescale

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        k = gram.shape[0]
        divisor = {0: 1.0, 1: 1.0 + self.alpha**2, 2: 1.0 + self.alpha}[self.rescale]
        coefficients = np.full(k, 1.0 / k)
        info: dict[str, float] = {"solver_iterations": 0.0}
        failure = None
        if self.alpha == 0.0:
            return GramWeights(torch.from_numpy(coefficients), info)
        a = gram.numpy()
        c = self.alpha * math.sqrt(max(float(a.mean()), 0.0))
        if c > 0.0:
            w, solved = cagrad_inner(a, c)
            info = {"solver_iterations": solved["solver_iterations"], "gap": solved["gap"]}
            gw_norm = math.sqrt(max(float(w @ a @ w), 0.0))
            if gw_norm > 0.0:
                coefficients = coefficients + (c / gw_norm) * w
            if solved["converged"] < 1.0:
                failure = (
                    f"the inner problem did not converge (duality gap {solved['gap']:.3g}); "
                    "using the best iterate"
                )
        return GramWeights(torch.from_numpy(coefficients / divisor), info, failure)
