"""FAMO: Fast Adaptive Multitask Optimization.

Liu, Liu, Ye, Stone, Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
(arXiv 2306.03792).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor

from smto.capabilities import PostStep
from smto.method import LossMethod, Scale

EPS = 1e-8
"""Added to L - L_min before the log (as in the original)."""


class FAMO(LossMethod, PostStep):
    """Minimizes sum_k log(D_k) z_k / c: D = L - L_min + 1e-8, z = softmax(w), c = sum z/D.

    c is a constant (no gradient), as in the original.

    The task logits ``w`` (init 0) are a buffer, not a parameter: they are trained by the
    method's own Adam (``logit_lr``, weight decay ``gamma``), never by the user's optimizer.
    After ``optimizer.step()``, forward the same batch again and call
    :meth:`post_step` with its losses; the logits then move along the gradient
    J_softmax(w)^T delta with delta = log D_before - log D_after, so a task whose loss
    decreased less than the others gains weight.

    ``min_losses`` (L_min, default 0 for every task) must stay below the losses: D must be
    positive. The logits, the pending losses of the last step and the state of the internal
    Adam are in ``state_dict()``.

    Scale (MEAN): the effective weights z_k / (c D_k) = d objective / d L_k sum to 1. (The
    main study's code logs z / (c (L - L_min) + 1e-8), which differs by O(1e-8).) The
    original code also carries a gradient-clipping ``max_norm``; clipping the model's
    gradients is left to the trainer, not to this method.
    """

    display_name = "FAMO"
    scale = Scale.MEAN

    def __init__(
        self,
        n_tasks: int,
        logit_lr: float = 0.025,
        gamma: float = 0.001,
        min_losses: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__(n_tasks)
        if not isinstance(logit_lr, (int, float)) or not math.isfinite(logit_lr) or logit_lr <= 0:
            raise ValueError(f"logit_lr must be a finite number > 0, got {logit_lr!r}")
        if not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma < 0:
            raise ValueError(
                f"gamma (logit weight decay) must be a finite number >= 0, got {gamma!r}"
            )
        if min_losses is None:
            minimums = (0.0,) * n_tasks
        elif not isinstance(min_losses, (tuple, list)):
            raise ValueError(
                f"min_losses must be a tuple of {n_tasks} numbers or None, got {min_losses!r}"
            )
        else:
            try:
                minimums = tuple(float(m) for m in min_losses)
            except (TypeError, ValueError):
                raise ValueError(f"min_losses must be numbers, got {min_losses!r}") from None
        if len(minimums) != n_tasks or not all(math.isfinite(m) for m in minimums):
            raise ValueError(
                f"min_losses must have {n_tasks} finite entries (one per task), got {minimums!r}"
            )
        self.logit_lr = float(logit_lr)
        self.gamma = float(gamma)
        self.min_losses = minimums
        self.register_buffer("logits", torch.zeros(n_tasks))
        self.register_buffer(
            "_min_losses", torch.tensor(minimums, dtype=torch.float64), persistent=False
        )
        self._adam: torch.optim.Adam | None = None
        self._pending: Tensor | None = None

    def _gaps(self, losses: Tensor) -> Tensor:
        """D = L - L_min + 1e-8."""
        return losses - self._min_losses.to(losses.dtype) + EPS

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        z = torch.softmax(self.logits.to(losses.dtype), dim=0)
        gaps = self._gaps(losses)
        c = (z / gaps.detach()).sum()
        self._pending = losses.detach().clone()
        return gaps.log() * z / c, z / (c * gaps.detach())

    def optimizer(self) -> torch.optim.Adam:
        """The internal Adam over the logits (rebuilt, keeping its state, after ``.to()``)."""
        adam = self._adam
        if adam is None or adam.param_groups[0]["params"][0] is not self.logits:
            fresh = torch.optim.Adam([self.logits], lr=self.logit_lr, weight_decay=self.gamma)
            if adam is not None:
                fresh.load_state_dict(adam.state_dict())
            self._adam = adam = fresh
        return adam

    def post_step(self, losses: Tensor) -> None:
        """Updates the logits from the losses of the same batch after the model step."""
        if self._pending is None:
            raise RuntimeError(
                "FAMO.post_step() needs the losses of a preceding backward(): call "
                "method.backward(losses, ...), then optimizer.step(), then post_step with the "
                "same batch's new losses (once per backward)"
            )
        new = losses.detach()
        if new.shape != self._pending.shape:
            raise ValueError(
                f"post_step expects {self.n_tasks} losses (shape {tuple(self._pending.shape)}), "
                f"got shape {tuple(new.shape)}"
            )
        before = self._pending.to(new.device)
        delta = self._gaps(before).log() - self._gaps(new.to(before.dtype)).log()
        w = self.logits.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(
                torch.softmax(w, dim=0), w, grad_outputs=delta.to(w.dtype)
            )
        adam = self.optimizer()
        self.logits.grad = grad
        adam.step()
        self.logits.grad = None
        self._pending = None

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "adam": self.optimizer().state_dict(),
            "pending": None if self._pending is None else self._pending.clone(),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        adam = torch.optim.Adam([self.logits], lr=self.logit_lr, weight_decay=self.gamma)
        adam.load_state_dict(copy.deepcopy(state["adam"]))  # not shared with the source
        for group in adam.param_groups:
            group["lr"] = self.logit_lr
            group["weight_decay"] = self.gamma
        self._adam = adam
        pending = state["pending"]
        self._pending = None if pending is None else pending.clone()
