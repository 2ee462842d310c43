"""The Nash bargaining solution of Nash-MTL: alpha > 0 with ``A alpha = 1/alpha``.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, "Multi-Task Learning as a
Bargaining Game", ICML 2022, arXiv 2202.01017 (Eq. 3 / Algorithm 1).

Given the Gram matrix ``A = G G^T`` of the K task gradients (the rows of G), the weights are
the ``alpha > 0`` with ``(A alpha)_i = 1 / alpha_i``: the update ``d = alpha^T G`` then has
``g_i^T d = 1 / alpha_i`` for every task, and ``||d||^2 = alpha^T A alpha = K``.

Which scale (the original's normalization). The original solves with the Gram matrix divided
by its Frobenius norm s, but its constraint ``alpha_i * s * (A/s alpha)_i >= 1`` multiplies
the norm back in, so (when its solver works) it returns the solution of the *unnormalized*
equation. Both coincide: if ``M b = 1/b`` for ``M = A/s`` then ``a = b / sqrt(s)`` has
``A a = s M b / sqrt(s) = sqrt(s) / b = 1/a``. This module returns that exact unnormalized
solution; the normalization is only a matter of conditioning, and a better one is used here.

How. Write ``n_i = ||g_i||`` and ``C = D^-1 A D^-1`` (``D = diag(n)``, the cosine matrix, unit
diagonal). With ``alpha = c / n`` the equation becomes ``C c = 1/c``: it only depends on the
angles between the gradients, and ``alpha_i = c_i / ||g_i||`` (``c_i = ||alpha_i g_i||``, the
norm of task i's share of the update). ``c`` is the unique minimizer of the strictly convex

    phi(c) = 0.5 c^T C c - sum_i log c_i        (c > 0),

gradient ``C c - 1/c``, Hessian ``C + diag(1/c^2)`` (positive definite). phi is standard
self-concordant, so damped Newton (step ``1 / (1 + lambda)`` while the Newton decrement
``lambda >= 1/4``, full steps after) stays in ``c > 0``, decreases phi every step and converges
quadratically, without a line search (there, each decrement is below half the previous one,
so one that is not has hit rounding: the solver stops). It starts at the best multiple of
``init`` (or of the all-ones vector) along its ray, and stops when every equation holds to a
relative ``tol``: ``max_i |alpha_i (A alpha)_i - 1| = max_i |c_i (C c)_i - 1| < tol``. (This
componentwise residual bounds the normwise ``||A a - 1/a|| / ||1/a||``; the normwise one
alone can be fooled: where no solution exists, ``alpha`` grows without bound along the
vanishing combination and ``||1/alpha||`` is left to the bounded components.)

When there is no solution. phi is bounded below, and a solution exists, exactly when no
non-negative, non-zero combination of the gradients vanishes (``G^T u = 0``, ``u >= 0``): a
zero gradient, two opposite gradients, three coplanar gradients with 0 in their convex hull...
Singular Gram matrices alone are fine (two identical gradients have the solution
``alpha_1 = alpha_2 = 1 / (sqrt(2) ||g||)``). Without a solution, phi decreases along such u
without bound and Newton's iterates grow geometrically; the solver stops once some ``c_i``
exceeds ``max_scale`` (task i's share of the update would be ``max_scale / sqrt(K)`` times
the update itself: the update is then a cancellation of huge terms, useless in floating
point), after ``max_iter`` steps, or when rounding stalls Newton short of ``tol`` (nearly
conflicting gradients: a solution may exist but not be computable to ``tol``); it then
reports ``converged = 0``. The solver never warns; callers read
``info["converged"]`` and decide.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["nash_residual", "solve_nash"]

_FULL_STEP_DECREMENT = 0.25


def solve_nash(
    gram: Tensor | np.ndarray,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
    init: Tensor | np.ndarray | None = None,
    max_scale: float = 1e8,
) -> tuple[np.ndarray, dict[str, float]]:
    """The alpha > 0 with ``gram @ alpha = 1 / alpha`` (float64, on the CPU).

    Args:
        gram: the K x K Gram matrix ``G G^T`` of the task gradients (unnormalized).
        tol: tolerance on the residual ``max_i |alpha_i (A alpha)_i - 1|`` (each equation's
            relative error; see :func:`nash_residual`).
        max_iter: at most this many Newton steps.
        init: a warm start (e.g. the previous step's alpha), positive, in the units of
            ``gram``; only its direction matters (it is rescaled optimally along its ray), and
            the solution does not depend on it.
        max_scale: give up (no solution) once some ``alpha_i ||g_i||`` exceeds this.

    Returns:
        ``alpha`` (shape K, float64 numpy) and ``{"converged": 1.0 or 0.0,
        "solver_iterations": Newton steps, "residual": the residual of the returned alpha}``.
        Without convergence ``alpha`` is the iterate with the smallest residual (``init``, or
        ones, where none was formed, as for a zero or non-finite gradient).
    """
    a = _as_float64(gram, "gram")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
        raise ValueError(f"gram must be a non-empty square K x K matrix, got shape {a.shape}")
    k = a.shape[0]
    if not (isinstance(tol, (int, float)) and 0.0 < tol < 1.0):
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    start = None
    if init is not None:
        start = _as_float64(init, "init").reshape(-1)
        if start.shape != (k,) or not np.all(np.isfinite(start)) or not np.all(start > 0):
            raise ValueError(f"init must hold {k} finite positive entries, got {start}")
    fallback = np.ones(k) if start is None else start.copy()

    a = 0.5 * (a + a.T)
    sq_norms = np.diag(a)
    if not np.all(np.isfinite(a)) or not np.all(sq_norms > 0.0):
        return fallback, _info(False, 0, math.inf)
    norms = np.sqrt(sq_norms)
    cos = a / np.outer(norms, norms)
    np.fill_diagonal(cos, 1.0)

    c = np.ones(k) if start is None else start * norms
    ray = float(c @ cos @ c)
    if not ray > 0.0:
        return fallback, _info(False, 0, math.inf)
    c *= math.sqrt(k / ray)

    best_c, best_residual = c, math.inf
    steps = 0
    previous_decrement = math.inf
    while True:
        inv = 1.0 / c
        grad = cos @ c - inv
        residual = float(np.max(np.abs(c * grad)))
        if residual < best_residual:
            best_c, best_residual = c, residual
        if residual < tol:
            return c / norms, _info(True, steps, residual)
        if steps >= max_iter:
            break
        hessian = cos + np.diag(inv * inv)
        try:
            step = np.linalg.solve(hessian, -grad)
        except np.linalg.LinAlgError:
            break
        decrement_sq = float(-grad @ step)
        if not (decrement_sq > 0.0 and math.isfinite(decrement_sq)):
            break
        decrement = math.sqrt(decrement_sq)
        if decrement < _FULL_STEP_DECREMENT and decrement >= previous_decrement:
            break
        previous_decrement = decrement
        t = 1.0 if decrement < _FULL_STEP_DECREMENT else 1.0 / (1.0 + decrement)
        c = c + t * step
        steps += 1
        if not np.all(c > 0.0) or float(c.max()) > max_scale:
            break
    return best_c / norms, _info(False, steps, best_residual)


def nash_residual(gram: Tensor | np.ndarray, alpha: Tensor | np.ndarray) -> float:
    """The residual ``max_i |alpha_i (A alpha)_i - 1|`` that :func:`solve_nash` drives below
    ``tol`` (the largest relative error of an equation ``(A alpha)_i = 1 / alpha_i``)."""
    a = _as_float64(gram, "gram")
    x = _as_float64(alpha, "alpha").reshape(-1)
    return float(np.max(np.abs(x * (a @ x) - 1.0)))


def _info(converged: bool, steps: int, residual: float) -> dict[str, float]:
    return {
        "converged": 1.0 if converged else 0.0,
        "solver_iterations": float(steps),
        "residual": float(residual),
    }


def _as_float64(value: Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a tensor or an array of numbers") from None
