"""Statistics over seeds that the main study does not report: mean, standard deviation, a
bootstrap confidence interval, and t-tests between methods.

* Bootstrap: the percentile method over ``n_resamples`` (default 10,000) resamples of the
  runs with replacement, drawn from ``numpy.random.default_rng(seed)`` (default seed 0), so
  a report is reproducible.
* Tests: the paired t-test (``scipy.stats.ttest_rel``) when both methods have runs of exactly
  the same seeds (at least two, each once): runs of one seed share the initialization and the
  data order, so pairing removes that variance. Otherwise Welch's t-test
  (``scipy.stats.ttest_ind(equal_var=False)``) over all runs. Both are two-sided.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smto.errors import ConfigError

N_RESAMPLES = 10_000
CONFIDENCE = 0.95


def bootstrap_ci(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (nan for no values)."""
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation (ddof 1) and bootstrap interval of one method's values."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def summarize(values: Sequence[float], seed: int = 0) -> Summary:
    """The :class:`Summary` of the finite ``values`` (runs without a result are left out)."""
    x = [float(v) for v in values if math.isfinite(v)]
    mean = float(np.mean(x)) if x else math.nan
    std = float(np.std(x, ddof=1)) if len(x) > 1 else math.nan
    return Summary(len(x), mean, std, *bootstrap_ci(x, seed=seed))


@dataclass(frozen=True)
class TestResult:
    """A two-sided t-test of ``a`` against ``b``: positive statistic means a > b."""

    kind: str
    """"paired" (ttest_rel on seed-matched runs) or "welch" (ttest_ind, equal_var=False)."""
    statistic: float
    p_value: float
    n_a: int
    n_b: int


def compare(
    a: Sequence[float],
    b: Sequence[float],
    seeds_a: Sequence[int] | None = None,
    seeds_b: Sequence[int] | None = None,
) -> TestResult:
    """Tests whether the means of ``a`` and ``b`` differ (module docstring for which test).

    Non-finite values are left out (with their seeds); the paired test needs the remaining
    seed sets to be equal, each seed once.
    """
    from scipy import stats

    pairs_a = _finite(a, seeds_a)
    pairs_b = _finite(b, seeds_b)
    if seeds_a is not None and seeds_b is not None and _matched(pairs_a, pairs_b):
        by_seed_b = dict(pairs_b)
        seeds = sorted(s for s, _ in pairs_a)
        xa = [dict(pairs_a)[s] for s in seeds]
        xb = [by_seed_b[s] for s in seeds]
        result = stats.ttest_rel(xa, xb)
        kind = "paired"
    else:
        xa = [v for _, v in pairs_a]
        xb = [v for _, v in pairs_b]
        if len(xa) < 2 or len(xb) < 2:
            return TestResult("welch", math.nan, math.nan, len(xa), len(xb))
        result = stats.ttest_ind(xa, xb, equal_var=False)
        kind = "welch"
    return TestResult(kind, float(result.statistic), float(result.pvalue), len(xa), len(xb))


def _finite(values: Sequence[float], seeds: Sequence[int] | None) -> list[tuple[int, float]]:
    keys = list(seeds) if seeds is not None else list(range(len(values)))
    if len(keys) != len(values):
        raise ConfigError(f"{len(values)} values but {len(keys)} seeds")
    return [(s, float(v)) for s, v in zip(keys, values) if math.isfinite(v)]


def _matched(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    seeds_a = [s for s, _ in a]
    seeds_b = [s for s, _ in b]
    unique = len(set(seeds_a)) == len(seeds_a) and len(set(seeds_b)) == len(seeds_b)
    return unique and len(seeds_a) >= 2 and set(seeds_a) == set(seeds_b)
