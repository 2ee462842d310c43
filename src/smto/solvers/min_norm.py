"""The min-norm point of the convex hull of K vectors, from their Gram matrix.

Given the K x K Gram matrix ``A = G G^T`` of K vectors (the rows of G), the min-norm point of
their convex hull is ``w^T G`` for the ``w`` on the probability simplex that minimizes
``w^T A w``. MGDA, EDM and CDTT need it every step, for small K.

The problem is solved exactly (up to rounding) in float64 on the CPU:

* K = 1: ``w = [1]``; K = 2: the closed form of the line segment's min-norm point.
* K > 2: it is turned into a non-negative least-squares problem, solved by the active-set
  method of Lawson & Hanson in its Gram-matrix form (Bro & De Jong's "fast NNLS"). For
  ``u >= 0`` write ``u = t w`` with ``t = sum(u)``, ``w`` on the simplex; then

      ||G^T u||^2 + (1 - sum(u))^2 = t^2 q + (1 - t)^2,    q = w^T A w,

  whose minimum over t is ``q / (1 + q)``, increasing in q: the minimizer over ``u >= 0``
  gives the min-norm ``w = u / sum(u)``. The quadratic's Hessian ``A + 1 1^T`` is positive
  definite unless the vectors are affinely dependent (duplicates, ...), and the active set
  method only ever solves on sets of affinely independent vectors, so duplicated, zero and
  rank-deficient inputs are handled without NaN. Lawson-Hanson terminates after finitely many
  steps (at most a few K in practice).

The result is verified by the optimality (KKT) conditions of the simplex problem: ``w >= 0``,
``(A w)_k >= w^T A w - tol`` for all k, with equality (within ``tol``) where ``w_k > 0``; the
Gram matrix is first scaled so that its largest diagonal entry is 1, so ``tol`` is relative
to the largest squared norm. Should rounding leave the KKT conditions unmet, accelerated
projected gradient steps polish the iterate, up to ``max_iter`` of them. The solver never
warns; callers read ``info["converged"]`` and decide.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from smto.solvers.active_set import nonnegative_quadratic, passive_minimizer

__all__ = ["min_norm_weights", "solve_min_norm"]


def min_norm_weights(
    gram: Tensor, max_iter: int = 250, tol: float = 1e-5
) -> tuple[Tensor, dict[str, float]]:
    """Weights on the simplex of the min-norm point of the convex hull of K vectors.

    Args:
        gram: the K x K Gram matrix ``G G^T`` of the vectors (symmetric PSD).
        max_iter: at most this many polishing iterations, should the active-set solution
            not meet the optimality conditions within ``tol`` (rounding).
        tol: tolerance of the optimality conditions, relative to the largest squared norm.

    Returns:
        ``w`` (shape K, in the dtype and on the device of ``gram``) minimizing ``w^T A w``
        over the simplex, and ``{"converged": 1.0 or 0.0, "solver_iterations": n}``.
        Where the minimizer is not unique (duplicated or affinely dependent vectors), one of
        the minimizers is returned. Non-finite input gives uniform weights, not converged.
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] < 1:
        raise ValueError(f"gram must be a non-empty square K x K matrix, got {tuple(gram.shape)}")
    a = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    w, converged, iterations = solve_min_norm(a, max_iter, tol)
    weights = torch.from_numpy(w).to(device=gram.device, dtype=gram.dtype)
    return weights, {"converged": float(converged), "solver_iterations": float(iterations)}


def _normalized(a: np.ndarray) -> np.ndarray | None:
    a = 0.5 * (a + a.T)
    scale = float(np.max(np.diag(a)))
    if scale <= 0.0:
        return None
    return a / scale


def _violation(a: np.ndarray, w: np.ndarray) -> float:
    g = a @ w
    q = float(w @ g)
    support = w > 0
    on_support = float(np.max(np.abs(g[support] - q))) if support.any() else 0.0
    return max(-float(np.min(w)), float(np.max(q - g)), on_support, abs(float(w.sum()) - 1.0))


