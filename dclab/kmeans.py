"""Exact one-dimensional k-means for weight sharing, and its centroid initializations.

Weight sharing clusters the weights of one layer, which are scalars. In one
dimension each k-means cluster is a contiguous run of the sorted values: a
value belongs to centroid j when it lies between the midpoints that separate
centroid j from its neighbours. So after sorting once, the assignment step of
a Lloyd iteration is a ``searchsorted`` of k - 1 midpoints, and the update
step reads k segment means from prefix sums. That costs O(k log n) per
iteration instead of the O(nk) distance matrix of a general k-means. We write it ourselves for
that reason: on 4 million float32 weights and 31 clusters it runs more than
20 times faster than scikit-learn's Lloyd from the same initial centroids
(``benchmarks/bench_kmeans.py`` prints the measured ratio), and on float64
input it reaches the same assignments and centroids in the same number of
iterations.

Conventions:

- Centroids are kept in ascending order and labels index into that order.
  Lloyd's algorithm keeps that order in one dimension, because every cluster
  is a contiguous segment.
- A value exactly at a computed midpoint joins the lower centroid.
  scikit-learn picks the lowest label among equally near centroids, which is
  the lower centroid when its initial centroids are given in ascending order.
  On continuous float64 data such ties have probability zero.
- A cluster that becomes empty keeps its previous centroid (no NaN and no
  reseeding), unlike scikit-learn, which moves it to a far point. Callers
  that build a codebook drop such unused centroids.
- Duplicate initial centroids are merged, so fewer than k centroids may come
  back.
- Arithmetic is float64, whatever the input precision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "INIT_METHODS",
    "KMeansResult",
    "check_finite",
    "init_linear",
    "init_density",
    "init_random",
    "init_kmeanspp",
    "initial_centroids",
    "kmeans_1d",
    "cluster_1d",
]

log = logging.getLogger(__name__)

INIT_METHODS = ("linear", "density", "random", "kmeans++")


@dataclass(frozen=True)
class KMeansResult:
    """The outcome of one k-means run on a 1-D array of n values.

    Attributes:
        centroids: (k,) float64, ascending.
        labels: (n,) int64, index of each value's centroid, in input order.
        counts: (k,) int64, number of values per centroid (0 for an empty cluster).
        inertia: sum of squared distances from each value to its centroid.
        n_iter: Lloyd iterations run (0 when no iteration was needed).
        converged: whether the assignments stopped changing (or the centroid
            shift fell within ``tol``) before ``max_iter``.
    """

    centroids: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    inertia: float
    n_iter: int
    converged: bool


def check_finite(values: np.ndarray, what: str = "values") -> None:
    """Raise when ``values`` contains NaN or an infinity.

    Raises:
        ValueError: naming how many entries are NaN and infinite.
    """
    finite = np.isfinite(values)
    if not finite.all():
        n_nan = int(np.isnan(values).sum())
        n_inf = int(values.size - finite.sum() - n_nan)
        raise ValueError(
            f"{what} contain {n_nan} NaN and {n_inf} infinite entries; k-means needs finite values, "
            "so fix the training run that produced them (for example lower the learning rate)"
        )


def _as_float64_vector(values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    check_finite(array)
    return array


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")


# --- Initializations -------------------------------------------------------


def init_linear(values: ArrayLike, k: int) -> np.ndarray:
    """Space k centroids evenly between the minimum and the maximum of ``values``.

    Keeps the rare large weights representable, which is why it gave the
    best accuracy in Deep Compression's comparison of initializations.
    """
    _check_k(k)
    x = _as_float64_vector(values)
    return np.unique(np.linspace(x.min(), x.max(), k))


def init_density(values: ArrayLike, k: int) -> np.ndarray:
    """Space k centroids evenly on the cumulative distribution of ``values``.

    Centroid j is the ``(j + 0.5) / k`` quantile, the median of the j-th of k
    equally populated bins, so centroids crowd where weights are dense.
    """
    _check_k(k)
    x = _as_float64_vector(values)
    probabilities = (np.arange(k) + 0.5) / k
    return np.unique(np.quantile(x, probabilities))


def init_random(values: ArrayLike, k: int, seed: int = 0) -> np.ndarray:
    """Draw k distinct values of ``values`` at random (Forgy initialization).

    Each distinct value is drawn with probability proportional to how often it
    occurs, without replacement, so all k centroids differ. When there are at
    most k distinct values, all of them are returned.
    """
    _check_k(k)
    x = _as_float64_vector(values)
    distinct, counts = np.unique(x, return_counts=True)
    if distinct.size <= k:
        return distinct
    rng = np.random.default_rng(seed)
    chosen = rng.choice(distinct, size=k, replace=False, p=counts / counts.sum())
    return np.sort(chosen)


def init_kmeanspp(values: ArrayLike, k: int, seed: int = 0) -> np.ndarray:
    """Choose k centroids by k-means++ seeding (Arthur and Vassilvitskii, 2007).

    The first centroid is a uniformly drawn value. Each next one is a value
    drawn with probability proportional to its squared distance from the
    nearest centroid chosen so far, so a value equal to a chosen centroid is
    never drawn again. Stops early when every value equals some centroid.
    """
    _check_k(k)
    x = _as_float64_vector(values)
    rng = np.random.default_rng(seed)
    centroids = [x[rng.integers(x.size)]]
    squared_distance = (x - centroids[0]) ** 2
    for _ in range(k - 1):
        cumulative = np.cumsum(squared_distance)
        total = cumulative[-1]
        if total <= 0.0:
            break
        index = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
        index = min(index, x.size - 1)
        centroids.append(x[index])
        np.minimum(squared_distance, (x - x[index]) ** 2, out=squared_distance)
    return np.unique(centroids)


def initial_centroids(values: ArrayLike, k: int, method: str = "linear", seed: int = 0) -> np.ndarray:
    """Return at most k ascending, distinct initial centroids by the named method.

    Args:
        values: the values to cluster (any shape; flattened).
        k: number of centroids requested.
        method: one of ``INIT_METHODS``: ``"linear"``, ``"density"``,
            ``"random"`` (Forgy) or ``"kmeans++"``.
        seed: seed of the random methods; ignored by the others.

    Raises:
        ValueError: unknown method, k < 1, empty or non-finite values.
    """
    x = _as_float64_vector(values)
    if x.size == 0:
        raise ValueError("cannot initialize centroids from an empty array of values")
    if method == "linear":
        return init_linear(x, k)
    if method == "density":
        return init_density(x, k)
    if method == "random":
        return init_random(x, k, seed)
    if method == "kmeans++":
        return init_kmeanspp(x, k, seed)
    raise ValueError(f"unknown initialization {method!r}; expected one of {', '.join(INIT_METHODS)}")


# --- Lloyd's algorithm on sorted values --------------------------------------


def _assign(sorted_values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Return the k + 1 segment edges: cluster j is ``sorted_values[edges[j]:edges[j+1]]``.

    A value equal to a midpoint goes to the lower centroid (``side="right"``
    puts it before the edge).
    """
    midpoints = (centroids[:-1] + centroids[1:]) / 2
    splits = np.searchsorted(sorted_values, midpoints, side="right")
    return np.concatenate(([0], splits, [sorted_values.size]))


