"""Auto-Lambda in a loop of your own: a validation batch each step (``smto.ValidationStep``).

Before each step's forward pass, Auto-Lambda takes a virtual step of the model on the
training batch and moves its task weights to lower the loss of a validation batch after it;
the loop passes the model, a function from a batch to the task losses, both batches and the
optimizer's current learning rate. The model's parameters and ``.grad`` are left as found.
Run: ``python examples/auto_lambda_validation.py``.
"""

from __future__ import annotations

from functools import partial

import torch
from foreign_loop import (
    N_SAMPLES,
    Batch,
    Run,
    TwoTaskNet,
    batches,
    make_data,
    task_losses,
    total_loss,
)

import smto

N_VALIDATION = 128


def split(data: Batch, n_validation: int) -> tuple[Batch, Batch]:
    """The training and the validation part of ``data`` (the last ``n_validation`` samples)."""
    x, y1, y2 = data
    cut = len(x) - n_validation
    return (x[:cut], y1[:cut], y2[:cut]), (x[cut:], y1[cut:], y2[cut:])


def main(steps: int = 300, seed: int = 0) -> Run:
    """Trains a :class:`TwoTaskNet` with Auto-Lambda for ``steps`` batches."""
    torch.manual_seed(seed)
    model = TwoTaskNet()
    train, validation = split(make_data(N_SAMPLES + N_VALIDATION, seed), N_VALIDATION)
    losses_of = partial(task_losses, model)
    start = total_loss(losses_of, train)
    # The virtual step needs the optimizer's weight decay (none here): the context gives it.
    method = smto.create("auto_lambda", n_tasks=2, context=smto.RunContext(weight_decay=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    weights = []
    pairs = zip(batches(train, steps, seed), batches(validation, steps, seed + 1))
    for batch, val_batch in pairs:
        lr = optimizer.param_groups[0]["lr"]
        method.validation_step(losses_of, model, batch, val_batch, lr)
        losses = losses_of(batch)
        optimizer.zero_grad()
        result = method.backward(losses, model.encoder.parameters())
        optimizer.step()
        weights.append(result.weights)
    return Run(method, optimizer, start, total_loss(losses_of, train), torch.stack(weights))


if __name__ == "__main__":
    print(main().summary())
