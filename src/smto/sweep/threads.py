"""How many threads each worker of one machine gets: its cores split evenly between the
workers (issue 11: two workers of two threads each on two cores ran 3-10x slower than one
alone, since their threads fought over the cores).
"""

from __future__ import annotations

import os

from smto.errors import ConfigError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""What a worker's child processes (data loaders, BLAS) read their thread count from."""


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None, threads: int | None = None) -> int:
    """``threads`` when given (the override), else the machine's ``cores`` divided evenly
    between ``workers`` (at least 1)."""
    for name, value in (("workers", workers), ("threads", threads), ("cores", cores)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    if threads is not None:
        return threads
    return max(1, (cores or machine_cores()) // workers)


def thread_environment(threads: int) -> dict[str, str]:
    """The environment variables that give a process (and its children) ``threads``
    threads."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def use_threads(threads: int) -> int:
    """Gives this process ``threads`` torch threads, and its future children the same through
    the environment; returns the count torch reads back."""
    import torch

    os.environ.update(thread_environment(threads))
    torch.set_num_threads(threads)
    return torch.get_num_threads()
