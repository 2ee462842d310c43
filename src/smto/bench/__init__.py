"""Benchmarks: the step benchmark (``smto bench step``)."""
