"""Sparse-storage figures: a row in relative-index form, index-value histograms, bytes against index bits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import ArrayLike

from dclab.sparse import decode_positions, encode_relative, max_skip

__all__ = ["plot_relative_index_example", "plot_index_histogram", "plot_index_bits_sweep"]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def _cell(ax: Axes, x: float, y: float, text: str, color: str, fontsize: str = "small") -> None:
    ax.add_patch(Rectangle((x, y), 1, 1, facecolor=color, edgecolor="0.3", linewidth=0.8))
    ax.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize=fontsize)


def plot_relative_index_example(values: ArrayLike, index_bits: int, title: str | None = None) -> Figure:
    """Draw a sparse row and its relative-index entries, fillers shaded, in the layout of Deep Compression's relative-index figure.

    The entries come from :func:`dclab.sparse.encode_relative`: each stores
    the zeros skipped since the previous entry and a value; a filler (value
    0) is inserted when more than ``2**index_bits - 1`` zeros would be skipped.

    Args:
        values: a 1-D row (zeros are pruned weights); at most 40 entries draw legibly.
        index_bits: bits per index entry.
        title: figure title (default names the bit width).

    Returns:
        A figure: the row with positions on top, the stored entries below,
        each entry joined to the position it decodes to.

    Raises:
        ValueError: values that are not 1-D.
    """
    row = np.asarray(values)
    if row.ndim != 1:
        raise ValueError(f"draw one row at a time; got shape {row.shape}")
    relative = encode_relative(row, index_bits)
    positions = decode_positions(relative.index, row.size)
    fillers = relative.values == 0

    figure = Figure(figsize=(max(6.0, 0.34 * row.size + 1.0), 3.2), layout="constrained")
    ax = figure.add_subplot()
    for position, value in enumerate(row):
        _cell(ax, position, 3, f"{value:g}", "tab:blue" if value != 0 else "white", "x-small")
        ax.text(position + 0.5, 4.2, str(position), ha="center", fontsize="xx-small", color="0.4")
    for entry, (skip, value, position) in enumerate(zip(relative.index, relative.values, positions)):
        color = "#fdd0a2" if fillers[entry] else "#9ecae1"
        x = entry * 1.6
        _cell(ax, x, 0.0, str(int(skip)), color, "x-small")
        _cell(ax, x, -1.0, "0" if fillers[entry] else f"{value:g}", color, "x-small")
        ax.annotate("", xy=(position + 0.5, 3.0), xytext=(x + 0.5, 1.0),
                    arrowprops={"arrowstyle": "->", "color": "0.5", "linewidth": 0.6})
    ax.text(-0.3, 0.5, "zeros skipped", ha="right", va="center", fontsize="x-small")
    ax.text(-0.3, -0.5, "value", ha="right", va="center", fontsize="x-small")
    ax.text(-0.3, 3.5, "row", ha="right", va="center", fontsize="x-small")
    width = max(row.size, relative.entries * 1.6)
    ax.set_xlim(-4.0, width + 0.5)
    ax.set_ylim(-1.4, 4.8)
    ax.set_axis_off()
    ax.set_title(title or (f"{index_bits}-bit relative index: an entry skips at most {max_skip(index_bits)} zeros; "
                           f"{relative.entries} entries, {relative.fillers} fillers (shaded)"), fontsize="medium")
    return figure


def plot_index_histogram(
    index: ArrayLike,
    index_bits: int,
    fillers: int | None = None,
    ax: Axes | None = None,
    title: str = "Relative index values",
) -> Figure:
    """Draw how often each index value (zeros skipped per entry) occurs.

    Args:
        index: the index stream of a layer (``RelativeIndex.index``).
        index_bits: its bit width; the x axis covers ``0 .. 2**index_bits - 1``.
        fillers: number of filler entries, all at the largest value; named in the legend.
        ax: axes to draw on; a new figure when None.

    Raises:
        ValueError: an index value outside the bit width.
    """
    values = np.asarray(index).astype(np.int64).reshape(-1)
    top = max_skip(index_bits)
    if values.size and (values.min() < 0 or values.max() > top):
        raise ValueError(f"index values {values.min()}..{values.max()} do not fit {index_bits} bits")
    counts = np.bincount(values, minlength=top + 1)
    ax = _axes(ax, (5.6, 3.4))
    colors = ["tab:blue"] * top + ["tab:orange"]
    ax.bar(np.arange(top + 1), counts, color=colors, width=0.85)
    label = f"{top} (largest value"
    label += f"; {fillers:,} of these are fillers)" if fillers is not None else ")"
    ax.bar([], [], color="tab:orange", label=label)
    ax.set_xlabel("zeros skipped before the entry (index value)")
    ax.set_ylabel("entries")
    ax.set_title(f"{title}: {values.size:,} entries")
    ax.legend(fontsize="small")
    return ax.figure


def plot_index_bits_sweep(results: Sequence, ax: Axes | None = None, title: str = "Bytes against index bits") -> Figure:
    """Draw a layer's bytes and filler count against index bits.

    Args:
        results: :class:`dclab.widgets.IndexBitsResult` rows (``index_bits``,
            ``index_bytes``, ``value_bytes``, ``layer_bytes``, ``fillers``),
            for example ``IndexBitsExplorer.curve``.
        ax: axes to draw on; a new figure when None.

    Raises:
        ValueError: no results.
    """
    if not results:
        raise ValueError("no results to draw")
    ax = _axes(ax, (5.8, 3.6))
    bits = [r.index_bits for r in results]
    ax.plot(bits, [r.layer_bytes / 1000 for r in results], marker="o", label="layer total")
    ax.plot(bits, [r.index_bytes / 1000 for r in results], marker=".", label="index stream")
    ax.plot(bits, [r.value_bytes / 1000 for r in results], marker=".", label="value stream")
    best = min(results, key=lambda r: r.layer_bytes)
    ax.plot([best.index_bits], [best.layer_bytes / 1000], marker="*", markersize=13, linestyle="none",
            color="tab:red", label=f"smallest: {best.index_bits} bits")
    ax.set_xlabel("index bits")
    ax.set_ylabel("KB")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fillers_ax = ax.twinx()
    fillers_ax.plot(bits, [r.fillers for r in results], color="0.5", linestyle="--", label="filler entries")
    fillers_ax.set_yscale("symlog")
    fillers_ax.set_ylabel("filler entries")
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = fillers_ax.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, fontsize="small")
    return ax.figure
