"""Timing of the methods' inner solvers."""

from __future__ import annotations

import statistics
import time

import torch


def nash_solve_time(n_tasks: int = 11, repeats: int = 200, dim: int = 1000) -> float:
    """Median seconds of one Nash-MTL weight solve on a random K x K Gram matrix."""
    from smto.solvers.nash import solve_nash

    g = torch.Generator().manual_seed(0)
    grads = torch.randn(n_tasks, dim, generator=g, dtype=torch.float64)
    gram = grads @ grads.T
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        solve_nash(gram)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
