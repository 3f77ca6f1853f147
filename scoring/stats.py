"""Statistics for model comparison: percentile bootstrap, cluster bootstrap, paired tests, Holm.

Formulas as in METHODS.md ("Statistics"). Plain numpy/scipy, seeded, no Dagster import.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse
from scipy import stats as scipy_stats

# Resampling weights are built in blocks of at most this many cells (resamples x distinct rows),
# so 1000 resamples of 50,000 batches never hold more than ~40 MB of weights at once.
_BLOCK_CELLS = 5_000_000


class BootstrapCI(NamedTuple):
    """A point estimate with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple:
    """(low, high) percentiles of bootstrap samples along axis 0 (arrays for 2-D input).

    NaN samples (resamples where the statistic is undefined, e.g. recall of a resample without
    positives) are left out; all-NaN gives NaN bounds."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    samples = np.asarray(samples, dtype=float)
    if not np.isnan(samples).any():
        low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
        return low, high
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN bounds on purpose
        low, high = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    return low, high


def bootstrap_ci(
    data: np.ndarray | Sequence[float] | tuple[np.ndarray, ...],
    statistic: Callable[..., float] = np.mean,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapCI:
    """Percentile bootstrap CI of `statistic(data)`.

    `data` is one 1-D sample, or a tuple of equal-length samples that are resampled jointly (a
    paired bootstrap, e.g. base and tuned scores on the same prompts); `statistic` then receives
    one resampled array per sample, in order.
    """
    samples = tuple(np.asarray(s) for s in data) if isinstance(data, tuple) else (np.asarray(data),)
    n = len(samples[0])
    if any(len(s) != n for s in samples):
        raise ValueError(f"paired samples differ in length: {[len(s) for s in samples]}")
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one observation")
    estimate = float(statistic(*samples))
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for b in range(n_boot):
        index = rng.integers(0, n, size=n)
        boot[b] = statistic(*(s[index] for s in samples))
    low, high = percentile_interval(boot, confidence)
    return BootstrapCI(estimate, float(low), float(high))


def cluster_bootstrap_totals(counts: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Column totals of `counts` (clusters x k) for `n_boot` resamples of the clusters.

    Each resample draws n_clusters clusters with replacement; a cluster drawn w times adds w times
    its count row. Clusters with identical count rows are pooled first (most batches look alike:
    no deviation, no finding): the number of draws landing in each pool is multinomial with
    probabilities pool_size / n_clusters, which is the same distribution as drawing clusters one by
    one, at a cost set by the number of distinct rows, not of clusters or records.
    Returns an (n_boot, k) float array.
    """
    counts = np.asarray(counts, dtype=float)
    n_clusters, k = counts.shape
    totals = np.zeros((n_boot, k))
    if n_clusters == 0 or n_boot == 0:
        return totals
    rows, pool_of = _distinct_rows(counts)
    probabilities = np.bincount(pool_of) / n_clusters
    pooled = sparse.csr_array(rows)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // len(rows))
    for start in range(0, n_boot, block):
        stop = min(start + block, n_boot)
        weights = rng.multinomial(n_clusters, probabilities, size=stop - start)
        totals[start:stop] = (pooled.T @ weights.T).T  # sparse: rows hold mostly zeros
    return totals


def _distinct_rows(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows, index of each input row's distinct row); hash-grouped, then verified."""
    as_int = counts.astype(np.int64)
    if not np.array_equal(as_int, counts):
        rows, inverse = np.unique(counts, axis=0, return_inverse=True)
        return rows, inverse.ravel()
    # Random-coefficient row hashes (wrapping int64 arithmetic) group rows in linear time; a hash
    # collision is caught by the exact comparison below and then falls back to np.unique.
    coefficients = np.random.default_rng(20261125).integers(1, 2**62, size=counts.shape[1])
    codes, _ = pd.factorize(as_int @ coefficients)
    first = np.full(codes.max() + 1, len(codes))
    np.minimum.at(first, codes, np.arange(len(codes)))
    if np.array_equal(counts[first][codes], counts):
        return counts[first], codes
    rows, inverse = np.unique(counts, axis=0, return_inverse=True)
    return rows, inverse.ravel()


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test of a vs b: t = mean(d) / (sd(d) / sqrt(n)), d = a - b.

    With identical differences (sd = 0) t is 0 with p = 1 when they are all zero, else +/-inf with
    p = 0, instead of scipy's nan.
    """
    d = _differences(a, b)
    n = len(d)
    if n < 2:
        raise ValueError(f"paired_t_test needs at least 2 pairs, got {n}")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (float(np.copysign(np.inf, mean)), 0.0)
    t = mean / (sd / np.sqrt(n))
    p = 2.0 * float(scipy_stats.t.sf(abs(t), df=n - 1))
    return float(t), p


def cohens_dz(a: Sequence[float], b: Sequence[float]) -> float:
    """Cohen's d_z for paired samples: mean(d) / sd(d), d = a - b (sd with n - 1)."""
    d = _differences(a, b)
    if len(d) < 2:
        raise ValueError(f"cohens_dz needs at least 2 pairs, got {len(d)}")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return 0.0 if mean == 0.0 else float(np.copysign(np.inf, mean))
    return mean / sd


def holm_correction(
    pvalues: Sequence[float], alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down adjustment: (adjusted p-values, reject flags), in the input order.

    Sorted ascending, p_(i) is multiplied by (m - i + 1); adjusted values are made monotone with a
    running maximum and capped at 1. A hypothesis is rejected when its adjusted p <= alpha.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError(f"p-values must be a 1-D sequence in [0, 1], got {pvalues!r}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted, adjusted <= alpha


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        shapes = f"{a_arr.shape} vs {b_arr.shape}"
        raise ValueError(f"paired samples must be 1-D of equal length: {shapes}")
    return a_arr - b_arr


def paired_comparison(tuned: Sequence[float], base: Sequence[float], *, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """tuned - base on paired items: both means, the mean difference with its percentile-bootstrap
    CI, the paired t-test and Cohen's d_z; NaN where too few pairs make a value undefined."""
    t_arr, b_arr = np.asarray(tuned, dtype=float), np.asarray(base, dtype=float)
    row = dict.fromkeys(("tuned_mean", "base_mean", "mean_difference", "ci_low", "ci_high", "t",
                         "p_value", "cohens_dz"), math.nan)
    if len(t_arr):
        ci = bootstrap_ci(t_arr - b_arr, n_boot=n_boot, seed=seed)
        row.update(tuned_mean=float(t_arr.mean()), base_mean=float(b_arr.mean()),
                   mean_difference=ci.estimate, ci_low=ci.low, ci_high=ci.high)
    if len(t_arr) >= 2:
        t_stat, p_value = paired_t_test(t_arr, b_arr)
        row.update(t=t_stat, p_value=p_value, cohens_dz=cohens_dz(t_arr, b_arr))
    return row


def holm_where_tested(p_values: Sequence[float], alpha: float = 0.05
                      ) -> tuple[list[float], list[bool]]:
    """Holm over the p-values that are not NaN (untested comparisons keep NaN / not significant),
    in the input order."""
    p = np.asarray(p_values, dtype=float)
    adjusted, significant = np.full(len(p), math.nan), np.zeros(len(p), dtype=bool)
    tested = ~np.isnan(p)
    if tested.any():
        adjusted[tested], significant[tested] = holm_correction(p[tested], alpha=alpha)
    return adjusted.tolist(), significant.tolist()
