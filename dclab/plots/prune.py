"""Pruning figures: sensitivity curves and weight histograms before and after pruning.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so
no global figure state is kept and a figure appears only where a notebook
displays the returned object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from dclab.prune import effective_weight, layer_mask, named_layers, select_layers

__all__ = ["plot_sensitivity", "plot_weight_histogram", "plot_weight_distributions"]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def plot_sensitivity(
    table: Iterable[Mapping[str, object]],
    ax: Axes | None = None,
    title: str = "Pruning sensitivity (no retraining)",
) -> Figure:
    """Draw validation accuracy against the fraction pruned, one curve per layer.

    Args:
        table: rows of :func:`dclab.sensitivity.sensitivity_scan`
            (``layer``, ``sparsity``, ``accuracy`` as fractions).
        ax: axes to draw on; a new figure when None.

    Returns:
        The figure holding the axes.

    Raises:
        ValueError: the table is empty.
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in table:
        curves.setdefault(str(row["layer"]), []).append((float(row["sparsity"]), float(row["accuracy"])))
    if not curves:
        raise ValueError("the sensitivity table is empty; run sensitivity_scan first")

    ax = _axes(ax, (6.0, 4.0))
    for layer, points in curves.items():
        points.sort()
        x, y = zip(*points)
        ax.plot(100 * np.asarray(x), 100 * np.asarray(y), marker="o", markersize=3, label=layer)
    ax.set_xlabel("weights pruned in the layer (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(title="layer")
    return ax.figure


def _values(source: torch.Tensor | nn.Module, kept_only: bool) -> np.ndarray:
    """Flatten a tensor, or a layer's effective weights (only the unmasked ones when ``kept_only``)."""
    if isinstance(source, nn.Module):
        weight = effective_weight(source)
        if kept_only:
            weight = weight[layer_mask(source) != 0]
    else:
        weight = source.detach()
        if kept_only:
            weight = weight[weight != 0]
    return weight.flatten().double().cpu().numpy()


def plot_weight_histogram(
    before: torch.Tensor | nn.Module,
    after: torch.Tensor | nn.Module | None = None,
    bins: int = 100,
    ax: Axes | None = None,
    title: str = "Weight distribution",
    log_scale: bool = False,
) -> Figure:
    """Draw histograms of a layer's weights before and, optionally, after pruning.

    Args:
        before: the dense layer (or its weight tensor); every weight is drawn.
        after: the pruned layer, whose unmasked weights are drawn, or a weight
            tensor, whose nonzero entries are drawn. Both histograms share bins.
        log_scale: logarithmic count axis, which shows the thin tails better.

    Returns:
        The figure holding the axes.
    """
    dense = _values(before, kept_only=False)
    edges = np.histogram_bin_edges(dense, bins=bins)
    ax = _axes(ax, (6.0, 3.5))
    ax.hist(dense, bins=edges, alpha=0.5, label=f"before ({dense.size:,} weights)")
    if after is not None:
        kept = _values(after, kept_only=True)
        ax.hist(kept, bins=edges, alpha=0.7, label=f"after ({kept.size:,} kept)")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.set_title(title)
    if log_scale:
        ax.set_yscale("log")
    ax.legend()
    return ax.figure


def plot_weight_distributions(
    before: nn.Module,
    after: nn.Module,
    layers: Sequence[str] | None = None,
    bins: int = 100,
    log_scale: bool = False,
) -> Figure:
    """Draw one before/after weight histogram per layer of two models, side by side.

    Args:
        before: the dense model.
        after: the same network, pruned.
        layers: layer names; all prunable layers when None.

    Raises:
        KeyError: a layer name that either model lacks.
    """
    names = list(named_layers(before) if layers is None else layers)
    dense_layers = select_layers(before, names)
    pruned_layers = select_layers(after, names)
    figure = Figure(figsize=(3.2 * len(names), 3.0), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        plot_weight_histogram(dense_layers[name], pruned_layers[name], bins=bins, ax=ax, title=name,
                              log_scale=log_scale)
    return figure
