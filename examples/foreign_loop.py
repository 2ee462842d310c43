"""A method of smto in a training loop of your own: the README's example as a whole script.

A shared encoder with two heads learns two synthetic tasks on the same inputs, a regression
and a 3-class classification. The loop between the README markers in :func:`main` is the
README's code block (a test keeps the two equal). The other examples import the model, data
and helpers from here. Run: ``python examples/foreign_loop.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

import smto

Batch = tuple[Tensor, Tensor, Tensor]
"""Inputs (B, 8), regression targets (B, 1) and class labels (B,)."""

N_FEATURES = 8
N_CLASSES = 3
REPRESENTATION = 16
"""The size of the shared representation z."""
N_SAMPLES = 512
BATCH_SIZE = 32

loss1 = nn.MSELoss()
loss2 = nn.CrossEntropyLoss()


class TwoTaskNet(nn.Module):
    """A shared encoder and one head per task (regression, classification)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(N_FEATURES, 32), nn.ReLU(), nn.Linear(32, REPRESENTATION), nn.ReLU()
        )
        self.head1 = nn.Linear(REPRESENTATION, 1)
        self.head2 = nn.Linear(REPRESENTATION, N_CLASSES)


@dataclass(frozen=True)
class Run:
    """What an example gives back: the method and optimizer it trained with, the total loss
    on the training data before and after, and each step's task weights (steps, K)."""

    method: smto.Method
    optimizer: torch.optim.Optimizer
    start_loss: float
    end_loss: float
    weights: Tensor

    def summary(self) -> str:
        """One line: the loss at the start and end, and the mean task weights."""
        mean = ", ".join(f"{w:.3f}" for w in self.weights.mean(dim=0).tolist())
        return (
            f"{self.method.display_name}: total loss {self.start_loss:.4f} -> "
            f"{self.end_loss:.4f} in {len(self.weights)} steps; mean task weights [{mean}]"
        )


def make_data(n: int, seed: int) -> Batch:
    """``n`` samples of two related tasks: the sine of one linear score of the inputs, and
    which of three other scores is largest (the scores are fixed by ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(N_FEATURES, 1 + N_CLASSES, generator=generator)
    x = torch.randn(n, N_FEATURES, generator=generator)
    s = x @ scores
    return x, torch.sin(s[:, :1]), s[:, 1:].argmax(dim=1)


def batches(data: Batch, steps: int, seed: int) -> Iterator[Batch]:
    """``steps`` random minibatches of ``data`` (a stand-in for a shuffling DataLoader)."""
    generator = torch.Generator().manual_seed(seed)
    x, y1, y2 = data
    for _ in range(steps):
        index = torch.randint(len(x), (BATCH_SIZE,), generator=generator)
        yield x[index], y1[index], y2[index]


def task_losses(model: TwoTaskNet, batch: Batch) -> Tensor:
    """The (2,) task losses of ``model`` on ``batch``, with their graph."""
    x, y1, y2 = batch
    z = model.encoder(x)
    return torch.stack([loss1(model.head1(z), y1), loss2(model.head2(z), y2)])


def total_loss(losses_of: Callable[[Batch], Tensor], data: Batch) -> float:
    """The sum of the task losses on ``data``, without gradients."""
    with torch.no_grad():
        return float(losses_of(data).sum())


def main(steps: int = 300, seed: int = 0, method_name: str = "nash_mtl") -> Run:
    """Trains a :class:`TwoTaskNet` with the method ``method_name`` (any method without a
    capability of :mod:`smto.capabilities`) for ``steps`` batches."""
    torch.manual_seed(seed)
    model = TwoTaskNet()
    data = make_data(N_SAMPLES, seed)
    loader = batches(data, steps, seed)
    start = total_loss(partial(task_losses, model), data)
    # --- README begin ---
    method = smto.create(method_name, n_tasks=2)  # e.g. "nash_mtl": any name of `smto methods`
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-2)
    weights = []  # each step's task weights

    for x, y1, y2 in loader:
        z = model.encoder(x)  # the shared representation
        losses = torch.stack([loss1(model.head1(z), y1), loss2(model.head2(z), y2)])
        optimizer.zero_grad()
        result = method.backward(losses, model.encoder.parameters(), z)  # writes .grad
        optimizer.step()
        weights.append(result.weights)
    # --- README end ---
    end = total_loss(partial(task_losses, model), data)
    return Run(method, optimizer, start, end, torch.stack(weights))


if __name__ == "__main__":
    print(main().summary())
