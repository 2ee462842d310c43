"""Lawson & Hanson's active-set method in its Gram-matrix form (Bro & De Jong's "fast NNLS").

``min 0.5 u^T B u - c^T u`` subject to ``u >= 0``, with B symmetric positive semi-definite:
the min-norm point (MGDA, EDM, CDTT) and the dual-cone projections (UPGrad, DualProj) are
both this problem. Only sets of linearly independent rows are ever solved on, so duplicated,
zero and rank-deficient inputs need no regularization.
"""

from __future__ import annotations

import numpy as np


def nonnegative_quadratic(
    b: np.ndarray,
    c: np.ndarray,
    *,
    enter_tol: float,
    keep_tol: float,
    max_outer: int,
    u: np.ndarray | None = None,
    passive: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """The minimizer ``u >= 0`` and the number of active-set changes.

    A variable enters the passive set when its gradient ``(c - B u)_j`` exceeds ``enter_tol``
    and stays while it is above ``keep_tol``. ``u`` and ``passive`` warm-start the method (a
    feasible point whose support is ``passive``); both default to zero / empty.
    """
    k = b.shape[0]
    u = np.zeros(k) if u is None else u.copy()
    passive = np.zeros(k, dtype=bool) if passive is None else passive.copy()
    iterations = 0
    for _ in range(max_outer):
        grad = c - b @ u
        candidates = np.where(~passive, grad, -np.inf)
        j = int(np.argmax(candidates))
        if candidates[j] <= enter_tol:
            break
        passive[j] = True
        iterations += 1
        s = passive_minimizer(b, c, passive)
        for _ in range(3 * k):
            if np.all(s[passive] > keep_tol):
                break
            iterations += 1
            blocking = passive & (s <= keep_tol)
            ratios = u[blocking] / np.maximum(u[blocking] - s[blocking], 1e-300)
            step = float(np.min(ratios)) if ratios.size else 0.0
            u = u + step * (s - u)
            passive &= u > keep_tol
            u[~passive] = 0.0
            s = passive_minimizer(b, c, passive)
        u = np.maximum(s, 0.0)
    return u, iterations


def passive_minimizer(b: np.ndarray, c: np.ndarray, passive: np.ndarray) -> np.ndarray:
    """The unconstrained minimizer on the passive set (zero elsewhere)."""
    s = np.zeros(b.shape[0])
    idx = np.flatnonzero(passive)
    if idx.size:
        bpp = b[np.ix_(idx, idx)]
        try:
            s[idx] = np.linalg.solve(bpp, c[idx])
        except np.linalg.LinAlgError:
            s[idx] = np.linalg.lstsq(bpp, c[idx], rcond=None)[0]
        if not np.all(np.isfinite(s[idx])):
            s[idx] = np.linalg.lstsq(bpp, c[idx], rcond=None)[0]
    return s
