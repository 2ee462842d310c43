"""Auto-Lambda: task weights meta-learned on a validation batch through a virtual step.

Liu, Johns, Davison, "Auto-Lambda: Disentangling Dynamic Task Relationships", TMLR 2022
(arXiv 2202.03091). Reference code: github.com/lorenmt/auto-lambda (``auto_lambda.py``), as
adapted by the main study (all tasks primary, meta learning rate relative to the model's).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from smto.capabilities import ValidationStep
from smto.method import LossMethod, RunContext, Scale

FD_SCALE = 0.01
"""The finite-difference step is ``0.01 / |d|`` (the original's ``compute_hessian``)."""

BUFFER_MODES: tuple[str, ...] = ("original", "restore")


class AutoLambda(LossMethod, ValidationStep):
    """Minimizes sum_k w_k L_k with weights w learned to lower the validation loss after one
    virtual SGD step.

    Before each training step, :meth:`validation_step` (the trainer calls it with the
    training batch, the next batch of a cycled validation loader and the model's current
    learning rate ``lr``):

    1. virtual step: ``theta' = theta - lr (grad_theta sum_k w_k L_k(theta) + wd theta)`` on
       the training batch (``wd`` = ``weight_decay``), over every trainable parameter of the
       model;
    2. ``d = grad_theta' sum_k L_k^val(theta')`` on the validation batch (all tasks primary);
    3. finite differences with ``eps = 0.01 / |d|``: ``hess_k = (L_k(theta + eps d) -
       L_k(theta - eps d)) / (2 eps)`` on the training batch (the original takes
       ``grad_w sum_k w_k L_k``, which is the vector of losses);
    4. ``w.grad = -lr hess`` (the first-order hypergradient d L^val(theta') / d w) and one
       step of the method's own Adam over w.

    :meth:`hypergradient` computes steps 1-4's ``-lr hess`` without updating w.
    The virtual step and the perturbations are written into the model's parameters in place
    and the parameters are restored bit for bit afterwards (the original keeps a deep copy of
    the model instead); ``.grad`` of the model is never touched (``torch.autograd.grad``). If
    ``d`` is zero or not finite the hypergradient is taken as zero (the original would
    produce NaN).

    The four forward passes run in the model's current mode (the trainer's: train, so dropout
    is active and each pass draws its own masks from torch's global RNG, as in the original,
    which makes the finite difference noisy with dropout).

    Buffers (BatchNorm running statistics): with ``buffers="original"`` the model's buffers
    see what the original's model sees: the training batch at theta, theta + eps d and
    theta - eps d (three extra updates per step), but not the validation forward at theta'
    (which the original runs on its copy); ``"restore"`` leaves every buffer exactly as
    found.

    Meta learning rate: ``lr_relation x lr`` with the ``lr`` of the FIRST call, then fixed
    (the study's code builds the meta Adam with ``lr_relation * args.lr``, the initial model
    learning rate, and never schedules it). The original's absolute default was 1e-4 (with
    model lr 0.1, SGD); the default ``lr_relation = 0.1`` gives 1e-4 at the study's most
    common model lr 1e-3. Study grid: {1000, 100, 10, 1, 0.1, 0.01, 0.001}.

    The weights ``meta_weights`` (init ``init_weight``) are a buffer, not a parameter: only
    the internal Adam trains them; its state is in ``state_dict()``. They are unconstrained
    (no normalization, no clamping), as in the original. Reported weights: w (Scale CUSTOM:
    they start at ``init_weight`` each, sum ``K x init_weight``, and follow the meta
    gradient).

    Differences from the original: the virtual step has no momentum term (the original adds
    the SGD momentum buffer when the model optimizer has one; with Adam, the study's
    optimizer, it adds nothing), and the weight decay is this method's ``weight_decay``
    hyperparameter (the original reads the model optimizer's; set it to the same value);
    parameters are restored exactly (the original's ``+eps d, -2 eps d, +eps d`` leaves
    rounding residue); auxiliary-learning mode (non-primary tasks) is not offered.

    Args:
        n_tasks: the number of tasks.
        init_weight: the initial weight of every task (> 0; 0.1 in the original and study).
        lr_relation: meta learning rate as a multiple of the model's first learning rate.
        weight_decay: the model optimizer's L2 weight decay, used in the virtual step.
        buffers: ``"original"`` or ``"restore"`` (see above).
    """

    display_name = "Auto-Lambda"
    scale = Scale.CUSTOM

    @classmethod
    def defaults_from(cls, context: RunContext) -> dict[str, Any]:
        """The virtual step's weight decay: the run's."""
        if context.weight_decay is None:
            return {}
        return {"weight_decay": context.weight_decay}

    def __init__(
        self,
        n_tasks: int,
        init_weight: float = 0.1,
        lr_relation: float = 0.1,
        weight_decay: float = 0.0,
        buffers: str = "original",
    ) -> None:
        super().__init__(n_tasks)
        for name, value, minimum in (
            ("init_weight", init_weight, None),
            ("lr_relation", lr_relation, None),
            ("weight_decay", weight_decay, 0.0),
        ):
            valid = isinstance(value, (int, float)) and not isinstance(value, bool)
            if (
                not valid
                or not math.isfinite(value)
                or (value < minimum if minimum is not None else value <= 0)
            ):
                bound = ">= 0" if minimum is not None else "> 0"
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        if buffers not in BUFFER_MODES:
            raise ValueError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
        self.init_weight = float(init_weight)
        self.lr_relation = float(lr_relation)
        self.weight_decay = float(weight_decay)
        self.buffers = buffers
        self.register_buffer("meta_weights", torch.full((n_tasks,), float(init_weight)))
        self._adam: torch.optim.Adam | None = None
        self._meta_lr: float | None = None

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        weights = self.meta_weights.to(device=losses.device, dtype=losses.dtype)
        return weights * losses, weights.clone()

    def optimizer(self) -> torch.optim.Adam | None:
        """The internal Adam over the meta weights (None before the first
        :meth:`validation_step`; rebuilt, keeping its state, after ``.to()``)."""
        adam = self._adam
        if adam is not None and adam.param_groups[0]["params"][0] is not self.meta_weights:
            fresh = torch.optim.Adam([self.meta_weights], lr=adam.param_groups[0]["lr"])
            fresh.load_state_dict(adam.state_dict())
            self._adam = adam = fresh
        return adam

    def validation_step(
        self,
        task_losses: Callable[[Any], Tensor],
        model: nn.Module,
        train_batch: Any,
        val_batch: Any,
        lr: float,
    ) -> None:
        """Updates the meta weights with one step of the internal Adam along
        :meth:`hypergradient`; leaves the model's parameters and ``.grad`` unchanged."""
        hypergrad = self.hypergradient(task_losses, model, train_batch, val_batch, lr)
        if self._meta_lr is None:
            self._meta_lr = self.lr_relation * float(lr)
        adam = self.optimizer()
        if adam is None:
            adam = self._adam = torch.optim.Adam([self.meta_weights], lr=self._meta_lr)
        self.meta_weights.grad = hypergrad.to(self.meta_weights)
        adam.step()
        self.meta_weights.grad = None

    def hypergradient(
        self,
        task_losses: Callable[[Any], Tensor],
        model: nn.Module,
        train_batch: Any,
        val_batch: Any,
        lr: float,
    ) -> Tensor:
        """The finite-difference meta gradient ``-lr hess`` (steps 1-4 of the class
        docstring), without updating the weights. The model's parameters are restored bit
        for bit, its ``.grad`` is untouched, its buffers follow ``buffers``."""
        if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [p.detach().clone() for p in params]
        buffers = list(model.buffers())
        start_buffers = [b.clone() for b in buffers] if self.buffers == "restore" else None
        try:
            return self._hypergradient(
                task_losses, params, saved, buffers, train_batch, val_batch, float(lr)
            )
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
                if start_buffers is not None:
                    for b, s in zip(buffers, start_buffers):
                        b.copy_(s)

    def _hypergradient(
        self,
        task_losses: Callable[[Any], Tensor],
        params: list[Tensor],
        saved: list[Tensor],
        buffers: list[Tensor],
        train_batch: Any,
        val_batch: Any,
        lr: float,
    ) -> Tensor:
        """-lr (grad L_k(theta) . d), with d the validation gradient at the virtual step."""
        losses = self._losses(task_losses, train_batch)
        weights = self.meta_weights.detach().to(device=losses.device, dtype=losses.dtype)
        grads = torch.autograd.grad(
            (weights * losses).sum(), params, allow_unused=True, materialize_grads=True
        )
        with torch.no_grad():
            for p, s, g in zip(params, saved, grads):
                p.copy_(s - lr * (g + self.weight_decay * s))
        kept = [b.clone() for b in buffers] if self.buffers == "original" else None
        val_loss = self._losses(task_losses, val_batch).sum()
        direction = torch.autograd.grad(val_loss, params, allow_unused=True, materialize_grads=True)
        if kept is not None:
            with torch.no_grad():
                for b, s in zip(buffers, kept):
                    b.copy_(s)
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(d) for d in direction])
        )
        value = float(norm)  # one host synchronization for both checks
        if not math.isfinite(value) or value == 0.0:
            return torch.zeros_like(losses.detach())
        eps = FD_SCALE / norm
        with torch.no_grad():
            for p, s, d in zip(params, saved, direction):
                p.copy_(s + eps * d)
            plus = self._losses(task_losses, train_batch)
            for p, s, d in zip(params, saved, direction):
                p.copy_(s - eps * d)
            minus = self._losses(task_losses, train_batch)
        hessian = (plus - minus) / (2.0 * eps.to(plus))
        return -lr * hessian

    def _losses(self, task_losses: Callable[[Any], Tensor], batch: Any) -> Tensor:
        losses = task_losses(batch)
        if not isinstance(losses, Tensor) or losses.shape != (self.n_tasks,):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"task_losses(batch) must return the {self.n_tasks} task losses as a tensor of "
                f"shape ({self.n_tasks},), got {shape}"
            )
        return losses

    def get_extra_state(self) -> dict[str, Any]:
        adam = self.optimizer()
        return {
            "adam": None if adam is None else adam.state_dict(),
            "meta_lr": self._meta_lr,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._meta_lr = state["meta_lr"]
        self._adam = None
        if state["adam"] is not None:
            adam = torch.optim.Adam([self.meta_weights], lr=self._meta_lr)
            adam.load_state_dict(state["adam"])
            self._adam = adam
