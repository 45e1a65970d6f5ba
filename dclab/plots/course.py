"""Figures of the lecture notebooks: layer sizes, the pipeline's stages, trade-offs and bit widths.

Every function takes measured numbers (models, reports, result rows) and
returns a ``matplotlib.figure.Figure``; none computes accuracy itself.
Figures are built without pyplot, so no global figure state is kept and
Jupyter shows each returned figure once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from torch import nn

from dclab.models import compressible_layers
from dclab.presets import PAPER_RESULTS
from dclab.prune import effective_weight, layer_mask
from dclab.report import SizeReport

__all__ = [
    "plot_layer_sizes",
    "plot_stage_sizes",
    "plot_tradeoff",
    "plot_accuracy_vs_bits",
    "plot_bits_panels",
    "plot_layer_rates",
    "plot_weight_stages",
    "plot_prune_history",
    "plot_fine_tune_curves",
]

# Labels of the storage modes and pipeline stages.
STAGE_LABELS = {
    "dense": "dense\nfloat32",
    "pruned": "pruned\n(P)",
    "quantized": "quantized\n(P+Q)",
    "huffman": "Huffman\n(P+Q+H)",
}


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def plot_layer_sizes(models: Mapping[str, nn.Module]) -> Figure:
    """Draw each network's weights and biases per layer, with the float32 kilobytes on each bar.

    Args:
        models: title -> one of dclab's networks (random weights suffice;
            only shapes are read).

    Returns:
        A figure with one horizontal bar chart per network.

    Raises:
        ValueError: no models.
    """
    if not models:
        raise ValueError("give at least one model to draw")
    figure = Figure(figsize=(4.2 * len(models), 0.45 * max(len(compressible_layers(m)) for m in models.values()) + 1.6),
                    layout="constrained")
    axes = figure.subplots(1, len(models), squeeze=False)[0]
    for ax, (title, model) in zip(axes, models.items()):
        layers = compressible_layers(model)
        names = list(layers)[::-1]  # first layer on top
        weights = np.array([layers[n].weight.numel() for n in names])
        biases = np.array([0 if layers[n].bias is None else layers[n].bias.numel() for n in names])
        ax.barh(names, weights, color="tab:blue", label="weights")
        ax.barh(names, biases, left=weights, color="tab:orange", label="biases")
        for y, (w, b) in enumerate(zip(weights, biases)):
            ax.annotate(f"{4 * (w + b) / 1000:,.1f} KB", (w + b, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize="small")
        ax.set_xscale("log")
        ax.set_xlim(right=weights.max() * 30)
        total = int((weights + biases).sum())
        ax.set_title(f"{title}: {total:,} parameters, {4 * total / 1000:,.0f} KB")
        ax.set_xlabel("parameters (log scale)")
        ax.legend(loc="lower right", fontsize="small")
    return figure


def _field(row, name: str, default=None):
    """Read ``name`` from a mapping or an object (pipeline rows are dataclasses)."""
    if isinstance(row, Mapping):
        return row.get(name, default)
    return getattr(row, name, default)


def plot_stage_sizes(
    stages: Sequence,
    paper_ratios: Mapping[str, float] | None = None,
    ax: Axes | None = None,
    title: str = "Size after each stage",
) -> Figure:
    """Draw the file size after each stage, with the compression ratio and accuracy on each bar.

    Args:
        stages: rows with ``stage`` (``dense``, ``pruned``, ``quantized``,
            ``huffman``), ``size_bytes`` and optionally ``top1`` (a fraction):
            :class:`dclab.pipeline.StageResult` objects or mappings. The first
            row is the reference for the ratios.
        paper_ratios: stage -> the paper's ratio, drawn as a marker at the
            size that ratio would give.
        ax: axes to draw on; a new figure when None.

    Returns:
        The figure holding the axes.

    Raises:
        ValueError: no stages.
    """
    if not stages:
        raise ValueError("no stages to draw")
    ax = _axes(ax, (6.4, 3.6))
    names = [str(_field(row, "stage")) for row in stages]
    sizes = np.array([float(_field(row, "size_bytes")) for row in stages])
    reference = sizes[0]
    labels = [STAGE_LABELS.get(name, name) for name in names]
    bars = ax.bar(labels, sizes / 1000, color=["0.6", "tab:blue", "tab:orange", "tab:green", "tab:red"][: len(sizes)])
    for bar, row, size in zip(bars, stages, sizes):
        text = f"{size / 1000:,.1f} KB\n{reference / size:.1f}x"
        top1 = _field(row, "top1")
        if top1 is not None:
            text += f"\n{100 * top1:.2f}%"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize="small")
    if paper_ratios:
        xs = [i for i, name in enumerate(names) if name in paper_ratios]
        ys = [reference / paper_ratios[names[i]] / 1000 for i in xs]
        ax.plot(xs, ys, linestyle="none", marker="_", markersize=30, markeredgewidth=2, color="black",
                label="paper's ratio")
        ax.legend(fontsize="small")
    ax.set_yscale("log")
    ax.set_ylim(top=reference / 1000 * 8)
    ax.set_ylabel("file size (KB, log scale)")
    ax.set_title(title)
    return ax.figure


def plot_tradeoff(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    baseline_accuracy: float,
    points: Mapping[str, tuple[float, float]] | None = None,
    ax: Axes | None = None,
    title: str = "Accuracy against size",
    floor: float = -25.0,
) -> Figure:
    """Draw the accuracy change against the stored size (as a fraction of dense), one curve per method.

    This is the layout of Deep Compression's trade-off figure (accuracy
    loss against compression rate for pruning, quantization and both).

    Args:
        curves: label -> (size as a fraction of the dense model, accuracy) points.
        baseline_accuracy: the dense model's accuracy (fraction); the y axis
            shows accuracy minus this, in percentage points.
        points: label -> one (fraction, accuracy) point, drawn as a star
            (for example the retrained pipeline's result).
        ax: axes to draw on; a new figure when None.
        floor: lowest accuracy change shown, in percentage points. Points
            below it are drawn at the floor as downward triangles, so that
            one collapsed setting does not flatten every other curve.

    Returns:
        The figure holding the axes.

    Raises:
        ValueError: no curves.
    """
    if not curves:
        raise ValueError("no curves to draw")
    ax = _axes(ax, (6.4, 4.0))
    lowest = floor
    for label, pairs in curves.items():
        ordered = sorted(pairs)
        x = 100 * np.array([p[0] for p in ordered])
        change = 100 * (np.array([p[1] for p in ordered]) - baseline_accuracy)
        clipped = change < floor
        line = ax.plot(x, np.maximum(change, floor), marker="o", markersize=3, label=label)[0]
        if clipped.any():
            ax.plot(x[clipped], np.full(clipped.sum(), floor), linestyle="none", marker="v", markersize=8,
                    color=line.get_color())
        lowest = min(lowest, float(np.maximum(change, floor).min()))
    for label, (fraction, accuracy) in (points or {}).items():
        ax.plot([100 * fraction], [100 * (accuracy - baseline_accuracy)], linestyle="none", marker="*",
                markersize=13, label=label)
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    ax.set_ylim(bottom=lowest - 1.0)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("stored size (% of dense float32, log scale; triangles: below the axis)")
    ax.set_ylabel("accuracy change (percentage points)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return ax.figure


def plot_accuracy_vs_bits(
    series: Mapping[str, Sequence[tuple[int, float]]],
    baseline_accuracy: float | None = None,
    ax: Axes | None = None,
    title: str = "Accuracy against bits per weight",
) -> Figure:
    """Draw accuracy against the code width, one line per series.

    Args:
        series: label -> (bits, accuracy as a fraction) points.
        baseline_accuracy: drawn as a dotted line (for example the float32 accuracy).
        ax: axes to draw on; a new figure when None.

    Returns:
        The figure holding the axes.

    Raises:
        ValueError: no series.
    """
    if not series:
        raise ValueError("no series to draw")
    ax = _axes(ax, (5.2, 3.6))
    for label, pairs in series.items():
        ordered = sorted(pairs)
        ax.plot([p[0] for p in ordered], [100 * p[1] for p in ordered], marker="o", markersize=4, label=label)
    if baseline_accuracy is not None:
        ax.axhline(100 * baseline_accuracy, color="0.4", linestyle=":", label="float32")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax.figure


def plot_bits_panels(
    panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    baseline_accuracy: float | None = None,
) -> Figure:
    """Draw :func:`plot_accuracy_vs_bits` panels side by side (for example conv layers and fc layers).

    Args:
        panels: panel title -> series as for :func:`plot_accuracy_vs_bits`.
        baseline_accuracy: the float32 accuracy, drawn in every panel.

    Raises:
        ValueError: no panels.
    """
    if not panels:
        raise ValueError("no panels to draw")
    figure = Figure(figsize=(4.6 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, series) in zip(axes, panels.items()):
        plot_accuracy_vs_bits(series, baseline_accuracy, ax=ax, title=title)
    return figure


def plot_layer_rates(report: SizeReport, modes: Sequence[str] = ("quantized", "huffman"),
                     ax: Axes | None = None, title: str | None = None) -> Figure:
    """Draw each layer's stored size as a percentage of dense, ours beside the paper's (Tables 2-5).

    Args:
        report: a :class:`dclab.report.SizeReport` with the modes drawn.
        modes: ``quantized`` (P+Q) and/or ``huffman`` (P+Q+H).
        ax: axes to draw on; a new figure when None.

    Returns:
        The figure holding the axes.

    Raises:
        ValueError: a mode the report does not have.
    """
    missing = [mode for mode in modes if mode not in report.modes]
    if missing:
        raise ValueError(f"the report has modes {report.modes}, not {missing}")
    published = PAPER_RESULTS.get(report.network, {})
    names = [layer.name for layer in report.layers]
    ax = _axes(ax, (max(5.0, 0.8 * len(names) + 2.0), 3.6))
    x = np.arange(len(names))
    width = 0.8 / (2 * len(modes))
    paper_field = {"quantized": "rate_pq", "huffman": "rate_pqh"}
    short = {"pruned": "P", "quantized": "P+Q", "huffman": "P+Q+H"}
    for i, mode in enumerate(modes):
        ours = [100 * layer.rate(mode) for layer in report.layers]
        ax.bar(x + (2 * i) * width - 0.4 + width / 2, ours, width, label=f"dclab {short[mode]}")
        if mode in paper_field:
            paper = [100 * getattr(published[n], paper_field[mode]) if n in published else np.nan for n in names]
            ax.bar(x + (2 * i + 1) * width - 0.4 + width / 2, paper, width, label=f"paper {short[mode]}",
                   alpha=0.6, hatch="//")
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("stored size (% of dense, log scale)")
    ax.set_title(title or f"{report.network}: size per layer")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return ax.figure


def _layer_values(model: nn.Module, layer: str, kept_only: bool) -> np.ndarray:
    module = compressible_layers(model)[layer]
    weight = effective_weight(module)
    if kept_only:
        weight = weight[layer_mask(module) != 0]
    return weight.flatten().double().cpu().numpy()


def plot_weight_stages(stages: Mapping[str, nn.Module], layer: str, bins: int = 120) -> Figure:
    """Draw one layer's weight histogram at several stages, stacked with a shared x axis.

    An unpruned stage shows every weight; a pruned stage shows only its
    unmasked weights, so the gap around zero is visible.

    Args:
        stages: title -> model (for example dense, pruned, retrained).
        layer: the paper's layer name.
        bins: histogram bins, shared by all panels.

    Raises:
        ValueError: no stages.
        KeyError: a model without that layer.
    """
    if not stages:
        raise ValueError("no stages to draw")
    values = {title: _layer_values(model, layer, kept_only=True) for title, model in stages.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(values.values())), bins=bins)
    figure = Figure(figsize=(6.4, 1.7 * len(stages) + 0.6), layout="constrained")
    axes = figure.subplots(len(stages), 1, sharex=True, squeeze=False)[:, 0]
    colors = ["0.5", "tab:blue", "tab:green", "tab:orange", "tab:red"]
    for i, (ax, (title, weights)) in enumerate(zip(axes, values.items())):
        ax.hist(weights, bins=edges, color=colors[i % len(colors)])
        ax.set_title(f"{layer}, {title}: {weights.size:,} weights", fontsize="medium")
        ax.set_ylabel("count")
    axes[-1].set_xlabel("weight value")
    return figure


def plot_prune_history(history: Sequence[Mapping[str, object]], ax: Axes | None = None,
                       title: str = "Iterative pruning") -> Figure:
    """Draw the kept fraction and validation accuracy after each round of :func:`dclab.sensitivity.iterative_prune`.

    Args:
        history: its rows (``round``, ``sparsity``, ``val_top1``); round 0 is before pruning.
        ax: axes to draw on; a new figure when None.

    Raises:
        ValueError: an empty history.
    """
    if not history:
        raise ValueError("the history is empty")
    ax = _axes(ax, (5.6, 3.4))
    rounds = [int(row["round"]) for row in history]
    kept = [100 * (1 - float(row["sparsity"])) for row in history]
    accuracy = [100 * float(row["val_top1"]) for row in history]
    ax.bar(rounds, kept, color="tab:blue", alpha=0.5, label="weights kept (%)")
    ax.set_xlabel("round (0 = before pruning)")
    ax.set_ylabel("weights kept (%)")
    ax.set_xticks(rounds)
    accuracy_ax = ax.twinx()
    accuracy_ax.plot(rounds, accuracy, color="tab:red", marker="o", label="validation accuracy (%)")
    accuracy_ax.set_ylabel("validation accuracy (%)")
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = accuracy_ax.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, fontsize="small", loc="center right")
    ax.set_title(title)
    return ax.figure


def plot_fine_tune_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    start: Mapping[str, float] | None = None,
    keys: Sequence[str] = ("loss", "val_top1"),
    title: str = "Centroid fine-tuning",
) -> Figure:
    """Draw per-epoch curves of several fine-tuning runs, one panel per history field.

    Args:
        histories: label -> per-epoch rows of :func:`dclab.train.train`
            (for example summed against averaged centroid gradients).
        start: field -> value before fine-tuning, drawn at epoch 0.
        keys: the row fields to draw; fields ending in ``top1`` are drawn in percent.
        title: the figure's title.

    Raises:
        ValueError: no histories, or no keys.
    """
    if not histories or not keys:
        raise ValueError("give at least one history and one key to draw")
    names = {"loss": "training loss", "train_top1": "training accuracy (%)", "val_top1": "validation accuracy (%)"}
    figure = Figure(figsize=(4.4 * len(keys), 3.4), layout="constrained")
    axes = figure.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        scale = 100.0 if key.endswith("top1") else 1.0
        for label, rows in histories.items():
            epochs = [int(row["epoch"]) for row in rows]
            values = [scale * float(row[key]) for row in rows]
            if start is not None and key in start:
                epochs, values = [0] + epochs, [scale * start[key]] + values
            ax.plot(epochs, values, marker="o", label=label)
        ax.set_xlabel("epoch (0 = after k-means)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(names.get(key, key))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle(title)
    return figure
