"""The engine-overhead benchmark: one training epoch through the engine vs a bare loop.

Both train the same model on the same Multi-MNIST batches with Unit. Scal. and Adam; the bare
loop is the hand-written minimum (shuffle, slice, forward, mean loss, backward, step). The
engine adds what a run needs: the method interface, divergence checks, weight and loss
recording, validation, checkpointing and the record. The ratio is its overhead.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

from smto.problems import MultiMNIST
from smto.train import RunConfig, train


@dataclass
class EpochTiming:
    build_seconds: float
    engine_epoch_seconds: float
    engine_train_seconds: float
    bare_epoch_seconds: float
    samples: int

    def format(self) -> str:
        ratio = self.engine_train_seconds / self.bare_epoch_seconds
        whole = self.engine_epoch_seconds / self.bare_epoch_seconds
        return "\n".join(
            [
                f"Multi-MNIST build (70k composites, from IDX): {self.build_seconds:.2f} s",
                f"bare loop, one epoch ({self.samples} samples): {self.bare_epoch_seconds:.2f} s",
                f"engine, training part of the epoch: {self.engine_train_seconds:.2f} s "
                f"({ratio:.3f} x the bare loop)",
                f"engine, whole epoch (with validation, test at a new best, checkpoint): "
                f"{self.engine_epoch_seconds:.2f} s ({whole:.3f} x)",
            ]
        )


def bare_epoch(problem: MultiMNIST, batch_size: int, lr: float, seed: int = 0) -> float:
    """Seconds of one epoch of the hand-written loop."""
    torch.manual_seed(seed)
    model = problem.make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    for batch in problem.batches("train", batch_size, generator):
        optimizer.zero_grad(set_to_none=True)
        _, outputs = model(batch.inputs)
        problem.losses(outputs, batch.targets).mean().backward()
        optimizer.step()
    return time.perf_counter() - start


def epoch_benchmark(data_dir: str | None = None, repeats: int = 3) -> EpochTiming:
    """Builds Multi-MNIST without its cache, then times ``repeats`` epochs of each loop
    (alternating, medians)."""
    from smto.data.multi_mnist import load_multi_mnist

    start = time.perf_counter()
    load_multi_mnist(data_dir=data_dir, use_cache=False)
    build = time.perf_counter() - start
    problem = MultiMNIST("CL_RR", data_dir=data_dir)
    config = RunConfig(tasks="CL_RR", method="unit_scal", epochs=1, lr=1e-3)
    bare, engine_total, engine_train = [], [], []
    for _ in range(repeats):
        bare.append(bare_epoch(problem, config.batch_size, config.lr))
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            record = train(config, root, problem=problem)
            engine_total.append(time.perf_counter() - start)
            engine_train.append(record.history[0]["train_seconds"])
    return EpochTiming(
        build,
        statistics.median(engine_total),
        statistics.median(engine_train),
        statistics.median(bare),
        problem.split_size("train"),
    )
