"""scoring.stats against scipy and hand-computed cases."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from scoring.stats import (
    bootstrap_ci,
    cluster_bootstrap_totals,
    cohens_dz,
    holm_correction,
    paired_t_test,
    percentile_interval,
)


def test_bootstrap_ci_matches_scipy_percentile_on_a_large_sample():
    sample = np.random.default_rng(1).normal(loc=2.0, scale=3.0, size=2000)
    ours = bootstrap_ci(sample, np.mean, n_boot=2000, seed=3)
    reference = scipy_stats.bootstrap((sample,), np.mean, n_resamples=9999, method="percentile",
                                      confidence_level=0.95, rng=np.random.default_rng(4))
    # Monte-Carlo noise of the endpoints is ~0.005 here; the half-width itself is ~0.13.
    assert ours.low == pytest.approx(reference.confidence_interval.low, abs=0.02)
    assert ours.high == pytest.approx(reference.confidence_interval.high, abs=0.02)
    assert ours.estimate == pytest.approx(sample.mean())
    assert ours.low < ours.estimate < ours.high


def test_bootstrap_ci_is_deterministic_for_a_seed_and_differs_across_seeds():
    sample = np.random.default_rng(0).exponential(size=200)
    assert bootstrap_ci(sample, n_boot=300, seed=7) == bootstrap_ci(sample, n_boot=300, seed=7)
    assert bootstrap_ci(sample, n_boot=300, seed=7) != bootstrap_ci(sample, n_boot=300, seed=8)


def test_bootstrap_ci_narrows_as_the_sample_grows():
    rng = np.random.default_rng(2)
    widths = []
    for n in (50, 500, 5000):
        ci = bootstrap_ci(rng.normal(size=n), n_boot=500, seed=0)
        widths.append(ci.high - ci.low)
    assert widths[0] > widths[1] > widths[2]
    # The width of a mean's 95% CI is about 2 * 1.96 / sqrt(n).
    assert widths[2] == pytest.approx(2 * 1.96 / np.sqrt(5000), rel=0.15)


def test_paired_bootstrap_resamples_pairs_jointly():
    rng = np.random.default_rng(5)
    base = rng.normal(size=400)
    tuned = base + 0.5  # every pair differs by exactly 0.5: a joint resample keeps that
    ci = bootstrap_ci((tuned, base), lambda t, b: float(np.mean(t - b)), n_boot=200, seed=0)
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_ci((tuned, base[:10]), lambda t, b: 0.0)


def test_percentile_interval_of_known_samples():
    low, high = percentile_interval(np.arange(101, dtype=float), confidence=0.9)
    assert (low, high) == pytest.approx((5.0, 95.0))
    with pytest.raises(ValueError):
        percentile_interval(np.arange(3.0), confidence=1.5)


def test_cluster_bootstrap_totals_equals_explicit_cluster_resampling_in_distribution():
    rng = np.random.default_rng(9)
    counts = rng.integers(0, 4, size=(60, 3)).astype(float)
    counts[:30] = [1, 0, 2]  # many identical rows: exercises the pooling of equal clusters
    counts[:, 0] = 1  # a cluster-count column: every resample must draw exactly 60 clusters
    totals = cluster_bootstrap_totals(counts, n_boot=4000, seed=1)
    explicit = np.array([counts[rng.integers(0, 60, 60)].sum(axis=0) for _ in range(4000)])
    assert totals.shape == (4000, 3)
    assert np.all(totals[:, 0] == 60)
    np.testing.assert_allclose(totals.mean(axis=0), counts.sum(axis=0), rtol=0.02)
    np.testing.assert_allclose(totals[:, 1:].std(axis=0), explicit[:, 1:].std(axis=0), rtol=0.1)
    # A constant column (every cluster has the same value) has no bootstrap variance.
    constant = cluster_bootstrap_totals(np.ones((50, 1)), n_boot=100, seed=0)
    assert np.all(constant == 50.0)


def test_cluster_bootstrap_totals_is_seeded_and_handles_empty_input():
    counts = np.random.default_rng(0).integers(0, 3, size=(40, 2))
    a = cluster_bootstrap_totals(counts, n_boot=50, seed=4)
    assert np.array_equal(a, cluster_bootstrap_totals(counts, n_boot=50, seed=4))
    assert not np.array_equal(a, cluster_bootstrap_totals(counts, n_boot=50, seed=5))
    assert cluster_bootstrap_totals(np.zeros((0, 2)), n_boot=5).shape == (5, 2)


def test_paired_t_test_and_cohens_dz_match_scipy_and_the_formula():
    rng = np.random.default_rng(11)
    a = rng.normal(size=30)
    b = a - 0.3 + rng.normal(scale=0.5, size=30)
    t, p = paired_t_test(a, b)
    reference = scipy_stats.ttest_rel(a, b)
    assert t == pytest.approx(reference.statistic)
    assert p == pytest.approx(reference.pvalue)
    d = a - b
    assert cohens_dz(a, b) == pytest.approx(d.mean() / d.std(ddof=1))
    assert t == pytest.approx(cohens_dz(a, b) * np.sqrt(30))


def test_paired_t_test_hand_case_and_degenerate_differences():
    # d = [1, 2, 3]: mean 2, sd 1, t = 2 / (1 / sqrt(3)) = 2 sqrt(3)
    t, p = paired_t_test([2, 4, 6], [1, 2, 3])
    assert t == pytest.approx(2 * np.sqrt(3))
    assert p == pytest.approx(2 * scipy_stats.t.sf(2 * np.sqrt(3), df=2))
    assert paired_t_test([1, 2, 3], [1, 2, 3]) == (0.0, 1.0)
    assert paired_t_test([2, 3, 4], [1, 2, 3]) == (np.inf, 0.0)
    assert cohens_dz([1, 2], [1, 2]) == 0.0
    with pytest.raises(ValueError):
        paired_t_test([1.0], [2.0])
    with pytest.raises(ValueError):
        cohens_dz([1.0, 2.0], [1.0])


def test_holm_correction_hand_computed():
    # m = 4, sorted p: 0.01*4 = 0.04, 0.02*3 = 0.06, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    adjusted, reject = holm_correction([0.03, 0.01, 0.04, 0.02], alpha=0.05)
    np.testing.assert_allclose(adjusted, [0.06, 0.04, 0.06, 0.06])
    assert reject.tolist() == [False, True, False, False]


def test_holm_correction_caps_at_one_and_keeps_order():
    adjusted, reject = holm_correction([0.5, 0.001, 0.9])
    # sorted: 0.001*3 = 0.003, 0.5*2 = 1.0 (capped), 0.9*1 = 0.9 -> running max 1.0
    np.testing.assert_allclose(adjusted, [1.0, 0.003, 1.0])
    assert reject.tolist() == [False, True, False]
    with pytest.raises(ValueError):
        holm_correction([0.2, 1.2])


def test_paired_comparison_and_holm_where_tested_match_scipy():
    from scoring.stats import holm_where_tested, paired_comparison

    tuned, base = [0.9, 0.7, 0.8, 1.0, 0.6], [0.5, 0.6, 0.8, 0.7, 0.4]
    row = paired_comparison(tuned, base, n_boot=500, seed=1)
    reference = scipy_stats.ttest_rel(tuned, base)
    assert row["mean_difference"] == pytest.approx(0.2)
    assert row["t"] == pytest.approx(reference.statistic)
    assert row["p_value"] == pytest.approx(reference.pvalue)
    assert row["ci_low"] <= 0.2 <= row["ci_high"]
    single = paired_comparison([1.0], [0.5])
    assert single["mean_difference"] == 0.5 and math.isnan(single["p_value"])
    adjusted, significant = holm_where_tested([0.01, math.nan, 0.04], alpha=0.05)
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.04) and significant == [True, False, True]
