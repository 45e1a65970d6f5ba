"""Time dclab's exact 1-D k-means against scikit-learn's Lloyd on layer-sized data.

Both start from the same initial centroids and run until their assignments
stop changing (tol=0, a large max_iter). The weights are float32 draws from a
Laplace distribution, the usual shape of a trained layer's weights. Inertia
is computed the same way for both, in float64, from each one's labels and
centroids. The script prints a markdown table and exits with status 1 when
dclab is less than ``--min-speedup`` times faster or reaches a higher inertia
than scikit-learn (beyond a relative 1e-9, the rounding of the float64 sum).

Usage:
    python benchmarks/bench_kmeans.py            # 4 million weights, 31 clusters
    python benchmarks/bench_kmeans.py --n 200000 # a quick run
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np
import sklearn
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_info

from dclab.kmeans import INIT_METHODS, initial_centroids, kmeans_1d
from machine import cpu_model  # benchmarks/machine.py; scripts run from benchmarks/


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4_000_000, help="number of weights")
    parser.add_argument("--k", type=int, default=31, help="number of clusters (31 = a 5-bit codebook)")
    parser.add_argument("--init", choices=INIT_METHODS, default="linear", help="centroid initialization")
    parser.add_argument("--scale", type=float, default=0.02, help="Laplace scale of the weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of random inits")
    parser.add_argument("--max-iter", type=int, default=10_000, help="iteration cap for both implementations")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of dclab (the median is reported)")
    parser.add_argument("--min-speedup", type=float, default=20.0, help="required speed ratio over scikit-learn")
    return parser.parse_args(argv)




def inertia_float64(values: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    residual = values.astype(np.float64) - centroids.astype(np.float64)[labels]
    return float(np.dot(residual, residual))


def time_dclab(values: np.ndarray, init: np.ndarray, max_iter: int, repeat: int):
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = kmeans_1d(values, init, max_iter=max_iter)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), result


def time_sklearn(values: np.ndarray, init: np.ndarray, max_iter: int):
    model = KMeans(
        n_clusters=init.size,
        init=init.astype(values.dtype).reshape(-1, 1),
        n_init=1,
        algorithm="lloyd",
        tol=0.0,
        max_iter=max_iter,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning is reported in the table instead
        model.fit(values.reshape(-1, 1))
    return time.perf_counter() - start, model


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    values = rng.laplace(scale=args.scale, size=args.n).astype(np.float32)
    init = initial_centroids(values, args.k, args.init, seed=args.seed)

    ours_seconds, ours = time_dclab(values, init, args.max_iter, args.repeat)
    theirs_seconds, theirs = time_sklearn(values, init, args.max_iter)

    ours_inertia = inertia_float64(values, ours.centroids, ours.labels)
    # sklearn may reorder centroids (it moves empty clusters), so compare in ascending order.
    order = np.argsort(theirs.cluster_centers_.ravel(), kind="stable")
    theirs_centroids = theirs.cluster_centers_.ravel()[order]
    theirs_labels = np.argsort(order)[theirs.labels_]
    theirs_inertia = inertia_float64(values, theirs_centroids, theirs_labels)
    theirs_converged = theirs.n_iter_ < args.max_iter
    speedup = theirs_seconds / ours_seconds
    same_labels = float(np.mean(ours.labels == theirs_labels))

    threads = sorted({pool["num_threads"] for pool in threadpool_info()})
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"numpy {np.__version__}, scikit-learn {sklearn.__version__} (thread pools: {threads} threads)")
    print(f"data: {args.n:,} float32 Laplace(scale={args.scale}) weights, k={args.k}, "
          f"init={args.init} (same for both), tol=0, max_iter={args.max_iter}")
    print()
    print("| implementation | time (s) | iterations | converged | inertia |")
    print("|---|---|---|---|---|")
    print(f"| dclab.kmeans.kmeans_1d (median of {args.repeat}) | {ours_seconds:.3f} | {ours.n_iter} "
          f"| {ours.converged} | {ours_inertia:.9g} |")
    print(f"| sklearn KMeans(algorithm='lloyd') | {theirs_seconds:.3f} | {theirs.n_iter_} "
          f"| {theirs_converged} | {theirs_inertia:.9g} |")
    print()
    print(f"speed ratio: {speedup:.1f}x (required: {args.min_speedup:g}x)")
    print(f"inertia ratio dclab / sklearn: {ours_inertia / theirs_inertia:.9f}")
    print(f"labels equal: {100 * same_labels:.4f}% of weights; "
          f"max centroid difference: {np.abs(ours.centroids - theirs_centroids).max():.3g}")

    failures = []
    if speedup < args.min_speedup:
        failures.append(f"speed ratio {speedup:.1f}x is below {args.min_speedup:g}x")
    if ours_inertia > theirs_inertia * (1 + 1e-9):
        failures.append(f"dclab inertia {ours_inertia:.9g} is above sklearn's {theirs_inertia:.9g}")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print("PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
