"""Projections onto the dual cone of K vectors, from their Gram matrix.

The dual cone of the rows g_1..g_K of G is ``{x : G x >= 0}``: the directions that conflict
with no vector. The projection of ``G^T u`` onto it is ``G^T v`` with ``v`` the solution of

    min_v  v^T A v   subject to  v >= u,      A = G G^T

(Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232,
Proposition 1). UPGrad projects each task gradient (u = e_k / K), DualProj the mean (u = 1/K).

With ``v = u + lam`` this is the non-negative least-squares problem
``min_{lam >= 0} ||G^T lam + G^T u||^2``, solved exactly (up to rounding) in float64 on the
CPU by the active-set method of Lawson & Hanson in its Gram-matrix form (Bro & De Jong's
"fast NNLS"), which only ever solves on sets of linearly independent vectors, so duplicated,
zero and rank-deficient inputs need no regularization (torchjd's quadprog projector adds
1e-4 I to the trace-normalized Gram matrix instead). The Gram matrix is first scaled so that
its largest diagonal entry is 1, and the result is verified by the optimality (KKT)
conditions ``lam >= 0``, ``A v >= -tol``, ``lam_k (A v)_k = 0`` within ``tol``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from smto.solvers.active_set import nonnegative_quadratic

__all__ = ["dual_cone_weights"]

_ACTIVE = 1e-13
"""Scaled gradient entries below this are rounding (the normalized A has entries <= 1)."""


def dual_cone_weights(
    gram: Tensor, targets: Tensor, tol: float = 1e-9
) -> tuple[Tensor, dict[str, float]]:
    """The weights ``v`` of the projections of ``G^T u`` onto the dual cone, one per row.

    Args:
        gram: the K x K Gram matrix ``G G^T`` (symmetric PSD).
        targets: shape (M, K), one ``u`` per row.
        tol: tolerance of the optimality conditions, relative to the largest squared norm
            (times the size of ``u``).

    Returns:
        ``v`` (shape (M, K), dtype and device of ``gram``) with ``G^T v[m]`` the projection
        of ``G^T targets[m]``, and ``{"converged": 1.0 or 0.0, "solver_iterations": n}``
        (over all rows). Where ``v`` is not unique (dependent vectors) one solution is
        returned; the projection ``G^T v`` is unique.
    """
    a = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    a = 0.5 * (a + a.T)
    us = targets.detach().to(device="cpu", dtype=torch.float64).numpy()
    scale = float(np.max(np.diag(a))) if a.size else 0.0
    if not scale > 0.0:  # every vector is zero: v = u is a solution
        v, converged, iterations = us.copy(), np.isfinite(a).all(), 0
    else:
        a = a / scale
        rows = [_project(a, u, tol) for u in us]
        v = np.stack([r[0] for r in rows])
        converged = all(r[1] for r in rows)
        iterations = sum(r[2] for r in rows)
    weights = torch.from_numpy(v).to(device=gram.device, dtype=gram.dtype)
    return weights, {"converged": float(converged), "solver_iterations": float(iterations)}


def _project(a: np.ndarray, u: np.ndarray, tol: float) -> tuple[np.ndarray, bool, int]:
    """Lawson-Hanson on min_{lam >= 0} 0.5 lam^T A lam + lam^T A u; returns (u + lam, ...)."""
    threshold = _ACTIVE * max(1.0, float(np.abs(u).sum()))
    lam, iterations = nonnegative_quadratic(
        a, -(a @ u), enter_tol=threshold, keep_tol=0.0, max_outer=3 * a.shape[0]
    )
    return u + lam, _kkt_holds(a, u, lam, tol), iterations


def _kkt_holds(a: np.ndarray, u: np.ndarray, lam: np.ndarray, tol: float) -> bool:
    g = a @ (u + lam)
    bound = tol * max(1.0, float(np.abs(u).sum()))
    if not np.all(np.isfinite(g)):
        return False
    return bool(np.min(g) >= -bound and np.max(np.abs(lam * g)) <= bound * (1.0 + lam.max()))
