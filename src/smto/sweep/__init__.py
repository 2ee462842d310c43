"""Hyperparameter sweeps (``smto sweep``)."""
