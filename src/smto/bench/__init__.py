"""Benchmarks: the step benchmark (``smto bench step``) and the engine-overhead benchmark
(``smto bench epoch``); :func:`main` runs either without the rest of the command line."""

from smto.bench.cli import main

__all__ = ["main"]
