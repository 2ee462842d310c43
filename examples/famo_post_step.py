"""FAMO in a loop of your own: the post-step (``smto.PostStep``).

FAMO learns its task logits from how much each loss fell during the model's step, so after
``optimizer.step()`` the loop forwards the same batch again, without gradients, and hands
those losses to ``method.post_step``. The logits are FAMO's own buffer, trained by its own
Adam: the model's optimizer gets the model's parameters only. Run:
``python examples/famo_post_step.py``.
"""

from __future__ import annotations

from functools import partial

import torch
from foreign_loop import N_SAMPLES, Run, TwoTaskNet, batches, make_data, task_losses, total_loss

import smto


def main(steps: int = 300, seed: int = 0) -> Run:
    """Trains a :class:`TwoTaskNet` with FAMO for ``steps`` batches."""
    torch.manual_seed(seed)
    model = TwoTaskNet()
    data = make_data(N_SAMPLES, seed)
    losses_of = partial(task_losses, model)
    start = total_loss(losses_of, data)
    method = smto.create("famo", n_tasks=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    weights = []
    for batch in batches(data, steps, seed):
        losses = losses_of(batch)
        optimizer.zero_grad()
        result = method.backward(losses, model.encoder.parameters())
        optimizer.step()
        with torch.no_grad():
            method.post_step(losses_of(batch))  # the same batch, after the step
        weights.append(result.weights)
    return Run(method, optimizer, start, total_loss(losses_of, data), torch.stack(weights))


if __name__ == "__main__":
    run = main()
    print(run.summary())
    print(f"FAMO's task logits: {run.method.logits.tolist()}")
