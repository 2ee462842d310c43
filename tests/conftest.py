"""Shared test fixtures: a tiny two-head model with a shared encoder."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn


class TinyMTL(nn.Module):
    """A shared encoder (Linear-Tanh) and one linear head per task."""

    def __init__(self, n_tasks: int = 2, d_in: int = 4, d_hidden: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, d_hidden), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(d_hidden, 1) for _ in range(n_tasks))

    def forward(self, x: Tensor, head_inputs=None) -> tuple[Tensor, list[Tensor]]:
        z = self.encoder(x)
        inputs = head_inputs(z) if head_inputs is not None else [z] * len(self.heads)
        return z, [head(zk).squeeze(-1) for head, zk in zip(self.heads, inputs)]


def tiny_batch(n_tasks: int, seed: int = 0, n: int = 16, d_in: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    ys = [torch.randn(n, generator=g) * (k + 1) for k in range(n_tasks)]
    return x, ys


def tiny_losses(
    model: TinyMTL, x: Tensor, ys: list[Tensor], head_inputs=None
) -> tuple[Tensor, Tensor]:
    z, outs = model(x, head_inputs)
    return z, torch.stack([((o - y) ** 2).mean() for o, y in zip(outs, ys)])


@pytest.fixture
def tiny_model() -> TinyMTL:
    torch.manual_seed(0)
    return TinyMTL()
