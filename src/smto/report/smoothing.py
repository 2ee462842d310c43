"""The study's exponential moving average (EMA) of per-epoch values: what the weights figure
draws and what fixed weights are extracted from (smto.evaluation.fixed_weights)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ema(
    values: Sequence[float] | Sequence[Sequence[float]] | np.ndarray, beta: float
) -> np.ndarray:
    """The study's exponential moving average along the first axis (epochs):
    m_0 = x_0, m_t = beta m_{t-1} + (1 - beta) x_t."""
    values = np.asarray(values, dtype=float)
    out = np.empty_like(values)
    for t, value in enumerate(values):
        out[t] = value if t == 0 else beta * out[t - 1] + (1.0 - beta) * value
    return out
