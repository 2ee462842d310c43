"""PCD: the direction nearest the primary task's gradient that guarantees each other task a
share of progress.

Varam & AlHajri, "Not All Objectives Are Born Equal: Priority-Constrained Descent for
Hierarchical Multi-Objective Optimization", TMLR 2026, arXiv 2606.29521 (Definition 4.1, the
quadratic program; Theorem 4.2, its KKT form; Definition 4.5, the normalization; Algorithm 1,
the rescaling and the fallbacks), as cited by the authors' code
(github.com/DaraVaram/priority-constrained-descent) and torchjd; the paper's text itself was
not available here, so the definitions were checked against those two and the abstract.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from smto.method import GramMethod, GramWeights, Scale

_KKT_TOL = 1e-9
"""Tolerance of the optimality conditions, relative to the largest normalized squared norm."""


class PCD(GramMethod):
    """Priority-Constrained Descent: task ``primary`` is followed, the others are constraints.

    With ``g~_i = s_i g_i`` the normalized gradients (``s_i = 1 / sqrt(v_i + eps)``, ``v_i``
    the bias-corrected moving average of ``||g_i||^2`` with decay ``beta``, one scalar per
    task: Definition 4.5), the direction solves (Definition 4.1)

        min_d  1/2 ||d - g~_p||^2   subject to   g~_j^T d >= tau ||g~_j||^2   for j != p,

    each secondary task getting at least a fraction ``tau`` of the first-order progress of a
    step along its own normalized gradient. By the KKT conditions (Theorem 4.2) the solution
    is ``d~ = g~_p + sum_j mu_j g~_j`` with ``mu >= 0`` the multipliers, found exactly (up to
    rounding) on the Gram matrix by :func:`pcd_multipliers` and verified by the KKT
    conditions (a failure is counted and warned). The update is ``d~`` rescaled to the norm
    of ``g_p`` (Algorithm 1).

    Fallbacks (Algorithm 1): ``g_p = 0`` gives a zero update; ``d~ = 0`` (up to the Gram
    matrix's rounding, only possible with ``tau = 0``) gives a zero update; where the
    constraints are incompatible (``tau > 0`` and the origin in the convex hull of the
    non-zero secondary gradients, Farkas' lemma: e.g. two opposite secondaries, K >= 3) they
    are dropped and the update is ``g_p`` (``info["feasible"] = 0``; in high dimensions it
    essentially never happens, the paper reports). The moving average is
    updated at every step, fallbacks included, as in the reference code.

    Not symmetric in the tasks: which task is primary matters, the order of the others does
    not. Permuting the tasks together with ``primary`` permutes the weights.

    Scale (CUSTOM): the update has the norm of the primary gradient; the weights are
    ``rescale * s_i * w_i`` with ``w_p = 1, w_j = mu_j``. ``tau`` is scale-free: a
    secondary task's loss multiplied by a constant leaves the update unchanged (up to
    ``eps``).

    Differences from torchjd's ``PCD`` (0.18) and the reference code: both take the first row
    as primary, smto any task (``primary``); both accept one ``tau`` per secondary, smto one
    scalar (the paper's). torchjd and smto solve the QP by Goldfarb-Idnani's dual active-set
    method, the reference by enumerating the working sets (exponential in K); all find the
    same minimizer (agreement with torchjd is tested). torchjd returns NaN on non-finite
    gradients; smto raises :class:`smto.errors.NonFiniteError` naming the task, as for every
    gradient method. Heads get the plain sum of their task gradients (PROTOCOL.md);
    ``heads="weighted"`` gives them the weighted gradients, as the reference code does for
    every parameter (it has no heads).

    Args:
        n_tasks: the number of tasks.
        primary: the index of the primary task (default 0, the first).
        tau: the guaranteed fraction in [0, 1] (0.02, the paper's representative setting
            according to the authors' README).
        beta: the decay in [0, 1) of the squared norms' moving average (0.999, the authors'
            code and torchjd).
        eps: the non-negative constant added to the moving average (1e-8, the same).
        heads: ``"sum"`` (default) or ``"weighted"``.
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "PCD"
    scale = Scale.CUSTOM

    def __init__(
        self,
        n_tasks: int,
        primary: int = 0,
        tau: float = 0.02,
        beta: float = 0.999,
        eps: float = 1e-8,
        heads: str = "sum",
        space: str | None = None,
    ) -> None:
        super().__init__(n_tasks, space, heads)
        if isinstance(primary, bool) or not isinstance(primary, int):
            raise ValueError(f"primary must be a task index (an integer), got {primary!r}")
        if not 0 <= primary < n_tasks:
            raise ValueError(f"primary must be a task index in [0, {n_tasks - 1}], got {primary}")
        for name, value, upper, closed in (("tau", tau, 1.0, True), ("beta", beta, 1.0, False)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not (0.0 <= value <= upper if closed else 0.0 <= value < upper):
                bracket = "]" if closed else ")"
                raise ValueError(f"{name} must be in [0, {upper:g}{bracket}, got {value!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0.0:
            raise ValueError(f"eps must be a non-negative number, got {eps!r}")
        self.primary = primary
        self.tau = float(tau)
        self.beta = float(beta)
        self.eps = float(eps)
        self.register_buffer("sq_norm_average", torch.zeros(n_tasks, dtype=torch.float64))
        self.steps = 0

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        sq_norms = gram.diagonal().clone()
        scales = self._update_scales(sq_norms)
        k, p = gram.shape[0], self.primary
        info = {"feasible": 1.0, "active_constraints": 0.0, "solver_iterations": 0.0}
        weights = torch.zeros(k, dtype=torch.float64)
        if not float(sq_norms[p]) > 0.0:
            return GramWeights(weights, info)
        normalized = gram * torch.outer(scales, scales)
        secondary = [j for j in range(k) if j != p]
        mu, feasible, iterations, converged = pcd_multipliers(
            normalized.numpy(), p, self.tau, max(1e-9, 10.0 * dtype_eps)
        )
        w = torch.zeros(k, dtype=torch.float64)
        w[p] = 1.0
        w[secondary] = torch.from_numpy(mu)
        info.update(
            feasible=float(feasible),
            active_constraints=float((mu > 0).sum()),
            solver_iterations=float(iterations),
        )
        direction_sq_norm = float(w @ normalized @ w)
        rounding = 10.0 * dtype_eps * float(w.abs() @ normalized.diagonal().sqrt()) ** 2
        if direction_sq_norm > rounding:
            weights = w * scales * math.sqrt(float(sq_norms[p]) / direction_sq_norm)
        failure = None if converged else "the PCD multipliers did not meet the KKT conditions"
        return GramWeights(weights, info, failure)

    def _update_scales(self, sq_norms: Tensor) -> Tensor:
        """Updates the moving average with this step's squared norms; the scales ``s_i``."""
        self.steps += 1
        average = self.beta * self.sq_norm_average.cpu() + (1.0 - self.beta) * sq_norms
        self.sq_norm_average.copy_(average)
        denominators = (average / (1.0 - self.beta**self.steps) + self.eps).sqrt()
        # a zero average (with eps = 0) is a gradient that was always zero: its scale is moot
        return torch.where(denominators > 0.0, 1.0 / denominators, 0.0)

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "steps": self.steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.steps = int(state["steps"])


def pcd_multipliers(
    gram: np.ndarray, primary: int, tau: float, dependence_tol: float
) -> tuple[np.ndarray, bool, int, bool]:
    """The KKT multipliers ``mu`` (one per secondary, in task order) of PCD's quadratic
    program on the (normalized) K x K Gram matrix ``gram``.

    The dual active-set method of Goldfarb & Idnani (Math. Programming 27, 1983) for an
    identity Hessian, on the Gram matrix alone: ``d = g_p + sum_j mu_j g_j`` holds throughout;
    each iteration adds the most violated constraint, first dropping, where the step would
    make an active multiplier negative, the one that reaches zero. A gradient whose component
    orthogonal to the active ones has a squared norm at most ``dependence_tol`` times its own
    counts as dependent on them (no primal step). The shared Lawson-Hanson solver does not
    serve here: with dependent secondaries (more tasks than the gradients' rank) and
    ``tau > 0`` the dual's linear term leaves the range of its Hessian, and its passive
    subproblems become unbounded.

    Returns ``(mu, feasible, iterations, converged)``: where the constraints are
    incompatible (a violated constraint's gradient is a non-positive combination of the
    active ones: Farkas' lemma), ``mu = 0`` and ``feasible`` is False; ``converged`` says
    whether ``mu`` meets the KKT conditions within a tolerance relative to the largest
    squared norm.
    """
    secondary = [j for j in range(gram.shape[0]) if j != primary]
    n = len(secondary)
    mu = np.zeros(n)
    largest = float(np.max(np.diag(gram)))
    if n == 0 or not largest > 0.0:
        return mu, True, 0, True
    a = gram / largest
    a = 0.5 * (a + a.T)
    block = a[np.ix_(secondary, secondary)]
    c = tau * np.diag(block) - a[secondary, primary]  # > 0 where g_p violates the constraint
    active: list[int] = []
    iterations = 0
    while iterations < 10 * n:
        slack = block @ mu - c
        slack[active] = 0.0  # they hold with equality, up to rounding
        entering = int(np.argmin(slack))
        if slack[entering] >= -_KKT_TOL:
            break
        violation = -float(slack[entering])
        while iterations < 10 * n:
            iterations += 1
            # the dual step raises mu_entering by 1 and the active mu by -r; in the primal it
            # is z = g_entering - sum r_i g_i, the part of g_entering orthogonal to the active
            r = np.linalg.solve(block[np.ix_(active, active)], block[active, entering])
            z_sq = float(block[entering, entering] - block[entering, active] @ r)
            full = violation / z_sq if z_sq > dependence_tol * block[entering, entering] else np.inf
            ratios = np.where(r > 0.0, mu[active] / np.where(r > 0.0, r, 1.0), np.inf)
            blocking = int(np.argmin(ratios)) if active else -1
            partial = float(ratios[blocking]) if active else np.inf
            step = min(full, partial)
            if step == np.inf:
                return np.zeros(n), False, iterations, True
            mu[active] -= step * r
            mu[entering] += step
            if full <= partial:
                active.append(entering)
                break
            mu[active.pop(blocking)] = 0.0
            violation = float(c[entering] - block[entering] @ mu)
    mu = np.maximum(mu, 0.0)
    slack = block @ mu - c  # g~_j^T d~ - tau ||g~_j||^2 (scaled), >= 0 at the solution
    bound = _KKT_TOL * (1.0 + float(mu.sum()))
    converged = bool(
        np.all(np.isfinite(mu))
        and np.min(slack) >= -bound
        and np.max(np.abs(mu * slack)) <= bound * (1.0 + float(mu.max()))
    )
    return mu, True, iterations, converged
