"""A model's metrics and mean losses over one split of its problem (eval mode, no gradients).

What the engine computes at every epoch for validation (and test at a best epoch), and what
:mod:`smto.evaluation.robustness` computes on corrupted test sets.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from smto.models.base import SharedEncoderModel
from smto.problems import Problem

Metrics = dict[str, dict[str, float]]


def evaluate_split(
    model: SharedEncoderModel,
    problem: Problem,
    split: str,
    batch_size: int,
    device: torch.device | str,
    head_inputs: Callable[[Tensor], list[Tensor]] | None = None,
) -> tuple[Metrics, dict[str, float]]:
    """The problem's metrics of ``split`` (by task and metric) and each task's mean loss,
    with the model in eval mode (left so) and no gradients; ``head_inputs`` as
    :meth:`SharedEncoderModel.forward` takes it (RotoGrad's rotations)."""
    model.eval()
    meter = problem.new_meter()
    loss_sum = torch.zeros(problem.n_tasks, device=device)
    count = 0
    with torch.no_grad():
        for batch in problem.batches(split, batch_size):
            batch = batch.to(device)
            _, outputs = model(batch.inputs, head_inputs=head_inputs)
            loss_sum += problem.losses(outputs, batch.targets) * batch.size
            count += batch.size
            meter.update(outputs, batch)
    losses = (loss_sum / max(count, 1)).tolist()
    return meter.compute(), dict(zip(problem.tasks, losses))
