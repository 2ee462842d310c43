"""One training step of any method: the whole hot path in one function.

The engine calls it for every batch and the step benchmark times it, so what is measured is
what trains. The method's declarations are served generically: Auto-Lambda's validation
batch, RotoGrad's per-task head inputs, per-task gradients for per-task optimizers, FAMO's
second forward after the optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from smto.capabilities import HeadTargets, PostStep, ValidationStep, head_inputs_of
from smto.errors import NonFiniteError
from smto.method import LossMethod, Method, StepResult
from smto.models.base import SharedEncoderModel
from smto.optim import MTLIO

LossFn = Callable[[Mapping[str, Tensor], Any], Tensor]
"""Maps the heads' outputs and a batch's targets to the (K,) task losses."""


class Diverged(Exception):
    """A loss, an objective term or a task gradient became NaN or infinite (the method
    raised :class:`smto.errors.NonFiniteError`); the message names the tasks."""


def training_step(
    model: SharedEncoderModel,
    method: Method,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    inputs: Any,
    targets: Any,
    shared: Sequence[Tensor],
    *,
    per_task_grads: bool = False,
    validation: tuple[Any, Any] | None = None,
    task_names: Sequence[str] | None = None,
) -> tuple[Tensor, StepResult]:
    """Trains on one batch; returns the detached (K,) losses and the method's report.

    ``validation`` is the (inputs, targets) of a validation batch for
    :class:`~smto.capabilities.ValidationStep` methods. A non-finite loss, objective term or
    task gradient raises :class:`Diverged` before the optimizer step.
    """

    head_inputs = head_inputs_of(method)

    def task_losses(batch: tuple[Any, Any]) -> Tensor:
        _, outputs = model(batch[0], head_inputs=head_inputs)
        return loss_fn(outputs, batch[1])

    if isinstance(method, ValidationStep):
        if validation is None:
            raise ValueError(f"{method.display_name} needs a validation batch each step")
        lr = optimizer.param_groups[0]["lr"]
        method.validation_step(task_losses, model, (inputs, targets), validation, lr)
    if isinstance(optimizer, MTLIO):
        return _task_by_task(model, method, optimizer, loss_fn, inputs, targets, shared, task_names)
    optimizer.zero_grad(set_to_none=True)
    features, outputs = model(inputs, head_inputs=head_inputs)
    losses = loss_fn(outputs, targets)
    if per_task_grads and not isinstance(method, LossMethod):
        raise ValueError("per-task gradients need a loss-based method")
    if isinstance(method, HeadTargets):
        if task_names is None or not isinstance(targets, Mapping):
            raise ValueError(f"{method.display_name} needs the batch's targets by task name")
        method.observe_targets([targets[t] for t in task_names])
    try:
        if per_task_grads:
            result = method.backward(losses, shared, features, per_task_grads=True)
        else:
            result = method.backward(losses, shared, features)
    except NonFiniteError as error:
        raise Diverged(error.describe(task_names)) from None
    optimizer.step()
    if isinstance(method, PostStep):
        with torch.inference_mode():
            after = task_losses((inputs, targets))
        method.post_step(after)
    return losses.detach(), result


def _task_by_task(
    model: SharedEncoderModel,
    method: Method,
    optimizer: MTLIO,
    loss_fn: LossFn,
    inputs: Any,
    targets: Any,
    shared: Sequence[Tensor],
    task_names: Sequence[str] | None,
) -> tuple[Tensor, StepResult]:
    """MTL-IO's step (:class:`smto.optim.MTLIO`): for each task k in order, a forward pass
    at the current parameters and a step with task k's optimizer state on the gradient of
    the method's term k alone (for Unit. Scal. L_k / K: smto's objective is the mean, where
    the release steps on L_k). The method sees all K losses (its weights and checks are the
    usual ones); the other tasks' losses are detached. Returns the first pass's losses and
    the last pass's report."""
    if not isinstance(method, LossMethod):
        raise ValueError("MTL-IO needs a loss-based method (one objective term per task)")
    first: Tensor | None = None
    result: StepResult | None = None
    for k in range(method.n_tasks):
        optimizer.zero_grad(set_to_none=True)
        features, outputs = model(inputs)
        losses = loss_fn(outputs, targets)
        first = losses.detach() if first is None else first
        only_k = torch.zeros_like(losses, dtype=torch.bool)
        only_k[k] = True
        try:
            result = method.backward(torch.where(only_k, losses, losses.detach()), shared, features)
        except NonFiniteError as error:
            raise Diverged(error.describe(task_names)) from None
        optimizer.step(task=k)
    assert first is not None and result is not None
    return first, result
