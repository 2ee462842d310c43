"""A small synthetic two-task regression problem: no data to download, seconds to train.

Two targets of an 8-dimensional Gaussian input that share a direction, partly conflict and
live on different scales (the second is about 100 times the first in squared error), which
is where multi-task methods differ. Used by ``smto demo`` and by the engine's tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from numbers import Integral
from typing import Any

import torch
from torch import Tensor, nn

from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel
from smto.problems.base import (
    SPLITS,
    Batch,
    Meter,
    Metric,
    Problem,
    check_split_counts,
    index_batches,
)

MSE = Metric("mse", higher_is_better=False)


def toy_data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` inputs (n, 8) and their two targets (n, 2), drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    direction = torch.linspace(-1.0, 1.0, 8)
    y1 = torch.sin(x @ direction)
    y2 = 10.0 * torch.tanh(x[:, :4].sum(1) - x @ direction)
    return x, torch.stack([y1, y2], dim=1)


class _Squeeze(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.squeeze(-1)


class ToyRegression(Problem):
    """Tasks T1 and T2 (MSE losses and metrics) with train/val/test sets of the given sizes."""

    name = "toy_regression"
    all_tasks = ("T1", "T2")

    def __init__(
        self,
        tasks: Sequence[str] | str = "T1_T2",
        sizes: Sequence[int] = (512, 256, 1024),
        seed: int = 1,
    ) -> None:
        super().__init__(tasks)
        self.check_options(sizes=sizes, seed=seed)
        self._data = {
            split: toy_data(int(n), seed + i) for i, (split, n) in enumerate(zip(SPLITS, sizes))
        }
        self._columns = [self.all_tasks.index(t) for t in self.tasks]

    @classmethod
    def check_options(cls, **options: Any) -> None:
        values = cls.options_with_defaults(options)
        check_split_counts("sizes", values["sizes"])
        seed = values["seed"]
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise ConfigError(f"seed must be an integer, got {seed!r}")

    def split_size(self, split: str) -> int:
        return len(self._data[split][0])

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        x, y = self._data[split]
        for idx in index_batches(len(x), batch_size, generator):
            targets = {t: y[idx, c] for t, c in zip(self.tasks, self._columns)}
            yield Batch(x[idx], targets, len(idx))

    def make_model(self, dropout: float = 0.0) -> SharedEncoderModel:
        encoder = nn.Sequential(
            nn.Linear(8, 32), nn.Tanh(), nn.Dropout(dropout), nn.Linear(32, 16), nn.Tanh()
        )
        heads = {t: nn.Sequential(nn.Linear(16, 1), _Squeeze()) for t in self.tasks}
        return SharedEncoderModel(encoder, heads)

    def losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([((outputs[t] - targets[t]) ** 2).mean() for t in self.tasks])

    @classmethod
    def task_metrics(cls, task: str) -> tuple[Metric, ...]:
        return (MSE,)

    def loss_types(self) -> tuple[str, ...]:
        return ("mse",) * self.n_tasks

    def new_meter(self) -> Meter:
        return _MSEMeter(self.tasks)


class _MSEMeter(Meter):
    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = tuple(tasks)
        self.sums = {t: 0.0 for t in self.tasks}
        self.count = 0

    def update(self, outputs: Mapping[str, Tensor], batch: Batch) -> None:
        for t in self.tasks:
            self.sums[t] += float(((outputs[t] - batch.targets[t]) ** 2).sum())
        self.count += batch.size

    def compute(self) -> dict[str, dict[str, float]]:
        return {t: {"mse": self.sums[t] / self.count} for t in self.tasks}
