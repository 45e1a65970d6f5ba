"""The weight-sharing example in the layout of Deep Compression's weight-sharing figure (Han, Mao, Dally, ICLR 2016).

A small weight matrix is clustered into k shared values: the matrix becomes
a matrix of cluster indices plus a k-entry codebook. During fine-tuning the
gradient matrix is grouped by the same indices, each group is summed, and
the sums update the centroids.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

__all__ = ["plot_weight_sharing_example"]

# One pale colour per cluster, as in the paper's figure.
_CLUSTER_COLORS = ["#9ecae1", "#fdd0a2", "#c7e9c0", "#dadaeb", "#fcbba1", "#d9d9d9", "#fee391", "#c6dbef"]


def _as_array(values: ArrayLike | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _draw_cells(ax: Axes, texts: list[list[str]], colors: list[list[str]], title: str) -> None:
    """Draw a table of coloured cells with text, row 0 at the top."""
    rows, cols = len(texts), max(len(r) for r in texts)
    for i, row in enumerate(texts):
        for j, text in enumerate(row):
            ax.add_patch(_rectangle(j, rows - 1 - i, colors[i][j]))
            ax.text(j + 0.5, rows - 1 - i + 0.5, text, ha="center", va="center", fontsize="small")
    ax.set_xlim(0, cols)
    ax.set_ylim(0, rows)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title, fontsize="medium")


def _rectangle(x: float, y: float, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), 1, 1, facecolor=color, edgecolor="white", linewidth=2)


def plot_weight_sharing_example(
    weights: ArrayLike | torch.Tensor,
    codes: ArrayLike | torch.Tensor,
    centroids: ArrayLike | torch.Tensor,
    gradient: ArrayLike | torch.Tensor,
    centroid_gradient: ArrayLike | torch.Tensor,
    lr: float,
) -> Figure:
    """Draw weights, cluster indices, codebook, grouped gradients and the fine-tuned centroids.

    Args:
        weights: (r, c) weight matrix.
        codes: (r, c) cluster index of each weight, in ``0..k-1``.
        centroids: (k,) shared values; ``centroids[codes]`` approximates ``weights``.
        gradient: (r, c) gradient of the loss with respect to each weight.
        centroid_gradient: (k,) gradient of each centroid (the per-cluster sums).
        lr: learning rate of the centroid update drawn in the last panel.

    Returns:
        A figure with two rows of panels: clustering (top) and the centroid update (bottom).

    Raises:
        ValueError: shapes that do not match, or codes outside the codebook.
    """
    weights, codes, gradient = _as_array(weights), _as_array(codes).astype(int), _as_array(gradient)
    centroids, centroid_gradient = _as_array(centroids).reshape(-1), _as_array(centroid_gradient).reshape(-1)
    if weights.ndim != 2 or codes.shape != weights.shape or gradient.shape != weights.shape:
        raise ValueError(f"weights {weights.shape}, codes {codes.shape} and gradient {gradient.shape} must be equal 2-D shapes")
    k = centroids.size
    if centroid_gradient.size != k or codes.min() < 0 or codes.max() >= k:
        raise ValueError(f"codes must lie in 0..{k - 1} and centroid_gradient must have {k} entries")
    if k > len(_CLUSTER_COLORS):
        raise ValueError(f"the example draws at most {len(_CLUSTER_COLORS)} clusters, got {k}")

    cell_colors = [[_CLUSTER_COLORS[c] for c in row] for row in codes]
    order = np.arange(k)[::-1]  # largest centroid on top, as in the paper's figure
    figure = Figure(figsize=(11.0, 5.4), layout="constrained")
    grid = figure.add_gridspec(2, 4, width_ratios=[4, 4, 2.2, 2.2])

    ax = figure.add_subplot(grid[0, 0])
    _draw_cells(ax, [[f"{w:.2f}" for w in row] for row in weights], cell_colors, "weights (32-bit float)")
    ax = figure.add_subplot(grid[0, 1])
    _draw_cells(ax, [[str(c) for c in row] for row in codes], cell_colors,
                f"cluster index ({max(1, int(np.ceil(np.log2(k))))}-bit)")
    ax = figure.add_subplot(grid[0, 2])
    _draw_cells(ax, [[f"{j}: {centroids[j]:.2f}"] for j in order], [[_CLUSTER_COLORS[j]] for j in order],
                "codebook")
    updated = centroids - lr * centroid_gradient
    ax = figure.add_subplot(grid[0, 3])
    _draw_cells(ax, [[f"{updated[j]:.3f}"] for j in order], [[_CLUSTER_COLORS[j]] for j in order],
                "fine-tuned centroids")

    ax = figure.add_subplot(grid[1, 0])
    _draw_cells(ax, [[f"{g:.2f}" for g in row] for row in gradient], cell_colors, "gradient")
    grouped = [[f"{g:.2f}" for g in gradient[codes == j]] for j in order]
    width = max(len(row) for row in grouped)
    padded = [row + [""] * (width - len(row)) for row in grouped]
    ax = figure.add_subplot(grid[1, 1])
    _draw_cells(ax, padded, [[_CLUSTER_COLORS[j] if t else "white" for t in row] for j, row in zip(order, padded)],
                "grouped by cluster index")
    ax = figure.add_subplot(grid[1, 2])
    _draw_cells(ax, [[f"{centroid_gradient[j]:.2f}"] for j in order], [[_CLUSTER_COLORS[j]] for j in order],
                "sum per cluster")
    ax = figure.add_subplot(grid[1, 3])
    ax.set_axis_off()
    ax.text(0.0, 0.5, f"centroid -= lr x sum\nlr = {lr:g}", fontsize="medium", va="center")
    return figure
