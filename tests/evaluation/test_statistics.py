"""Bootstrap intervals and t-tests on synthetic populations (seeded)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from smto.report.statistics import bootstrap_ci, compare, summarize


def test_bootstrap_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(123)
    true_mean = 3.0
    trials = 200
    covered = 0
    for trial in range(trials):
        sample = rng.normal(true_mean, 2.0, size=30)
        low, high = bootstrap_ci(sample, n_resamples=2000, seed=trial)
        covered += low <= true_mean <= high
    assert 0.90 <= covered / trials <= 0.99


def test_bootstrap_is_seeded_and_brackets_the_mean():
    sample = [1.0, 4.0, 2.0, 8.0, 5.0]
    assert bootstrap_ci(sample, seed=7) == bootstrap_ci(sample, seed=7)
    low, high = bootstrap_ci(sample)
    assert low < np.mean(sample) < high
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(sample, confidence=95)


def test_summary_leaves_out_runs_without_a_result():
    summary = summarize([1.0, 3.0, math.nan])
    assert summary.n == 2
    assert summary.mean == 2.0
    assert summary.std == pytest.approx(math.sqrt(2.0))
    assert summary.ci_low <= 2.0 <= summary.ci_high


def test_welch_flags_a_planted_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    planted = null = 0
    for _ in range(200):
        a = rng.normal(0.0, 1.0, size=10)
        b = rng.normal(2.0, 1.0, size=10)
        c = rng.normal(0.0, 1.0, size=10)
        planted += compare(b, a).p_value < 0.05
        null += compare(c, a).p_value < 0.05
    assert planted / 200 > 0.95
    assert 0.01 <= null / 200 <= 0.10
    result = compare([3.0, 3.1, 2.9, 3.05], [1.0, 1.2, 0.8, 1.1])
    assert result.kind == "welch"
    assert result.statistic > 0
    assert result.p_value < 1e-3


def test_paired_on_matching_seeds_matches_scipy_and_sees_what_welch_cannot():
    # seed 0..2 in a different order: pairs (1, 3.3), (2, 2.2), (3, 1.1)
    result = compare([1.0, 2.0, 3.0], [1.1, 2.2, 3.3], [0, 1, 2], [2, 1, 0])
    expected = stats.ttest_rel([1.0, 2.0, 3.0], [3.3, 2.2, 1.1])
    assert result.kind == "paired"
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.statistic == pytest.approx(expected.statistic)
    # a constant small gain over a large seed-to-seed spread: paired sees it, Welch does not
    base = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    gain = base + 0.5 + np.array([0.01, -0.02, 0.0, 0.02, -0.01])
    seeds = [0, 1, 2, 3, 4]
    assert compare(gain, base, seeds, seeds).p_value < 1e-4
    assert compare(gain, base).p_value > 0.5


def test_welch_when_seeds_differ_or_a_run_has_no_result():
    assert compare([1.0, 2.0, 3.0], [1.5, 2.5], [0, 1, 2], [0, 1]).kind == "welch"
    nan_run = compare([1.0, 2.0, math.nan], [1.5, 2.5, 3.5], [0, 1, 2], [0, 1, 2])
    assert nan_run.kind == "welch"
    assert nan_run.n_a == 2
    assert math.isnan(compare([1.0], [2.0, 3.0]).p_value)
