"""Checks for the weight-sharing exercises (notebook ``02_weight_sharing``).

Expected values come from :mod:`dclab.kmeans` (initializations) and
:func:`dclab.quantize.shared_weights` (the centroid gradient, through
autograd). One k-means iteration has no public library function
(:func:`dclab.kmeans.kmeans_1d` runs to convergence), so its reference is
written here; the grader's tests compare it with ``kmeans_1d(...,
max_iter=1)``.

Code 0 is reserved for the value 0 (pruned weights), so ``b`` bits leave
``k = 2**b - 1`` shared nonzero values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dclab import kmeans
from dclab.grading.core import Case, Mismatch, as_array, compare_arrays, run_check

__all__ = [
    "reference_linear_init",
    "reference_density_init",
    "reference_kmeans_step",
    "reference_centroid_gradient",
    "check_linear_init",
    "check_density_init",
    "check_kmeans_step",
    "check_centroid_gradient",
]


# --- references ----------------------------------------------------------------


def reference_linear_init(weights: np.ndarray, bits: int) -> np.ndarray:
    """Return the distinct values of ``linspace(min, max, 2**bits - 1)``."""
    return kmeans.init_linear(weights, 2**bits - 1)


def reference_density_init(weights: np.ndarray, bits: int) -> np.ndarray:
    """Return the distinct ``(j + 0.5) / k`` quantiles of ``weights``, ``k = 2**bits - 1``."""
    return kmeans.init_density(weights, 2**bits - 1)


def reference_kmeans_step(weights: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (new centroids, labels) of one Lloyd iteration; an empty cluster keeps its centroid.

    Labels index ``centroids``; a weight exactly at a midpoint goes to the
    lower index (``np.argmin`` returns the first minimum).
    """
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    centroids = np.asarray(centroids, dtype=np.float64).reshape(-1)
    labels = np.argmin(np.abs(weights[:, None] - centroids[None, :]), axis=1)
    return _cluster_means(weights, labels, centroids), labels


def _cluster_means(weights: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels, minlength=centroids.size)
    sums = np.bincount(labels, weights=weights, minlength=centroids.size)
    return np.divide(sums, counts, out=centroids.astype(np.float64), where=counts > 0)


