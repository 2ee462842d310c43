"""Peer implementations for the step benchmark: torchjd's aggregator of the same method.

Each peer is wrapped as a gradient method so that it runs in exactly the step smto's method
runs in (same model, batch, per-task Jacobian, heads and optimizer): the timings then differ
only by the aggregation. Only methods with a torchjd counterpart have a peer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from smto._optional import require
from smto.method import Aggregation, GradientMethod, Scale

TORCHJD: dict[str, Callable[[Any, int], Any]] = {
    "upgrad": lambda a, k: a.UPGrad(),
    "dualproj": lambda a, k: a.DualProj(),
    "fairgrad": lambda a, k: a.FairGrad(alpha=1.0),
    "krum": lambda a, k: a.Krum(n_byzantine=0),
    "trimmed_mean": lambda a, k: a.TrimmedMean(trim_number=1 if k >= 3 else 0),
    "gradvac": lambda a, k: a.GradVac(),
    "mgda": lambda a, k: a.MGDA(),
    "cagrad": lambda a, k: a.CAGrad(c=0.5),
    "nash_mtl": lambda a, k: a.NashMTL(n_tasks=k),
    "pcgrad": lambda a, k: a.PCGrad(),
    "imtl_g": lambda a, k: a.IMTLG(),
    "aligned_mtl": lambda a, k: a.AlignedMTL(),
    "config": lambda a, k: a.ConFIG(),
    "pcd": lambda a, k: a.PCD(),  # the first task primary: smto's default primary=0
}
"""smto's name -> torchjd's aggregator with the same defaults (where torchjd has them)."""
MIN_TASKS = {"krum": 3}
"""torchjd's Krum needs n_byzantine + 3 tasks (smto's falls back to the mean below)."""


def has_peer(name: str, n_tasks: int) -> bool:
    """Whether torchjd has method ``name`` and runs it at ``n_tasks`` tasks."""
    return name in TORCHJD and n_tasks >= MIN_TASKS.get(name, 1)


class TorchjdPeer(GradientMethod):
    """torchjd's aggregator of method ``name`` on the K x N task-gradient matrix."""

    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, name: str) -> None:
        super().__init__(n_tasks)
        aggregation = require("torchjd.aggregation", "test", "the torchjd peers of bench step")
        self.aggregator = TORCHJD[name](aggregation, n_tasks)
        self.display_name = f"torchjd {type(self.aggregator).__name__}"

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        direction = self.aggregator(matrix)
        weights = torch.full((self.n_tasks,), float("nan"), device=matrix.device)
        return Aggregation(direction, weights)