def _update(prefix_sums: np.ndarray, edges: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return each segment's mean (the old centroid for an empty segment) and its count."""
    counts = np.diff(edges)
    sums = prefix_sums[edges[1:]] - prefix_sums[edges[:-1]]
    means = np.divide(sums, counts, out=centroids.copy(), where=counts > 0)
    return means, counts


def _inertia(prefix_sums: np.ndarray, prefix_squares: np.ndarray, edges: np.ndarray, centroids: np.ndarray) -> float:
    """Return sum over clusters of sum (x - c)^2 = sum x^2 - 2 c sum x + n c^2."""
    counts = np.diff(edges)
    sums = prefix_sums[edges[1:]] - prefix_sums[edges[:-1]]
    squares = prefix_squares[edges[1:]] - prefix_squares[edges[:-1]]
    per_cluster = squares - 2.0 * centroids * sums + counts * centroids**2
    return float(np.maximum(per_cluster, 0.0).sum())


def kmeans_1d(values: ArrayLike, init: ArrayLike, *, max_iter: int = 300, tol: float = 0.0) -> KMeansResult:
    """Run Lloyd's algorithm on 1-D ``values`` from the centroids ``init``.

    The stopping rule is scikit-learn's (``KMeans(algorithm="lloyd")``, 1.9).
    An iteration assigns every value to its nearest centroid and moves each
    centroid to the mean of its values. The run stops when the assignments
    equal those of the previous iteration, when the summed squared centroid
    shift is at most ``tol * variance(values)``, or after ``max_iter``
    iterations. The returned labels are always those of the returned
    centroids.

    Args:
        values: n finite values (any shape; flattened). Any float dtype.
        init: initial centroids (any order; duplicates are merged).
        max_iter: maximum number of Lloyd iterations.
        tol: relative tolerance on the centroid shift; 0 runs until the
            assignments stop changing.

    Returns:
        A :class:`KMeansResult` with ascending centroids.

    Raises:
        ValueError: empty or non-finite values or init, or max_iter < 1.
    """
    x = _as_float64_vector(values)
    centroids = np.unique(_as_float64_vector(init))
    if x.size == 0 or centroids.size == 0:
        raise ValueError(f"k-means needs values and initial centroids; got {x.size} values, {centroids.size} centroids")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be at least 1")

    order = np.argsort(x, kind="stable")
    sorted_values = x[order]
    prefix_sums = np.concatenate(([0.0], np.cumsum(sorted_values)))
    shift_tolerance = tol * float(np.var(x)) if tol > 0 else 0.0

    previous_edges = None
    converged = False
    for n_iter in range(1, max_iter + 1):
        edges = _assign(sorted_values, centroids)
        new_centroids, _ = _update(prefix_sums, edges, centroids)
        shift = float(((new_centroids - centroids) ** 2).sum())
        centroids = new_centroids
        # Equal edges mean equal labels for every value, checked in O(k).
        if previous_edges is not None and np.array_equal(edges, previous_edges):
            converged = True
            break
        if shift <= shift_tolerance:
            converged = True
            edges = _assign(sorted_values, centroids)
            break
        previous_edges = edges
    else:
        edges = _assign(sorted_values, centroids)
        log.debug("k-means stopped at max_iter=%d before the assignments settled", max_iter)

    counts = np.diff(edges)
    sorted_labels = np.repeat(np.arange(centroids.size), counts)
    labels = np.empty_like(sorted_labels)
    labels[order] = sorted_labels
    prefix_squares = np.concatenate(([0.0], np.cumsum(sorted_values**2)))
    inertia = _inertia(prefix_sums, prefix_squares, edges, centroids)
    return KMeansResult(centroids, labels, counts, inertia, n_iter, converged)


def cluster_1d(
    values: ArrayLike, k: int, init: str = "linear", *, seed: int = 0, max_iter: int = 300, tol: float = 0.0
) -> KMeansResult:
    """Cluster ``values`` into at most k centroids: initialization, then :func:`kmeans_1d`.

    When there are at most k distinct values, they are the centroids (an
    exact clustering with zero inertia) and no iteration runs, so the
    result never has more centroids than distinct values.

    Raises:
        ValueError: k < 1, empty or non-finite values, unknown init.
    """
    _check_k(k)
    x = _as_float64_vector(values)
    if x.size == 0:
        raise ValueError("cannot cluster an empty array of values")
    distinct, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if distinct.size <= k:
        return KMeansResult(distinct, inverse.reshape(-1).astype(np.int64), counts, 0.0, 0, True)
    start = initial_centroids(x, k, init, seed)
    return kmeans_1d(x, start, max_iter=max_iter, tol=tol)
