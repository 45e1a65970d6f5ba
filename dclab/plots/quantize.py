"""Weight-sharing figures: centroid initializations over the weights' CDF, and codebooks before and after fine-tuning.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so
that no global figure state is kept and Jupyter shows each returned figure once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from torch import nn

from dclab.kmeans import initial_centroids
from dclab.quantize import kept_weights

__all__ = ["plot_centroid_inits", "plot_codebook_shift"]

# Marker and colour per initialization; the order follows Deep Compression's Figure 4 legend.
_INIT_STYLE = {
    "random": ("v", "tab:green"),
    "density": ("s", "tab:orange"),
    "linear": ("o", "tab:red"),
    "kmeans++": ("D", "tab:purple"),
}


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def _weights(source: nn.Module | torch.Tensor | ArrayLike) -> np.ndarray:
    """Return a layer's kept weights, or a tensor's or array's values, as a float64 vector."""
    if isinstance(source, nn.Module):
        values = kept_weights(source)
    elif isinstance(source, torch.Tensor):
        values = source.detach()
    else:
        values = torch.as_tensor(np.asarray(source))
    values = values.flatten().double().cpu().numpy()
    if values.size == 0:
        raise ValueError("there are no weights to draw (is the layer fully pruned?)")
    return values


def _empirical_cdf(sorted_values: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_values, points, side="right") / sorted_values.size


def plot_centroid_inits(
    weights: nn.Module | torch.Tensor | ArrayLike,
    bits: int = 4,
    inits: Sequence[str] = ("random", "density", "linear"),
    seed: int = 0,
    bins: int = 100,
    ax: Axes | None = None,
    title: str = "Centroid initialization",
) -> Figure:
    """Draw the weight histogram and CDF with the initial centroids of each initialization on the CDF.

    Linear spreads its centroids evenly along the weight axis, density along
    the CDF axis, and random (Forgy) follows the data, so few centroids land
    on the rare large weights.

    Args:
        weights: a layer (its kept weights are drawn), a tensor or an array.
        bits: code width; each initialization places ``2**bits - 1`` centroids.
        inits: initialization names of ``dclab.kmeans.INIT_METHODS``.
        seed: seed of the random initializations.
        bins: histogram bins.
        ax: axes to draw on; a new figure when None.

    Returns:
        The figure holding the axes.

    Raises:
        ValueError: no weights, or an unknown initialization.
    """
    values = _weights(weights)
    sorted_values = np.sort(values)
    ax = _axes(ax, (6.5, 4.0))
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.35, label="weights")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.set_title(title)

    cdf_ax = ax.twinx()
    cdf_ax.plot(sorted_values, np.arange(1, values.size + 1) / values.size, color="tab:blue", linewidth=1.2,
                label="CDF")
    for method in inits:
        centroids = initial_centroids(values, 2**bits - 1, method, seed=seed)
        marker, color = _INIT_STYLE.get(method, ("x", "black"))
        cdf_ax.plot(centroids, _empirical_cdf(sorted_values, centroids), linestyle="none", marker=marker,
                    markersize=5, color=color, label=f"{method} init ({centroids.size})")
    cdf_ax.set_ylabel("cumulative distribution")
    cdf_ax.set_ylim(0.0, 1.02)

    handles, labels = ax.get_legend_handles_labels()
    cdf_handles, cdf_labels = cdf_ax.get_legend_handles_labels()
    cdf_ax.legend(handles + cdf_handles, labels + cdf_labels, loc="upper left", fontsize="small")
    return ax.figure


def _histogram_height(values: np.ndarray, edges: np.ndarray, points: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(values, bins=edges)
    bin_index = np.clip(np.searchsorted(edges, points, side="right") - 1, 0, counts.size - 1)
    return counts[bin_index]


def plot_codebook_shift(
    weights: nn.Module | torch.Tensor | ArrayLike,
    codebook_before: torch.Tensor | ArrayLike,
    codebook_after: torch.Tensor | ArrayLike,
    bins: int = 100,
    ax: Axes | None = None,
    title: str = "Codebook before and after fine-tuning",
) -> Figure:
    """Draw the weight histogram with the shared values before and after centroid fine-tuning.

    Each centroid is drawn on the histogram at its own position (crosses:
    initial codebook, dots: fine-tuned), with a thin line joining the two.

    Args:
        weights: the weights that were clustered: a layer (its kept weights
            are drawn), a tensor or an array; usually taken before quantizing.
        codebook_before: the layer's ``weight_codebook`` after k-means, entry
            0 included (it is the zero of pruned weights and is not drawn).
        codebook_after: the same layer's ``weight_codebook`` after fine-tuning.
        bins: histogram bins.
        ax: axes to draw on; a new figure when None.

    Returns:
        The figure holding the axes.

    Raises:
        ValueError: no weights, or codebooks of different sizes.
    """
    values = _weights(weights)
    before = np.asarray(torch.as_tensor(codebook_before).detach().cpu().double())[1:]
    after = np.asarray(torch.as_tensor(codebook_after).detach().cpu().double())[1:]
    if before.shape != after.shape:
        raise ValueError(
            f"codebooks have {before.size + 1} and {after.size + 1} entries; pass the same layer's codebook "
            "before and after fine-tuning"
        )

    ax = _axes(ax, (6.5, 3.8))
    edges = np.histogram_bin_edges(np.concatenate([values, before, after]), bins=bins)
    ax.hist(values, bins=edges, color="tab:blue", alpha=0.4, label=f"weights ({values.size:,})")
    height_before = _histogram_height(values, edges, before)
    height_after = _histogram_height(values, edges, after)
    for x0, y0, x1, y1 in zip(before, height_before, after, height_after):
        ax.plot([x0, x1], [y0, y1], color="gray", linewidth=0.6)
    ax.plot(before, height_before, linestyle="none", marker="x", color="tab:green",
            label=f"codebook before ({before.size})")
    ax.plot(after, height_after, linestyle="none", marker="o", markersize=4, color="tab:red",
            label="codebook after fine-tuning")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return ax.figure
