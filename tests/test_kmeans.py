"""Tests of dclab.kmeans: exact 1-D Lloyd against scikit-learn, initializations, edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from dclab.kmeans import (
    INIT_METHODS,
    cluster_1d,
    init_density,
    init_kmeanspp,
    init_linear,
    init_random,
    initial_centroids,
    kmeans_1d,
)


def sklearn_lloyd(values: np.ndarray, init: np.ndarray, max_iter: int = 300, tol: float = 0.0) -> KMeans:
    model = KMeans(
        n_clusters=init.size, init=init.reshape(-1, 1), n_init=1, algorithm="lloyd", tol=tol, max_iter=max_iter
    )
    return model.fit(values.reshape(-1, 1))


def samples(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "laplace":
        return rng.laplace(scale=0.05, size=n)
    if kind == "bimodal":
        # Like a pruned layer: nothing near zero.
        magnitudes = 0.1 + rng.exponential(0.05, size=n)
        return magnitudes * rng.choice([-1.0, 1.0], size=n)
    return rng.standard_normal(n)


# Linear init on bimodal data leaves a centroid in the empty middle, where
# sklearn relocates it and ours keeps it, so that pair is not compared.
SKLEARN_CASES = [(kind, method) for kind in ("normal", "laplace", "bimodal") for method in INIT_METHODS]
SKLEARN_CASES.remove(("bimodal", "linear"))


@pytest.mark.parametrize(("kind", "method"), SKLEARN_CASES)
def test_lloyd_matches_sklearn(kind, method):
    values = samples(kind, 3000, seed=len(kind))
    init = initial_centroids(values, 8, method, seed=3)
    ours = kmeans_1d(values, init)
    theirs = sklearn_lloyd(values, init)
    assert ours.counts.min() > 0  # sklearn would relocate an empty cluster; ours keeps it
    assert ours.converged
    np.testing.assert_array_equal(ours.labels, theirs.labels_)
    np.testing.assert_allclose(ours.centroids, theirs.cluster_centers_.ravel(), rtol=1e-12, atol=1e-14)
    assert ours.n_iter == theirs.n_iter_
    assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-9)


@pytest.mark.parametrize("max_iter", [1, 2, 5])
def test_lloyd_max_iter_matches_sklearn(max_iter):
    values = samples("laplace", 5000, seed=11)
    init = init_linear(values, 16)
    ours = kmeans_1d(values, init, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that it did not converge
        theirs = sklearn_lloyd(values, init, max_iter=max_iter)
    assert not ours.converged
    assert ours.n_iter == max_iter == theirs.n_iter_
    np.testing.assert_array_equal(ours.labels, theirs.labels_)
    np.testing.assert_allclose(ours.centroids, theirs.cluster_centers_.ravel(), rtol=1e-12, atol=1e-14)


def test_lloyd_tol_matches_sklearn():
    values = samples("normal", 4000, seed=5)
    init = init_density(values, 10)
    ours = kmeans_1d(values, init, tol=1e-4)
    theirs = sklearn_lloyd(values, init, tol=1e-4)
    full = kmeans_1d(values, init)
    assert ours.converged
    assert ours.n_iter == theirs.n_iter_
    assert ours.n_iter < full.n_iter
    np.testing.assert_array_equal(ours.labels, theirs.labels_)


def test_lloyd_fixed_point_one_iteration():
    values = samples("laplace", 2000, seed=2)
    first = kmeans_1d(values, init_linear(values, 8))
    again = kmeans_1d(values, first.centroids)
    assert again.n_iter == 1
    assert again.converged
    np.testing.assert_array_equal(again.centroids, first.centroids)
    np.testing.assert_array_equal(again.labels, first.labels)


def test_lloyd_fixed_point_properties():
    values = samples("bimodal", 2000, seed=8)
    result = kmeans_1d(values, init_kmeanspp(values, 12, seed=1))
    nearest = np.abs(values[:, None] - result.centroids[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(result.labels, nearest)
    for j, centroid in enumerate(result.centroids):
        assert centroid == pytest.approx(values[result.labels == j].mean(), rel=1e-12)
    assert np.all(np.diff(result.centroids) > 0)


def test_lloyd_labels_in_input_order():
    values = np.array([5.0, -5.0, 4.9, -4.9, 0.1])
    result = kmeans_1d(values, [-5.0, 0.0, 5.0])
    np.testing.assert_array_equal(result.labels, [2, 0, 2, 0, 1])
    np.testing.assert_allclose(result.centroids, [-4.95, 0.1, 4.95])
    np.testing.assert_array_equal(result.counts, [2, 1, 2])


def test_lloyd_midpoint_tie_goes_lower():
    values = np.array([0.0, 1.0, 2.0])
    ours = kmeans_1d(values, [0.0, 2.0], max_iter=1)
    theirs = sklearn_lloyd(values, np.array([0.0, 2.0]), max_iter=1)
    # 1.0 is exactly halfway; it joins the lower centroid, so that becomes (0 + 1) / 2.
    np.testing.assert_array_equal(ours.centroids, [0.5, 2.0])
    np.testing.assert_allclose(theirs.cluster_centers_.ravel(), [0.5, 2.0])


def test_lloyd_empty_cluster_keeps_centroid():
    values = np.array([0.0, 0.1, 0.2, 10.0, 10.1])
    result = kmeans_1d(values, [0.0, 5.0, 10.0])
    assert not np.isnan(result.centroids).any()
    assert result.counts[1] == 0
    assert result.centroids[1] == 5.0
    np.testing.assert_allclose(result.centroids[[0, 2]], [0.1, 10.05])
    assert result.converged


def test_lloyd_duplicate_init_merged():
    values = samples("normal", 500, seed=1)
    result = kmeans_1d(values, [-1.0, 0.0, 0.0, 1.0])
    assert result.centroids.size == 3


def test_lloyd_float32_input():
    values = samples("laplace", 1000, seed=4).astype(np.float32)
    result = kmeans_1d(values, init_linear(values, 5))
    assert result.centroids.dtype == np.float64
    assert result.converged


def test_lloyd_inertia_direct():
    values = samples("normal", 1000, seed=6)
    result = kmeans_1d(values, init_density(values, 7))
    direct = ((values - result.centroids[result.labels]) ** 2).sum()
    assert result.inertia == pytest.approx(direct, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False), min_size=1, max_size=60),
    k=st.integers(1, 8),
)
def test_cluster_nearest_and_mean(values, k):
    x = np.array(values)
    result = cluster_1d(x, k, "kmeans++", seed=0)
    centroids = result.centroids
    assert centroids.size <= k
    assert np.all(np.diff(centroids) > 0)
    distance = np.abs(x - centroids[result.labels])
    best = np.abs(x[:, None] - centroids[None, :]).min(axis=1)
    np.testing.assert_allclose(distance, best, rtol=1e-9, atol=1e-9)
    for j in np.flatnonzero(result.counts):
        assert centroids[j] == pytest.approx(x[result.labels == j].mean(), rel=1e-9, abs=1e-9)


def test_cluster_few_distinct_values_unchanged():
    values = np.array([0.5, -0.25, 0.5, 1.0, -0.25, 0.5])
    result = cluster_1d(values, 31, "linear")
    np.testing.assert_array_equal(result.centroids, [-0.25, 0.5, 1.0])
    np.testing.assert_array_equal(result.centroids[result.labels], values)
    assert result.inertia == 0.0
    assert result.n_iter == 0


def test_cluster_single_value():
    result = cluster_1d([0.125], 63, "random", seed=3)
    np.testing.assert_array_equal(result.centroids, [0.125])
    np.testing.assert_array_equal(result.labels, [0])


def test_cluster_nan_raises():
    with pytest.raises(ValueError, match="1 NaN and 0 infinite"):
        cluster_1d([0.1, np.nan, 0.3, 0.4], 2)


def test_cluster_inf_raises():
    with pytest.raises(ValueError, match="0 NaN and 2 infinite"):
        cluster_1d([0.1, np.inf, -np.inf, 0.4], 2)


def test_cluster_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        cluster_1d([], 4)


def test_kmeans_bad_max_iter_raises():
    with pytest.raises(ValueError, match="max_iter"):
        kmeans_1d([1.0, 2.0], [1.0], max_iter=0)


def test_init_linear_evenly_spaced():
    values = samples("laplace", 1000, seed=0)
    centroids = init_linear(values, 5)
    np.testing.assert_allclose(centroids, np.linspace(values.min(), values.max(), 5))


def test_init_density_quantiles():
    values = samples("laplace", 10_000, seed=0)
    centroids = init_density(values, 4)
    np.testing.assert_allclose(centroids, np.quantile(values, [0.125, 0.375, 0.625, 0.875]))
    # Denser in the middle than linear spacing: the inner gap is narrower.
    assert centroids[2] - centroids[1] < (values.max() - values.min()) / 3


@pytest.mark.parametrize("init", [init_random, init_kmeanspp])
def test_init_random_methods_seeded(init):
    values = samples("normal", 2000, seed=0)
    first = init(values, 16, seed=7)
    again = init(values, 16, seed=7)
    other = init(values, 16, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.size == 16
    assert np.all(np.diff(first) > 0)
    assert np.isin(first, values).all()


def test_init_random_few_distinct():
    values = np.array([1.0, 1.0, 2.0, 2.0, 3.0])
    np.testing.assert_array_equal(init_random(values, 8, seed=0), [1.0, 2.0, 3.0])


def test_init_kmeanspp_stops_when_all_covered():
    values = np.array([1.0, 1.0, 2.0, 2.0])
    np.testing.assert_array_equal(init_kmeanspp(values, 8, seed=0), [1.0, 2.0])


def test_init_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown initialization 'uniform'"):
        initial_centroids([1.0, 2.0], 2, "uniform")


def test_init_bad_k_raises():
    with pytest.raises(ValueError, match="k=0"):
        init_linear([1.0, 2.0], 0)
