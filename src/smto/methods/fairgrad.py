"""FairGrad: the update of maximal alpha-fair utility of the tasks' improvements.

Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (arXiv 2402.15638),
Equation 4 and Algorithm 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale


def fairgrad_weights(
    gram: Tensor,
    alpha: float,
    dtype_eps: float,
    tol: float = 1e-12,
    accept: float = 1e-6,
    max_iter: int = 100,
) -> tuple[Tensor, dict[str, float], bool]:
    """The ``w > 0`` with ``(A w)_i = w_i^(-1/alpha)`` (A = G G^T), float64 on the CPU.

    ``w`` minimizes the strictly convex ``0.5 w^T A w - sum_i h(w_i)``, ``h' = w^(-1/alpha)``
    (``h = log`` for alpha = 1), solved by Newton's method with a backtracking line search
    that keeps ``w > 0``, on ``A / s`` (``s`` the largest squared norm; ``w`` is then
    multiplied by ``s^(-alpha / (1 + alpha))``), from the best multiple of the all-ones vector.
    It stops when ``max_i |w_i^(1/alpha) (A w)_i - 1| < tol``, or when rounding stalls it;
    the solve is accepted below ``accept`` (nearly opposite gradients make ``A w`` a
    cancellation: about 1e-8 is then what float64 gives; without a solution the residual
    stays of order 1). Gradients below the rounding
    of the largest (norm under ``dtype_eps`` times it) have no solution (their equation
    reads ``0 = w_i^(-1/alpha)``, whose limit is ``w_i -> infinity``) and no effect on the
    update: they get weight 0, and the others' equations, which do not involve them, are
    solved. Alpha = 0 gives ``w = 1``. Returns ``(w, info, solved)``; where no solution
    exists (a non-negative combination of the other gradients vanishes) or Newton stalls,
    ``solved`` is False and ``w`` is the best multiple of the all-ones vector (the sum of the
    gradients, rescaled).
    """
    k = gram.shape[0]
    a = gram.to(torch.float64).numpy()
    a = 0.5 * (a + a.T)
    info = {"solver_iterations": 0.0, "residual": 0.0}
    if alpha == 0.0:
        return torch.ones(k, dtype=torch.float64), info, True
    scale = float(np.max(np.diag(a)))
    if not scale > 0.0:
        return torch.ones(k, dtype=torch.float64), info, False
    live = np.diag(a) > scale * dtype_eps**2
    an = a[np.ix_(live, live)] / scale
    w, iterations, residual = _newton(an, alpha, tol, accept, max_iter)
    solved = residual < accept
    if not solved:
        w = _ray(an, alpha)
    weights = np.zeros(k)
    weights[live] = w * scale ** (-alpha / (1.0 + alpha))
    info = {"solver_iterations": float(iterations), "residual": float(residual)}
    return torch.from_numpy(weights), info, solved


def _ray(a: np.ndarray, alpha: float) -> np.ndarray:
    """``t 1``, the minimizer along the all-ones ray: ``t^(1 + 1/alpha) = K / (1^T A 1)``."""
    k = a.shape[0]
    q = float(a.sum())
    t = (k / q) ** (alpha / (1.0 + alpha)) if q > 0.0 else 1.0
    return np.full(k, t)


def _objective(a: np.ndarray, w: np.ndarray, alpha: float) -> float:
    if alpha == 1.0:
        concave = float(np.log(w).sum())
    else:
        concave = float((alpha / (alpha - 1.0) * w ** (1.0 - 1.0 / alpha)).sum())
    return 0.5 * float(w @ a @ w) - concave


def _residual(a: np.ndarray, w: np.ndarray, alpha: float) -> float:
    value = float(np.max(np.abs(w ** (1.0 / alpha) * (a @ w) - 1.0)))
    return value if math.isfinite(value) else math.inf


def _newton(
    a: np.ndarray, alpha: float, tol: float, accept: float, max_iter: int
) -> tuple[np.ndarray, int, float]:
    """Newton's method from the ray's point; returns the iterate of smallest residual, the
    iterations and that residual. It stops at ``tol``, or when rounding stalls it (no
    decrease of the potential, or, below ``accept``, 5 steps without a better residual)."""
    w = _ray(a, alpha)
    value = _objective(a, w, alpha)
    best, best_residual, since_best = w, _residual(a, w, alpha), 0
    for iteration in range(1, max_iter + 1):
        if best_residual < tol or (best_residual < accept and since_best >= 5):
            return best, iteration - 1, best_residual
        grad = a @ w - w ** (-1.0 / alpha)
        hessian = a + np.diag(w ** (-1.0 / alpha - 1.0) / alpha)
        try:
            step = -np.linalg.solve(hessian, grad)
        except np.linalg.LinAlgError:
            return best, iteration, best_residual
        t = 1.0
        negative = step < 0.0
        if negative.any():
            t = min(1.0, 0.99 * float(np.min(-w[negative] / step[negative])))
        slope = float(grad @ step)
        for _ in range(60):
            candidate = w + t * step
            new_value = _objective(a, candidate, alpha)
            if new_value <= value + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            return best, iteration, best_residual  # no decrease: rounding, or no minimizer
        w, value = candidate, new_value
        if not math.isfinite(value) or float(np.max(w)) > 1e150:
            return best, iteration, math.inf
        residual = _residual(a, w, alpha)
        if residual < best_residual:
            best, best_residual, since_best = w, residual, 0
        else:
            since_best += 1
    return best, max_iter, best_residual


class FairGrad(GramMethod):
    """FairGrad: ``d = sum_i w_i g_i`` with ``(G G^T w)_i = w_i^(-1/alpha)``, ``w > 0``.

    The update maximizes the alpha-fair utility ``sum_i (g_i^T d)^(1-alpha) / (1-alpha)`` of
    the tasks' improvements; at the optimum ``w_i = (g_i^T d)^(-alpha)``. Alpha = 0 is
    utilitarian (``w = 1``: the sum of the gradients), alpha = 1 proportional fairness (the
    Nash bargaining weights of Nash-MTL, unclipped), alpha -> infinity max-min fairness (equal
    improvements ``g_i^T d``). The system is solved exactly by Newton's method on its convex
    potential (:func:`fairgrad_weights`), where the official code and torchjd run scipy's
    ``least_squares`` from 1/K. A zero gradient gets weight 0 (its equation has no solution,
    its weight no effect on the update) and the others are solved. Where no solution exists
    (a non-negative combination of the gradients vanishes, as for two opposite gradients)
    the step uses the sum of the gradients, rescaled to the equations' mean, sets
    ``info["converged"] = 0``, counts ``solver_failures`` and warns.

    Scale (CUSTOM): ``w`` itself, as in the paper's Algorithm 1 and torchjd's ``FairGrad``
    (``w`` scales as ``1 / ||G||^(2 alpha / (1 + alpha))``). The official code multiplies the
    update by K ("to match the sum loss") and clips its norm to 1 (``max_norm=1.0``), which
    smto does not do. At alpha = 0 torchjd returns 1/K, smto 1 (the equation's solution).

    Args:
        n_tasks: the number of tasks.
        alpha: the fairness parameter, >= 0 (default 1.0, the official code's; its QM9 runs
            use 2.0).
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "FairGrad"
    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, alpha: float = 1.0, space: str | None = None) -> None:
        super().__init__(n_tasks, space)
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not math.isfinite(alpha)
            or alpha < 0
        ):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        w, info, solved = fairgrad_weights(gram, self.alpha, dtype_eps)
        failure = None
        if not solved:
            failure = (
                f"no solution of (G G^T w)_i = w_i^(-1/alpha) found (residual "
                f"{info['residual']:.3g}: a vanishing non-negative combination of the "
                "gradients?); using the sum of the gradients, rescaled"
            )
        return GramWeights(w, info, failure)