def reference_centroid_gradient(weight_grad: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Return the gradient of every codebook entry: the sum of the weight gradients with that code.

    Entry 0 (the fixed value 0 of pruned weights) is always 0. Computed by
    autograd through :func:`dclab.quantize.shared_weights`, the function
    that fine-tuning uses.
    """
    import torch  # imported here so that the numpy-only checks of this module start fast

    from dclab.quantize import shared_weights

    codes_tensor = torch.as_tensor(np.asarray(codes), dtype=torch.int64)
    centroids = torch.zeros(n_codes - 1, dtype=torch.float64, requires_grad=True)
    counts = torch.bincount(codes_tensor.reshape(-1), minlength=n_codes)
    weight = shared_weights(centroids, codes_tensor, counts, reduction="sum")
    weight.backward(torch.as_tensor(np.asarray(weight_grad), dtype=torch.float64))
    return np.concatenate(([0.0], centroids.grad.numpy()))


# --- linear_init and density_init ----------------------------------------------------------


def _samples(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(0.0, 0.1, n)
    if kind == "laplace":
        return rng.laplace(0.0, 0.05, n)
    # The kept weights of a pruned layer: nothing near zero, more on one side.
    magnitudes = 0.05 + rng.exponential(0.04, n)
    return magnitudes * rng.choice([-1.0, 1.0], size=n, p=[0.3, 0.7])


_CODE0_HINT = "b bits give k = 2**b - 1 centroids, because code 0 is reserved for the pruned weights"


def _init_cases(spacing_hint: str) -> list[Case]:
    return [
        Case("20 weights, 2 bits", (_samples("normal", 20, 0), 2), _CODE0_HINT),
        Case("kept weights of a pruned layer, 3 bits", (_samples("pruned", 60, 1), 3), spacing_hint),
        Case("heavy tails, 4 bits", (_samples("laplace", 200, 2), 4), spacing_hint),
        Case("5 bits on 1000 weights", (_samples("normal", 1000, 3), 5), _CODE0_HINT),
        Case("1 bit", (_samples("normal", 9, 4), 1), "1 bit gives k = 1 centroid; see the formula for k = 1"),
        Case("all weights equal", (np.full(6, 0.3), 2),
             "equal weights give equal centroids; return each distinct value once (np.unique)"),
        Case("single weight", (np.array([-0.4]), 4), "one weight gives one centroid, the weight itself"),
    ]


def _verify_centroids(args: tuple, expected: np.ndarray, received) -> None:
    if received is None:
        raise Mismatch("the function returned None; return the centroids")
    got = as_array(received, "the centroids").reshape(-1)
    if got.size > 1 and np.any(np.diff(got.astype(np.float64)) <= 0):
        raise Mismatch("the centroids are not distinct and in ascending order")
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    compare_arrays(expected, got, what="the centroids", atol=1e-9 * max(scale, 1.0), rtol=1e-7)


def check_linear_init(linear_init: Callable) -> None:
    """Grade ``linear_init(weights, bits)``: ``2**bits - 1`` centroids evenly spaced from min to max, distinct."""
    cases = _init_cases("space the centroids evenly from min(weights) to max(weights), both included")
    run_check("linear_init", linear_init, cases, reference_linear_init, _verify_centroids, ("weights", "bits"))


def check_density_init(density_init: Callable) -> None:
    """Grade ``density_init(weights, bits)``: the ``(j + 0.5) / k`` quantiles, ``k = 2**bits - 1``, distinct."""
    cases = _init_cases("centroid j is the (j + 0.5) / k quantile (np.quantile's default linear interpolation)")
    run_check("density_init", density_init, cases, reference_density_init, _verify_centroids, ("weights", "bits"))


# --- kmeans_step -------------------------------------------------------------------------------


def _kmeans_cases() -> list[Case]:
    rng = np.random.default_rng(5)
    weights = rng.normal(0.0, 1.0, 30)
    unsorted = np.array([0.9, -1.2, 0.05, 2.4, -0.3, 1.7, -2.2, 0.4, 1.1, -0.8])
    return [
        Case("30 weights, 4 centroids", (weights, np.linspace(weights.min(), weights.max(), 4)),
             "assign each weight to the nearest centroid |w - c|, then move each centroid to the mean of its weights"),
        Case("unsorted weights, 5 centroids", (unsorted, np.array([-2.0, -1.0, 0.0, 1.0, 2.0])),
             "labels follow the order of the weights as given"),
        Case("empty cluster", (np.array([-1.0, -0.9, 1.0, 1.1]), np.array([-1.0, 0.0, 1.0])),
             "a centroid that no weight is nearest to keeps its old value (no NaN, no 0)"),
        Case("weight at a midpoint", (np.array([0.0, 0.5, 1.0, 2.0, 2.5]), np.array([0.0, 1.0, 2.0])),
             "a weight exactly halfway may join either centroid, and the means follow your labels"),
        Case("single weight", (np.array([0.3]), np.array([0.0, 1.0])),
             "the nearest centroid moves onto the weight; the other keeps its value"),
        Case("single centroid", (np.array([0.2, 0.4, 0.9]), np.array([0.0])),
             "with one centroid every weight has label 0 and the centroid becomes their mean"),
        Case("skewed cluster", (np.array([0.0, 0.1, 0.2, 3.0, 5.0, 5.5, 9.0]), np.array([0.0, 5.0])),
             "the update is the mean of the cluster's weights, not its median"),
    ]


def _verify_kmeans(args: tuple, expected: tuple, received) -> None:
    weights = np.asarray(args[0], dtype=np.float64).reshape(-1)
    centroids = np.asarray(args[1], dtype=np.float64).reshape(-1)
    if not isinstance(received, (tuple, list)) or len(received) != 2:
        raise Mismatch(f"expected a pair (new_centroids, labels), received {type(received).__name__}")
    new_centroids = as_array(received[0], "new_centroids")
    labels = as_array(received[1], "labels")
    if labels.shape != weights.shape:
        raise Mismatch(f"labels has shape {tuple(labels.shape)}, expected {tuple(weights.shape)} (one per weight)")
    labels_float = labels.astype(np.float64)
    out_of_range = np.any(labels_float < 0) or np.any(labels_float >= centroids.size)
    if out_of_range or np.any(labels_float != np.round(labels_float)):
        raise Mismatch(f"labels must be integers in 0..{centroids.size - 1}")
    labels = labels_float.astype(np.int64)

    # Every label must point at a nearest centroid; equally near ones (a midpoint) are all accepted.
    distance = np.abs(weights[:, None] - centroids[None, :])
    nearest = distance.min(axis=1)
    chosen = distance[np.arange(weights.size), labels]
    far = np.flatnonzero(chosen > nearest + 1e-12 * (1.0 + np.abs(weights)))
    if far.size:
        i = int(far[0])
        raise Mismatch(f"weight {weights[i]!r} has label {labels[i]} (centroid {centroids[labels[i]]!r}), "
                       f"but centroid {centroids[int(np.argmin(distance[i]))]!r} is nearer")
    compare_arrays(_cluster_means(weights, labels, centroids), new_centroids, what="new_centroids",
                   atol=1e-9, rtol=1e-9)


def check_kmeans_step(kmeans_step: Callable) -> None:
    """Grade ``kmeans_step(weights, centroids) -> (new_centroids, labels)``, one Lloyd iteration."""
    run_check("kmeans_step", kmeans_step, _kmeans_cases(), reference_kmeans_step, _verify_kmeans,
              ("weights", "centroids"))


# --- centroid_gradient ---------------------------------------------------------------------------

_SUM_HINT = "a centroid's gradient is the sum of its weights' gradients, not their mean"


def _gradient_cases() -> list[Case]:
    rng = np.random.default_rng(7)
    codes_4x4 = np.array([[4, 1, 3, 2], [2, 2, 1, 4], [1, 4, 2, 1], [4, 2, 3, 3]])
    grad_4x4 = np.array([[-0.03, -0.01, 0.03, 0.02], [-0.01, 0.01, -0.02, 0.12],
                         [-0.01, 0.02, 0.04, 0.01], [-0.07, -0.02, 0.01, -0.02]])
    pruned_codes = np.array([[0, 1, 0, 2, 2], [3, 0, 0, 1, 3]])
    big_codes = rng.integers(0, 8, size=(6, 7))
    return [
        Case("4x4 layer, codes 1..4", (grad_4x4, codes_4x4, 5), _SUM_HINT),
        Case("pruned weights have code 0", (rng.normal(size=(2, 5)), pruned_codes, 4),
             "code 0 is the fixed value 0 of pruned weights: its entry is always 0, whatever their gradients"),
        Case("unused codes at the end", (np.array([0.5, -0.25, 1.0]), np.array([1, 1, 2]), 6),
             "return one entry per code, n_codes in all, 0 for a code that no weight uses"),
        Case("every weight pruned", (np.array([[0.3, -0.1], [0.2, 0.4]]), np.zeros((2, 2), dtype=np.int64), 3),
             "no weight has a nonzero code, so every entry is 0"),
        Case("single weight", (np.array([[-0.6]]), np.array([[1]]), 2),
             "one weight with code 1: entry 1 is its gradient"),
        Case("6x7 layer, 3-bit codes", (rng.normal(size=(6, 7)), big_codes, 8), _SUM_HINT),
    ]


def _verify_gradient(args: tuple, expected: np.ndarray, received) -> None:
    compare_arrays(expected, received, what="the centroid gradient", atol=1e-7, rtol=1e-5)


def check_centroid_gradient(centroid_gradient: Callable) -> None:
    """Grade ``centroid_gradient(weight_grad, codes, n_codes)``: per code, the summed weight gradient; entry 0 is 0."""
    run_check("centroid_gradient", centroid_gradient, _gradient_cases(), reference_centroid_gradient,
              _verify_gradient, ("weight_grad", "codes", "n_codes"))