def solve_min_norm(
    a: np.ndarray, max_iter: int = 250, tol: float = 1e-5, support: np.ndarray | None = None
) -> tuple[np.ndarray, bool, int]:
    """:func:`min_norm_weights` on a float64 numpy Gram matrix: ``(w, converged, iterations)``.

    ``support`` (boolean, K) optionally warm-starts the active-set method with a guess of
    the support of ``w`` (e.g. the previous solution of a nearby problem); the result is
    the same, usually in fewer iterations.
    """
    k = a.shape[0]
    uniform = np.full(k, 1.0 / k)
    if not np.all(np.isfinite(a)):
        return uniform, False, 0
    an = _normalized(a)
    if an is None:  # every vector is zero: every w is optimal
        return uniform, True, 0
    if k == 1:
        return np.ones(1), True, 0
    if k == 2:
        w = _two(an)
        iterations = 0
    else:
        w, iterations = _active_set(an, support)
    if _violation(an, w) <= tol:
        return w, True, iterations
    w, polish_iterations, converged = _polish(an, w, max_iter, tol)
    return w, converged, iterations + polish_iterations


def _two(a: np.ndarray) -> np.ndarray:
    """Closed form for two vectors: the segment's point nearest the origin."""
    denom = a[0, 0] + a[1, 1] - 2.0 * a[0, 1]
    if denom <= 1e-15 * max(a[0, 0], a[1, 1]):  # (numerically) identical vectors
        return np.array([0.5, 0.5])
    w0 = float(np.clip((a[1, 1] - a[0, 1]) / denom, 0.0, 1.0))
    return np.array([w0, 1.0 - w0])


def _active_set(a: np.ndarray, support: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Lawson-Hanson NNLS on min 0.5 u^T B u - 1^T u (B = A + 1 1^T), then w = u / sum(u)."""
    k = a.shape[0]
    b = a + 1.0
    c = np.ones(k)
    u = np.zeros(k)
    passive = np.zeros(k, dtype=bool)
    eps = 1e-12
    iterations = 0
    if support is not None and support.any():
        # Warm start: shrink the guessed support until its subproblem solution is positive,
        # which gives a feasible starting point of the same form as the method's iterates.
        passive = np.asarray(support, dtype=bool).copy()
        s = passive_minimizer(b, c, passive)
        while passive.any() and not np.all(s[passive] > eps):
            iterations += 1
            passive &= s > eps
            s = passive_minimizer(b, c, passive)
        u = s
    u, more = nonnegative_quadratic(
        b, c, enter_tol=eps, keep_tol=eps, max_outer=10 * k, u=u, passive=passive
    )
    iterations += more
    total = float(u.sum())
    if not np.isfinite(total) or total <= 0.0:
        return np.full(k, 1.0 / k), iterations
    return u / total, iterations


def _project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex (sort-based)."""
    n = v.shape[0]
    mu = np.sort(v)[::-1]
    cumsum = np.cumsum(mu) - 1.0
    index = np.arange(1, n + 1)
    rho = int(np.nonzero(mu - cumsum / index > 0)[0][-1])
    theta = cumsum[rho] / (rho + 1)
    return np.maximum(v - theta, 0.0)


def _polish(
    a: np.ndarray, w: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, int, bool]:
    """Accelerated projected gradient (FISTA with restarts) from ``w``."""
    lipschitz = 2.0 * max(float(np.linalg.eigvalsh(a)[-1]), 1e-12)
    best, best_value = _project_simplex(w), np.inf
    x = y = best
    t = 1.0
    for it in range(1, max_iter + 1):
        x_new = _project_simplex(y - 2.0 * (a @ y) / lipschitz)
        value = float(x_new @ a @ x_new)
        if value < best_value:
            best, best_value = x_new, value
        if value > float(x @ a @ x):  # restart the momentum
            t, y = 1.0, x_new
        else:
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            y = x_new + ((t - 1.0) / t_new) * (x_new - x)
            t = t_new
        x = x_new
        if _violation(a, _clean(x)) <= tol:
            return _clean(x), it, True
    return _clean(best), max_iter, _violation(a, _clean(best)) <= tol


def _clean(w: np.ndarray) -> np.ndarray:
    w = np.maximum(w, 0.0)
    return w / w.sum()
