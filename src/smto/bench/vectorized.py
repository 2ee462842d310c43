"""``smto bench vectorized``: S runs trained as one vectorized model against S separate runs.

The same S configurations (seeds 0..S-1 of one method on Multi-MNIST) are trained by the
engine one after the other and by :func:`smto.train.vectorized.train_vectorized`, each in a
fresh temporary root; the throughput is epochs per second of all runs together (S x epochs
over the wall time, evaluation and checkpoints included), and the largest relative
difference between the two sets of recorded numbers is reported beside it.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from smto.problems import create_problem
from smto.train import RunConfig, RunRecord, train
from smto.train.vectorized import NotVectorized, train_vectorized


@dataclass(frozen=True)
class VectorizedTiming:
    """One method's throughput, separate and vectorized, and how far their numbers are."""

    method: str
    runs: int
    epochs: int
    separate_seconds: float
    vectorized_seconds: float
    worst_relative_difference: float
    vectorized: bool

    @property
    def speedup(self) -> float:
        """Vectorized throughput over separate throughput."""
        return self.separate_seconds / self.vectorized_seconds

    def format(self) -> str:
        """One line: throughputs (epochs per second, all runs), speedup, agreement."""
        total = self.runs * self.epochs
        mode = "vectorized" if self.vectorized else "fell back to separate runs"
        return (
            f"{self.method}: {self.runs} runs x {self.epochs} epochs: separate "
            f"{total / self.separate_seconds:.3f} epochs/s ({self.separate_seconds:.1f} s), "
            f"{mode} {total / self.vectorized_seconds:.3f} epochs/s "
            f"({self.vectorized_seconds:.1f} s), speedup {self.speedup:.2f}x; largest relative "
            f"difference of the recorded numbers {self.worst_relative_difference:.2g}"
        )


def vectorized_benchmark(
    methods: list[str],
    runs: int = 10,
    epochs: int = 1,
    batch_size: int = 256,
    limits: tuple[int, int, int] = (3000, 500, 500),
    tasks: str = "CL_RR",
    data_dir: str | os.PathLike[str] | None = None,
) -> list[VectorizedTiming]:
    """Times ``runs`` seeds of each method, separate (the engine) and vectorized."""
    options = {"limits": list(limits)}
    problem = create_problem("multi_mnist", tasks, data_dir=data_dir, **options)
    timings = []
    for method in methods:
        configs = [
            RunConfig(
                tasks=tasks,
                method=method,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                problem_options=options,
            )
            for seed in range(runs)
        ]
        with tempfile.TemporaryDirectory() as separate_root:
            started = time.perf_counter()
            separate = [train(c, separate_root, problem=problem) for c in configs]
            separate_seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as vectorized_root:
            started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NotVectorized)
                together = train_vectorized(configs, vectorized_root, problem=problem)
            vectorized_seconds = time.perf_counter() - started
        fell_back = any(issubclass(w.category, NotVectorized) for w in caught)
        timings.append(
            VectorizedTiming(
                method,
                runs,
                epochs,
                separate_seconds,
                vectorized_seconds,
                _worst_difference(separate, together),
                not fell_back,
            )
        )
    return timings


def _worst_difference(first: list[RunRecord], second: list[RunRecord]) -> float:
    """The largest relative difference between the records' numbers (timings left out)."""
    worst = 0.0
    for one, other in zip(first, second):
        for entry, twin in zip(one.history, other.history):
            for key, value in _numbers(entry).items():
                theirs = _numbers(twin).get(key, math.nan)
                scale = max(abs(value), 1e-12)
                worst = max(worst, abs(value - theirs) / scale)
    return worst


def _numbers(value: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(value, dict):
        found: dict[str, float] = {}
        for key, item in value.items():
            if "seconds" not in key:
                found.update(_numbers(item, f"{prefix}/{key}"))
        return found
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix: float(value)}
    return {}


def threads() -> int:
    """The threads torch uses here (reported with the timings)."""
    return torch.get_num_threads()
