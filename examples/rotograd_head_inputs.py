"""RotoGrad in a loop of your own: per-task head inputs and parameter groups
(``smto.HeadInputs``).

RotoGrad rotates the shared representation once per task: head k takes
``method.head_inputs(z)[k]`` instead of ``z``, and ``backward`` gets ``z`` itself. Its
rotations are trainable parameters with a learning rate of their own, which
``method.parameter_groups(lr)`` gives the optimizer. The number of rotated features comes
from the representation's size through ``smto.RunContext``. Run:
``python examples/rotograd_head_inputs.py``.
"""

from __future__ import annotations

from functools import partial

import torch
from foreign_loop import (
    N_SAMPLES,
    REPRESENTATION,
    Batch,
    Run,
    TwoTaskNet,
    batches,
    loss1,
    loss2,
    make_data,
    total_loss,
)
from torch import Tensor

import smto

LR = 1e-2


def rotated_forward(
    model: TwoTaskNet, method: smto.HeadInputs, batch: Batch
) -> tuple[Tensor, Tensor]:
    """The representation z and the (2,) task losses, head k taking ``head_inputs(z)[k]``."""
    x, y1, y2 = batch
    z = model.encoder(x)
    inputs = method.head_inputs(z)
    return z, torch.stack([loss1(model.head1(inputs[0]), y1), loss2(model.head2(inputs[1]), y2)])


def rotated_losses(model: TwoTaskNet, method: smto.HeadInputs, batch: Batch) -> Tensor:
    """The task losses of :func:`rotated_forward` alone."""
    return rotated_forward(model, method, batch)[1]


def main(steps: int = 300, seed: int = 0) -> Run:
    """Trains a :class:`TwoTaskNet` with RotoGrad for ``steps`` batches."""
    torch.manual_seed(seed)
    model = TwoTaskNet()
    data = make_data(N_SAMPLES, seed)
    context = smto.RunContext(representation_size=REPRESENTATION)
    # The rotations learn at lr_relation x the model's learning rate, in their own group.
    method = smto.create("rotograd", n_tasks=2, context=context, lr_relation=0.5)
    optimizer = torch.optim.Adam(
        [{"params": model.parameters()}, *method.parameter_groups(LR)], lr=LR
    )
    start = total_loss(partial(rotated_losses, model, method), data)
    weights = []
    for batch in batches(data, steps, seed):
        z, losses = rotated_forward(model, method, batch)
        optimizer.zero_grad()
        result = method.backward(losses, features=z)  # works on z: no shared_params needed
        optimizer.step()
        weights.append(result.weights)
    end = total_loss(partial(rotated_losses, model, method), data)
    return Run(method, optimizer, start, end, torch.stack(weights))


if __name__ == "__main__":
    print(main().summary())
