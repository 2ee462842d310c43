"""What a few methods need of a training loop beyond ``backward``: opt-in capabilities.

A plain loop (forward, ``method.backward(losses, shared_params, features)``,
``optimizer.step()``) serves every method that has none of them. A trainer that serves more
checks ``isinstance(method, Capability)``:

* :class:`PostStep` (FAMO): after ``optimizer.step()``, forward the same batch again (no
  gradients) and call ``method.post_step(losses)``;
* :class:`HeadInputs` (RotoGrad): head k takes ``method.head_inputs(z)[k]``, and the
  optimizer gets ``method.parameter_groups(lr)`` for the method's own parameters;
* :class:`ValidationStep` (Auto-Lambda): before each step's forward pass,
  ``method.validation_step(task_losses, model, train_batch, val_batch, lr)`` with the next
  batch of a cycled validation loader;
* :class:`EpochEnd` (DWA): ``method.end_epoch()`` after each training epoch;
* :class:`TaskKPIs` (DTP with ``kpi="given"``): ``method.observe_kpis(kpis)`` with the
  per-task key performance indicators (accuracies, in (0, 1]) of the latest batch;
* :class:`HeadTargets` (BayesAgg-MTL): ``method.bind_heads(heads, loss_types)`` once before
  training, and ``method.observe_targets(targets)`` with the batch's targets before each
  ``backward``.

:func:`head_inputs_of` and :func:`optimizer_groups` serve the first two for any method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn


class PostStep(ABC):
    """The method updates its state from the same batch's losses after the model's step."""

    @abstractmethod
    def post_step(self, losses: Tensor) -> None:
        """Called after ``optimizer.step()`` with the losses of the same batch, re-forwarded
        without gradients."""


class HeadInputs(ABC):
    """Each head takes its own transform of the representation, and the method's own
    parameters need optimizer groups of their own."""

    @abstractmethod
    def head_inputs(self, features: Tensor) -> list[Tensor]:
        """The input of each task's head; feed ``head_inputs(z)[k]`` to head k."""

    @abstractmethod
    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups for the method's own parameters, given the model's
        learning rate."""


class ValidationStep(ABC):
    """The method learns from a validation batch before each training step."""

    @abstractmethod
    def validation_step(
        self,
        task_losses: Callable[[Any], Tensor],
        model: nn.Module,
        train_batch: Any,
        val_batch: Any,
        lr: float,
    ) -> None:
        """Called before each training step's forward pass. ``task_losses(batch)`` returns
        the model's per-task losses on a batch (with graph); ``lr`` is the model optimizer's
        current learning rate."""


class EpochEnd(ABC):
    """The method's weights depend on per-epoch statistics."""

    @abstractmethod
    def end_epoch(self) -> None:
        """Called at the end of each training epoch."""


class TaskKPIs(ABC):
    """The method weighs the tasks by key performance indicators that the loop measures."""

    @abstractmethod
    def observe_kpis(self, kpis: Tensor) -> None:
        """Called with the (K,) KPIs in (0, 1] (higher is better, e.g. each task's accuracy on
        the batch), before the ``backward`` they should weigh."""


class HeadTargets(ABC):
    """The method models each task's last linear layer on the representation (BayesAgg-MTL):
    it needs the heads, the tasks' loss kinds and every batch's targets."""

    @abstractmethod
    def bind_heads(self, heads: Sequence[nn.Module], loss_types: Sequence[str]) -> None:
        """Called once before training with the heads and the loss kinds ("mse",
        "classification", ...), in task order; raises :class:`~smto.errors.ConfigError` for
        heads or losses the method does not fit."""

    @abstractmethod
    def observe_targets(self, targets: Sequence[Tensor]) -> None:
        """Called before each ``backward`` with the batch's targets, one tensor per task in
        task order (what the task's loss compares its head's output with)."""


def head_inputs_of(method: object) -> Callable[[Tensor], list[Tensor]] | None:
    """``method.head_inputs`` for a :class:`HeadInputs` method, else ``None`` (every head takes
    the representation itself)."""
    return method.head_inputs if isinstance(method, HeadInputs) else None


def optimizer_groups(method: nn.Module, lr: float) -> list[dict[str, Any]]:
    """The optimizer parameter groups of a method's own trainable parameters (none for most
    methods; RotoGrad's carry their own learning rate)."""
    if isinstance(method, HeadInputs):
        return method.parameter_groups(lr)
    params = list(method.parameters())
    return [{"params": params, "lr": lr}] if params else []
