"""scoring.aqi against scikit-learn, hand-computed cases, direct loops and bootstrap coverage."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

from scoring.aqi import (
    AQI_NORMALISATION,
    aqi_by_layer,
    aqi_score,
    calinski_harabasz_index,
    combine_aqi,
    davies_bouldin_index,
    delta_aqi,
    dunn_index,
    normalise_chi,
    normalise_xb,
    overall_aqi,
    xie_beni_index,
)

# Tiny 2-D example, worked by hand:
#   cluster 0: (0,0), (2,0)         centroid (1,0), scatter 1 + 1 = 2
#   cluster 1: (4,3), (4,5), (7,4)  centroid (5,4), scatter 2 + 2 + 4 = 8
#   tr(W) = 10, n = 5, ||c0 - c1||^2 = 4^2 + 4^2 = 32 -> XBI = 10 / (5 * 32) = 0.0625
#   grand mean (3.4, 2.4): tr(B) = 2 * 11.52 + 3 * 5.12 = 38.4 (= n0 n1 / n * 32)
#   CHI = (38.4 / 1) / (10 / 3) = 11.52; CHI_norm = 38.4 / 48.4; XB_norm = 1 / 1.0625
HAND_X = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 3.0], [4.0, 5.0], [7.0, 4.0]])
HAND_LABELS = np.array([0, 0, 1, 1, 1])


def clustered(rng, n, d, separation, k=2, share=None):
    """k Gaussian clusters (unit variance) with centres `separation` apart along random axes."""
    labels = rng.choice(k, size=n, p=share) if share is not None else np.arange(n) % k
    centres = rng.normal(size=(k, d))
    centres *= separation / np.linalg.norm(centres[0] - centres[1])
    return centres[labels] + rng.normal(size=(n, d)), labels


def paired_states(rng, n, d, s_base, s_tuned, noise):
    """Base and tuned states of the same n prompts: a shared prompt component z, the unsafe half
    shifted along axis 0 by s_base / s_tuned, and independent noise on the tuned side."""
    labels = np.repeat([0, 1], [n // 2, n - n // 2])
    z = rng.normal(size=(n, d))
    base = z.copy()
    base[:, 0] += s_base * labels
    tuned = z + noise * rng.normal(size=(n, d))
    tuned[:, 0] += s_tuned * labels
    return base, tuned, labels


def test_xie_beni_and_chi_hand_computed():
    assert xie_beni_index(HAND_X, HAND_LABELS) == pytest.approx(0.0625)
    assert calinski_harabasz_index(HAND_X, HAND_LABELS) == pytest.approx(11.52)
    result = aqi_score(HAND_X, HAND_LABELS)
    assert (result.xbi, result.chi, result.n) == (pytest.approx(0.0625), pytest.approx(11.52), 5)
    assert result.chi_norm == pytest.approx(38.4 / 48.4)
    assert result.xb_norm == pytest.approx(1 / 1.0625)
    assert result.aqi == pytest.approx(0.5 * 38.4 / 48.4 + 0.5 / 1.0625)
    assert aqi_score(HAND_X, HAND_LABELS, lam=1.0).aqi == pytest.approx(38.4 / 48.4)
    assert aqi_score(HAND_X, HAND_LABELS, lam=0.0).aqi == pytest.approx(1 / 1.0625)
    assert result.normalisation == AQI_NORMALISATION == "aqi-norm-v1"


def test_xie_beni_equals_a_direct_loop_on_random_data():
    for seed, (n, d, k) in enumerate([(50, 3, 2), (200, 10, 2), (120, 5, 3), (31, 64, 4)]):
        rng = np.random.default_rng(seed)
        X, labels = clustered(rng, n, d, separation=1.5, k=k)
        X += 100.0  # far from the origin: the centred scatter must not lose precision
        centroids = [X[labels == i].mean(axis=0) for i in range(k)]
        within = 0.0
        for x, label in zip(X, labels, strict=True):
            within += sum((x[j] - centroids[label][j]) ** 2 for j in range(d))
        closest = min(
            sum((centroids[i][j] - centroids[m][j]) ** 2 for j in range(d))
            for i in range(k)
            for m in range(k)
            if i != m
        )
        assert xie_beni_index(X, labels) == pytest.approx(within / (n * closest), rel=1e-10)


def test_chi_equals_sklearn_on_random_clustered_data():
    for seed in range(6):
        for d in (1, 2, 7, 50):
            rng = np.random.default_rng(100 * seed + d)
            k = 2 + seed % 3
            X, labels = clustered(rng, n=40 + 30 * seed, d=d, separation=1.0 + seed, k=k)
            expected = calinski_harabasz_score(X, labels)
            assert calinski_harabasz_index(X, labels) == pytest.approx(expected, rel=1e-10)


def test_davies_bouldin_and_dunn_hand_computed():
    # Mean distances to the centroid: s0 = 1, s1 = (sqrt 2 + sqrt 2 + 2) / 3; centroids sqrt 32
    # apart -> DB = (s0 + s1) / sqrt 32 (k = 2: both clusters give the same ratio).
    s1 = (2 * np.sqrt(2) + 2) / 3
    assert davies_bouldin_index(HAND_X, HAND_LABELS) == pytest.approx((1 + s1) / np.sqrt(32))
    assert davies_bouldin_index(HAND_X, HAND_LABELS) == pytest.approx(
        davies_bouldin_score(HAND_X, HAND_LABELS))
    # Closest pair across clusters: (2,0)-(4,3), sqrt 13; widest cluster: (4,3)-(7,4), sqrt 10.
    assert dunn_index(HAND_X, HAND_LABELS) == pytest.approx(np.sqrt(13 / 10))
    points = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    assert dunn_index(points, [0, 0, 1]) == np.inf  # every cluster a single point


def test_aqi_rises_monotonically_as_clusters_separate_and_stays_in_unit_interval():
    rng = np.random.default_rng(3)
    noise = rng.normal(size=(400, 16))
    labels = np.arange(400) % 2
    direction = rng.normal(size=16)
    direction /= np.linalg.norm(direction)
    separations = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0]
    for lam in (0.0, 0.3, 0.5, 1.0):
        results = [aqi_score(noise + s * np.outer(labels, direction), labels, lam=lam)
                   for s in separations]
        aqi = [r.aqi for r in results]
        assert all(0.0 <= a <= 1.0 for a in aqi)
        assert np.all(np.diff(aqi) > 0), aqi
        assert np.all(np.diff([r.xbi for r in results]) < 0)
        assert np.all(np.diff([r.chi for r in results]) > 0)
    assert aqi[0] < 0.05 and aqi[-1] > 0.98  # lam = 1: tr(B)/tr(T) from ~0 to 1024/1040


def test_aqi_is_invariant_to_translation_rotation_and_scale():
    rng = np.random.default_rng(4)
    X, labels = clustered(rng, 300, 6, separation=2.0)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    moved = 3.7 * X @ rotation + 50.0
    assert aqi_score(moved, labels).aqi == pytest.approx(aqi_score(X, labels).aqi, rel=1e-9)


def test_chi_norm_does_not_drift_with_n_while_raw_chi_grows():
    # Two unit-variance clusters 2 apart in 8-D, equal shares: tr(B)/n -> 1/4 * 4 = 1 and
    # tr(W)/n -> 8, so CHI_norm -> 1/9 and XBI -> 8/4, XB_norm -> 1/3, at any n.
    rng = np.random.default_rng(5)

    def draw(n):
        labels = np.arange(n) % 2
        X = rng.normal(size=(n, 8))
        X[:, 0] += 2.0 * labels
        return aqi_score(X, labels)

    small = [draw(100) for _ in range(20)]  # averaged: one n = 100 draw has sd ~0.016
    large = draw(10_000)
    assert large.chi > 50 * np.mean([r.chi for r in small])  # raw CHI grows ~linearly with n
    assert large.chi_norm == pytest.approx(1 / 9, abs=0.006)
    assert large.xb_norm == pytest.approx(1 / 3, abs=0.006)
    # The O(1/n) upward bias at n = 100 is ~0.01; the drift stays within 0.02.
    assert np.mean([r.chi_norm for r in small]) == pytest.approx(large.chi_norm, abs=0.02)
    assert np.mean([r.xb_norm for r in small]) == pytest.approx(large.xb_norm, abs=0.03)


def test_normalisation_maps_are_bounded_monotone_and_match_the_scatter_ratio():
    chi = np.array([0.0, 0.5, 1.0, 10.0, 1e3, np.inf])
    norm = normalise_chi(chi, n=102, k=2)
    assert norm[0] == 0.0 and norm[-1] == 1.0 and np.all(np.diff(norm) > 0)
    assert normalise_chi(100.0, n=102, k=2) == pytest.approx(0.5)  # CHI / (CHI + n - 2)
    xb = np.array([0.0, 0.1, 1.0, 10.0, np.inf])
    assert list(normalise_xb(xb)) == pytest.approx([1.0, 1 / 1.1, 0.5, 1 / 11, 0.0])
    X, labels = clustered(np.random.default_rng(6), 90, 4, separation=1.0, k=3)
    total = ((X - X.mean(axis=0)) ** 2).sum()
    within = sum(((X[labels == i] - X[labels == i].mean(axis=0)) ** 2).sum() for i in range(3))
    chi = calinski_harabasz_index(X, labels)
    assert normalise_chi(chi, n=90, k=3) == pytest.approx((total - within) / total)
    assert combine_aqi(0.2, 0.6, lam=0.25) == pytest.approx(0.5)


def test_aqi_by_layer_and_overall_figure():
    rng = np.random.default_rng(7)
    labels = np.arange(120) % 2
    hidden = rng.normal(size=(3, 120, 5))
    hidden[1, :, 0] += 1.0 * labels
    hidden[2, :, 0] += 3.0 * labels
    layers = aqi_by_layer(hidden, labels)
    assert [r.layer for r in layers] == [0, 1, 2]
    assert layers[0].aqi < layers[1].aqi < layers[2].aqi
    assert layers[2] == aqi_score(hidden[2], labels, layer=2)
    assert overall_aqi(layers) == pytest.approx(np.mean([r.aqi for r in layers]))
    with pytest.raises(ValueError, match="layers"):
        overall_aqi([])


def test_delta_aqi_ci_covers_the_true_delta():
    # 100 seeded trials per setting, each small so the test is fast: n = 60 prompts, d = 8,
    # n_boot = 200 (about 1.5 ms a trial). The true delta is the AQI difference on 200,000 prompts
    # from the same two distributions. Measured with these seeds: basic (the default) 92 and 95 of
    # 100 (948 and 950 of 1000); interval="percentile" 88 and 76 (920 and 703 of 1000). The second
    # setting (tuned = base with a sharper separating direction, no extra noise) is the
    # bias-dominated one; see delta_aqi's docstring.
    for s_base, s_tuned, noise, at_least in [(1.0, 2.0, 0.5, 90), (1.0, 2.0, 0.0, 90)]:
        base, tuned, labels = paired_states(np.random.default_rng(999), 200_000, 8,
                                            s_base, s_tuned, noise)
        true = aqi_score(tuned, labels).aqi - aqi_score(base, labels).aqi
        assert true > 0.1
        covered = 0
        for seed in range(100):
            sample = paired_states(np.random.default_rng(seed), 60, 8, s_base, s_tuned, noise)
            result = delta_aqi(*sample, n_boot=200, seed=seed)
            assert result.low <= result.estimate <= result.high
            covered += result.low <= true <= result.high
        assert covered >= at_least, (s_base, s_tuned, noise, covered)


def test_delta_aqi_point_estimate_share_and_determinism():
    base, tuned, labels = paired_states(np.random.default_rng(8), 80, 6, 1.0, 3.0, 0.3)
    result = delta_aqi(base, tuned, labels, n_boot=300, seed=1)
    assert result.estimate == pytest.approx(
        aqi_score(tuned, labels).aqi - aqi_score(base, labels).aqi)
    assert (result.base_aqi, result.tuned_aqi) == (aqi_score(base, labels).aqi,
                                                   aqi_score(tuned, labels).aqi)
    assert result.low > 0 and result.share_positive == 1.0
    assert (result.n_boot, result.n, result.layer, result.confidence) == (300, 80, None, 0.95)
    assert result == delta_aqi(base, tuned, labels, n_boot=300, seed=1)
    assert result != delta_aqi(base, tuned, labels, n_boot=300, seed=2)
    reverse = delta_aqi(tuned, base, labels, n_boot=300, seed=1)
    assert reverse.estimate == pytest.approx(-result.estimate)
    assert (reverse.low, reverse.high) == pytest.approx((-result.high, -result.low))
    assert reverse.share_positive == 0.0
    percentile = delta_aqi(base, tuned, labels, n_boot=300, seed=1, interval="percentile")
    # Same resamples; the basic interval is the percentile one reflected about the estimate.
    assert percentile.low + result.high == pytest.approx(2 * result.estimate)
    narrow = delta_aqi(base, tuned, labels, n_boot=300, seed=1, confidence=0.5)
    assert result.low < narrow.low < narrow.high < result.high


def test_paired_bootstrap_uses_the_same_prompts_for_base_and_tuned():
    base, _, labels = paired_states(np.random.default_rng(9), 70, 5, 1.5, 1.5, 0.0)
    same = delta_aqi(base, base, labels, n_boot=200, seed=0)
    assert (same.estimate, same.low, same.high, same.share_positive) == (0.0, 0.0, 0.0, 0.0)
    # A different array with the same geometry (AQI is scale-invariant; x2 is exact in floating
    # point): only identical resample indices on both sides give a zero-width interval.
    scaled = delta_aqi(base, 2.0 * base, labels, n_boot=200, seed=0)
    assert (scaled.estimate, scaled.low, scaled.high) == (0.0, 0.0, 0.0)


def test_delta_aqi_over_layers_and_one_layer():
    rng = np.random.default_rng(10)
    labels = np.arange(90) % 2
    base = rng.normal(size=(3, 90, 4))
    tuned = base + 0.2 * rng.normal(size=(3, 90, 4))
    tuned[:, :, 0] += np.array([0.0, 1.0, 2.0])[:, None] * labels
    overall = delta_aqi(base, tuned, labels, n_boot=150, seed=0)
    expected = overall_aqi(aqi_by_layer(tuned, labels)) - overall_aqi(aqi_by_layer(base, labels))
    assert overall.estimate == pytest.approx(expected)
    last = delta_aqi(base, tuned, labels, n_boot=150, seed=0, layer=-1)
    assert last.layer == 2
    # Same resamples, same layer: a 3-D input with layer=-1 equals that layer passed as (n, d).
    assert last == replace(delta_aqi(base[2], tuned[2], labels, n_boot=150, seed=0), layer=2)
    assert last.estimate > overall.estimate > 0


def test_pca_path_is_deterministic_and_matches_sklearn():
    rng = np.random.default_rng(11)
    # 600 x 50 with 5 components: sklearn's "auto" solver picks the randomized one here.
    X, labels = clustered(rng, 600, 50, separation=2.0)
    first = aqi_score(X, labels, pca_components=5, pca_seed=3)
    assert first == aqi_score(X, labels, pca_components=5, pca_seed=3)
    embedded = PCA(n_components=5, random_state=3).fit_transform(X)
    assert first.xbi == xie_beni_index(embedded, labels)
    assert first.chi == calinski_harabasz_index(embedded, labels)
    assert first.pca_components == 5
    # All components: a rotation, so the indices equal those on the raw embeddings.
    full = aqi_score(X[:, :8], labels, pca_components=8)
    assert full.aqi == pytest.approx(aqi_score(X[:, :8], labels).aqi, rel=1e-9)
    hidden = np.stack([X, X[:, ::-1] * 2.0])
    assert aqi_by_layer(hidden, labels, pca_components=4) == aqi_by_layer(
        hidden, labels, pca_components=4)
    tuned = X + rng.normal(size=X.shape)
    assert delta_aqi(X, tuned, labels, n_boot=50, pca_components=5) == delta_aqi(
        X, tuned, labels, n_boot=50, pca_components=5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: xie_beni_index(HAND_X, [0, 0, 1, 1]), "labels: has 4 entries but X has 5 rows"),
        (lambda: xie_beni_index(HAND_X, [0, 0, 2, 2, 2]), "labels: cluster 1 is empty"),
        (lambda: xie_beni_index(HAND_X, [0, 0, 0, 0, 0]), "labels: need at least 2 non-empty"),
        (lambda: xie_beni_index(HAND_X, [0, 0, 1, 1, -1]), "labels: cluster ids must be >= 0"),
        (lambda: xie_beni_index(HAND_X, ["safe"] * 2 + ["unsafe"] * 3), "labels: must be integer"),
        (lambda: xie_beni_index(HAND_X, [0, 0, 1, 1, 0.5]), "labels: .*fractions"),
        (lambda: xie_beni_index(np.array([[0.0, 0], [2, 0], [1, 1], [1, -1]]), [0, 0, 1, 1]),
         "X: the centroids of clusters 0 and 1 coincide"),
        (lambda: calinski_harabasz_index(HAND_X[:2], [0, 1]), "X: needs more rows than clusters"),
        (lambda: xie_beni_index(HAND_X[:, 0], HAND_LABELS), r"X: must have shape \(n, d\)"),
        (lambda: xie_beni_index(np.where(HAND_X == 7.0, np.nan, HAND_X), HAND_LABELS),
         r"X: contains NaN or inf \(first at index \(4, 0\)\)"),
        (lambda: aqi_score(HAND_X, HAND_LABELS, lam=1.5), r"lam: must be a number in \[0, 1\]"),
        (lambda: aqi_score(HAND_X, HAND_LABELS, pca_components=3),
         r"pca_components: must be in \[1, min\(n, d\)\] = \[1, 2\]"),
        (lambda: aqi_score(HAND_X, HAND_LABELS, pca_components=1.5), "pca_components: must be"),
        (lambda: aqi_by_layer(HAND_X, HAND_LABELS), r"hidden: must have shape \(layers, n, d\)"),
        (lambda: aqi_by_layer(np.stack([HAND_X, HAND_X * 0]), HAND_LABELS),
         r"hidden\[1\]: the centroids .* coincide"),
        (lambda: delta_aqi(HAND_X, HAND_X[:4], HAND_LABELS), "base and tuned: need the same"),
        (lambda: delta_aqi(HAND_X, HAND_X, HAND_LABELS, n_boot=0), "n_boot: must be a positive"),
        (lambda: delta_aqi(HAND_X, HAND_X, HAND_LABELS, confidence=1.0), "confidence: must be"),
        (lambda: delta_aqi(HAND_X, HAND_X, HAND_LABELS, layer=1), "layer: 1 is out of range"),
        (lambda: delta_aqi(HAND_X, HAND_X, HAND_LABELS, interval="bca"), "interval: must be"),
        (lambda: delta_aqi(HAND_X, [[1, 2]] * 4 + [["a", 2]], HAND_LABELS), "tuned: must be"),
        (lambda: delta_aqi(HAND_X, HAND_X, [0, 0, 0, 0, 0]), "labels: need at least 2"),
    ],
)
def test_bad_inputs_give_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
