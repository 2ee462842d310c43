"""ExcessMTL: task weights raised by exponentiated steps on estimated excess risks.

He, Zhou, Zhao, Chen, "Robust Multi-Task Learning with Excess Risks", ICML 2024
(arXiv 2402.02009), Equations 6, 7 and 9, Algorithm 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from smto.jacobian import TaskGradients
from smto.method import Aggregation, GradientMethod, Scale, Space

EPS = 1e-7
"""Added under the square root of the curvature (the official code's) and to the baseline
(torchjd's; the official code and LibMTL divide by the baseline alone)."""


class ExcessMTL(GradientMethod):
    """Weights on the simplex, moved towards the tasks of largest excess risk.

    Each step adds the squared task gradients to per-task accumulators ``S_k`` (AdaGrad's
    diagonal curvature estimate, the paper's Equation 7) and estimates the excess risk of task
    k as ``E_k = g_k^T H_k^-1 g_k`` with ``H_k = diag(sqrt(S_k + 1e-7))`` (Equation 6). The
    first ``warmup_steps`` steps keep uniform weights and set the baseline ``E_k^0`` to the
    mean of their estimates; afterwards each step divides by it (``E_k / (E_k^0 + 1e-7)``,
    Section 3.2's scale processing) and takes the exponentiated-gradient step
    ``w_k <- w_k exp(eta E_k) / sum_j w_j exp(eta E_j)`` (Equation 9, in log space so that a
    huge estimate saturates the weights instead of overflowing). The update is ``w @ G``.

    Scale (MEAN): the weights start at 1/K and stay on the simplex, as in the paper and
    torchjd's ``ExcessMTL``. The official code and LibMTL start at 1 and renormalize to sum K
    (Scale SUM, a K times larger update with SGD). ``warmup_steps = 1`` (default) is the
    official code's and LibMTL's first step (its estimates are the baseline, the weights stay
    uniform) and torchjd's ``n_warmup_steps=1``; the paper's appendix collects three epochs.
    torchjd's default ``n_warmup_steps=0`` also steps on the first call with the raw (not
    baseline-divided) estimates, which depend on the gradients' scale; it has no equivalent
    here. The accumulators (K x N, in the gradients' dtype and device) and the weights are in
    ``state_dict()``. With ``space="features"``, the statistics use the representation's
    gradient summed over the batch (dimension 0), as LibMTL's ``rep_grad`` mode does, so
    their size does not depend on the batch size.

    Args:
        n_tasks: the number of tasks.
        robust_step_size: ``eta``, the step of the weight update (1.0, torchjd's default;
            LibMTL's examples pass it on the command line).
        warmup_steps: the steps whose mean estimate is the baseline (default 1, see above).
        space: ``"params"`` (default) or ``"features"``.
    """

    display_name = "ExcessMTL"
    scale = Scale.MEAN

    def __init__(
        self,
        n_tasks: int,
        robust_step_size: float = 1.0,
        warmup_steps: int = 1,
        space: str | None = None,
    ) -> None:
        super().__init__(n_tasks, space)
        if not robust_step_size > 0.0:
            raise ValueError(f"robust_step_size must be > 0, got {robust_step_size}")
        if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 1:
            raise ValueError(f"warmup_steps must be an integer >= 1, got {warmup_steps!r}")
        self.robust_step_size = float(robust_step_size)
        self.warmup_steps = warmup_steps
        self.weights = torch.full((n_tasks,), 1.0 / n_tasks, dtype=torch.float64)
        self.squares: Tensor | None = None
        self.risk_sum = torch.zeros(n_tasks, dtype=torch.float64)
        self.steps = 0

    def combine(self, grads: TaskGradients, losses: Tensor, features: Tensor | None) -> Aggregation:
        """:meth:`aggregate`, with the statistics of a representation summed over its batch."""
        matrix = grads.matrix
        if self.space is Space.FEATURES and features is not None and features.dim() > 1:
            stats = matrix.view(matrix.shape[0], features.shape[0], -1).sum(dim=1)
            return self._step(matrix, stats)
        return self._step(matrix, matrix)

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        return self._step(matrix, matrix)

    def excess_risks(self, stats: Tensor) -> Tensor:
        """Adds ``stats ** 2`` to the accumulators and returns the (K,) float64 estimates
        ``sum_n stats_kn^2 / sqrt(S_kn + 1e-7)``."""
        squared = stats.detach() ** 2
        if self.squares is None or self.squares.shape != squared.shape:
            if self.squares is not None:
                raise ValueError(
                    f"ExcessMTL's accumulators have shape {tuple(self.squares.shape)}, the "
                    f"gradients {tuple(squared.shape)}: the shared parameters changed"
                )
            self.squares = torch.zeros_like(squared)
        self.squares = self.squares.to(squared)
        self.squares.add_(squared)
        risks = (squared / torch.sqrt(self.squares + EPS)).sum(dim=1)
        return risks.to(device="cpu", dtype=torch.float64)

    def _step(self, matrix: Tensor, stats: Tensor) -> Aggregation:
        self._check_rows(matrix)
        risks = self.excess_risks(stats)
        self.steps += 1
        if self.steps <= self.warmup_steps:
            self.risk_sum = self.risk_sum + risks
        else:
            scaled = risks / (self.risk_sum / self.warmup_steps + EPS)
            logits = torch.log(self.weights) + self.robust_step_size * scaled
            self.weights = torch.softmax(logits, dim=0)
        weights = self.weights.to(device=matrix.device, dtype=matrix.dtype)
        return Aggregation(weights @ matrix, weights, {"max_excess_risk": float(risks.max())})

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "weights": self.weights.clone(),
            "squares": None if self.squares is None else self.squares.clone(),
            "risk_sum": self.risk_sum.clone(),
            "steps": self.steps,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.weights = state["weights"].to(torch.float64).clone()
        squares = state["squares"]
        self.squares = None if squares is None else squares.clone()
        self.risk_sum = state["risk_sum"].to(torch.float64).clone()
        self.steps = int(state["steps"])
