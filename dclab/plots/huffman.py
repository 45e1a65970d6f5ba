"""Huffman-coding figures: the code tree, code lengths against frequencies, bits against entropy.

The code itself comes from :mod:`dclab.huffman`: :func:`~dclab.huffman.code_lengths`
builds the Huffman tree from the symbol counts and keeps only each symbol's
depth, and :func:`~dclab.huffman.canonical_codes` numbers the codes of each
length in order. The tree drawn here is the binary trie of those canonical
codes: the tree the decoder walks, with the same depth for every symbol as
the Huffman tree it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from dclab.huffman import canonical_codes, code_lengths

__all__ = [
    "CodeTreeNode",
    "code_tree",
    "entropy_bits",
    "plot_huffman_tree",
    "plot_code_lengths",
    "plot_bits_vs_entropy",
    "plot_symbol_distributions",
]


@dataclass
class CodeTreeNode:
    """A node of a prefix-code tree.

    Attributes:
        count: occurrences of the symbols below this node.
        symbol: the symbol at a leaf, None at an internal node.
        code: the bits from the root to this node, as a string of 0 and 1.
        children: ``{"0": node, "1": node}``; empty at a leaf.
    """

    count: int = 0
    symbol: int | None = None
    code: str = ""
    children: dict[str, "CodeTreeNode"] = field(default_factory=dict)

    def leaves(self) -> list["CodeTreeNode"]:
        """Return the leaves from left (code 0...) to right."""
        if not self.children:
            return [self]
        return [leaf for bit in sorted(self.children) for leaf in self.children[bit].leaves()]

    def depth(self) -> int:
        """Return the length of the longest code below this node, relative to it."""
        if not self.children:
            return 0
        return 1 + max(child.depth() for child in self.children.values())


def code_tree(counts: ArrayLike) -> CodeTreeNode:
    """Build the trie of dclab's canonical Huffman code for these symbol counts.

    Args:
        counts: occurrences per symbol (index = symbol); symbols with count 0 get no code.

    Returns:
        The root; each leaf's ``code`` is the symbol's canonical code, so its
        depth equals :func:`dclab.huffman.code_lengths`.

    Raises:
        ValueError: no symbol has a nonzero count.
    """
    counts = np.asarray(counts).astype(np.int64)
    lengths = code_lengths(counts)
    codes = canonical_codes(lengths)
    present = np.flatnonzero(lengths)
    if present.size == 0:
        raise ValueError("every count is zero, so there is no symbol to code; pass at least one positive count")
    root = CodeTreeNode()
    for symbol in present:
        bits = format(int(codes[symbol]), f"0{int(lengths[symbol])}b")
        node = root
        node.count += int(counts[symbol])
        for position, bit in enumerate(bits):
            node = node.children.setdefault(bit, CodeTreeNode(code=bits[: position + 1]))
            node.count += int(counts[symbol])
        node.symbol = int(symbol)
    return root


def entropy_bits(counts: ArrayLike) -> float:
    """Return the Shannon entropy of the symbol frequencies in bits per symbol: -sum p log2 p."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("every count is zero, so the entropy is undefined; pass at least one positive count")
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def _layout(node: CodeTreeNode, depth: int, positions: dict[int, tuple[float, int]], next_leaf: list[float]) -> float:
    """Place leaves left to right and each internal node above the middle of its children."""
    if not node.children:
        x = next_leaf[0]
        next_leaf[0] += 1.0
    else:
        xs = [_layout(node.children[bit], depth + 1, positions, next_leaf) for bit in sorted(node.children)]
        x = sum(xs) / len(xs)
    positions[id(node)] = (x, depth)
    return x


def plot_huffman_tree(counts: ArrayLike, labels: Mapping[int, str] | None = None, title: str | None = None) -> Figure:
    """Draw the code tree of :func:`code_tree`: edges labelled 0 and 1, each node with its count.

    Args:
        counts: occurrences per symbol; about 30 present symbols still draw legibly.
        labels: symbol -> text shown under its leaf (default: the symbol number).
        title: figure title.

    Returns:
        The figure.

    Raises:
        ValueError: no symbol has a nonzero count.
    """
    root = code_tree(counts)
    positions: dict[int, tuple[float, int]] = {}
    _layout(root, 0, positions, [0.0])
    leaves = root.leaves()
    depth = root.depth()
    figure = Figure(figsize=(max(6.0, 0.55 * len(leaves) + 1.0), 0.55 * depth + 2.2), layout="constrained")
    ax = figure.add_subplot()

    def draw(node: CodeTreeNode) -> None:
        x, y = positions[id(node)]
        for bit, child in sorted(node.children.items()):
            cx, cy = positions[id(child)]
            ax.plot([x, cx], [-y, -cy], color="0.55", linewidth=0.8, zorder=1)
            ax.text((x + cx) / 2, -(y + cy) / 2, bit, fontsize="xx-small", color="tab:red", ha="center",
                    va="center", bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none"})
            draw(child)
        leaf = not node.children
        ax.scatter([x], [-y], s=60 if leaf else 25, color="tab:blue" if leaf else "0.3", zorder=2)
        if leaf:
            name = labels.get(node.symbol, str(node.symbol)) if labels else str(node.symbol)
            ax.text(x, -y - 0.35, f"{name}\n{node.count:,}\n{node.code}", ha="center", va="top",
                    fontsize="xx-small")

    draw(root)
    ax.set_xlim(-0.8, len(leaves) - 0.2)
    ax.set_ylim(-depth - 1.6, 0.5)
    ax.set_axis_off()
    ax.set_title(title or f"Huffman code tree: {len(leaves)} symbols, {root.count:,} occurrences "
                          "(leaf: symbol, count, code)", fontsize="medium")
    return figure


def plot_code_lengths(counts: ArrayLike, ax: Axes | None = None, title: str = "Code length against frequency") -> Figure:
    """Draw each symbol's frequency and its Huffman code length beside the ideal -log2(p).

    Args:
        counts: occurrences per symbol; symbols are drawn most frequent first.
        ax: axes to draw on; a new figure when None.

    Raises:
        ValueError: no symbol has a nonzero count.
    """
    counts = np.asarray(counts).astype(np.int64)
    present = np.flatnonzero(counts)
    if present.size == 0:
        raise ValueError("every count is zero, so there is no symbol to code; pass at least one positive count")
    lengths = code_lengths(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    p = counts[order] / counts.sum()
    if ax is None:
        ax = Figure(figsize=(max(5.6, 0.14 * order.size + 3.0), 3.6), layout="constrained").add_subplot()
    x = np.arange(order.size)
    ax.bar(x, p, color="tab:blue", alpha=0.5, label="frequency")
    ax.set_yscale("log")
    ax.set_ylabel("frequency (log scale)")
    ax.set_xlabel("symbols, most frequent first")
    step = max(1, order.size // 20)
    ax.set_xticks(x[::step], [str(s) for s in order[::step]], fontsize="x-small")
    lengths_ax = ax.twinx()
    lengths_ax.step(x, lengths[order], where="mid", color="tab:red", label="Huffman code length")
    lengths_ax.plot(x, -np.log2(p), color="tab:green", linestyle="--", label="-log2(frequency)")
    lengths_ax.set_ylabel("bits")
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = lengths_ax.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, fontsize="small", loc="upper center")
    ax.set_title(title)
    return ax.figure


def plot_bits_vs_entropy(rows: Sequence[Mapping[str, float]], ax: Axes | None = None,
                         title: str = "Bits per symbol") -> Figure:
    """Draw fixed-width bits, Huffman bits and entropy per symbol for several streams.

    Args:
        rows: one mapping per stream with ``label``, ``fixed_bits``,
            ``huffman_bits`` (average code bits per symbol) and ``entropy_bits``.
        ax: axes to draw on; a new figure when None.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("no rows to draw")
    if ax is None:
        ax = Figure(figsize=(max(5.6, 0.9 * len(rows) + 2.0), 3.6), layout="constrained").add_subplot()
    x = np.arange(len(rows))
    width = 0.27
    series = (("fixed_bits", "fixed width", "0.6"), ("huffman_bits", "Huffman", "tab:blue"),
              ("entropy_bits", "entropy", "tab:green"))
    for i, (key, label, color) in enumerate(series):
        ax.bar(x + (i - 1) * width, [float(row[key]) for row in rows], width, label=label, color=color)
    ax.set_xticks(x, [str(row["label"]) for row in rows], rotation=30 if len(rows) > 4 else 0, fontsize="small")
    ax.set_ylabel("bits per symbol")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return ax.figure


def plot_symbol_distributions(codes: ArrayLike, index: ArrayLike, weight_bits: int, index_bits: int,
                              title: str = "") -> Figure:
    """Draw the distributions of a layer's weight codes and index values (what Huffman coding exploits).

    Args:
        codes: the stored weight codes of one layer (code 0 = filler entries).
        index: the relative-index values of the same entries.
        weight_bits: code width; the first panel covers ``0 .. 2**weight_bits - 1``.
        index_bits: index width; the second panel covers ``0 .. 2**index_bits - 1``.
        title: prefix of the panel titles (for example the layer's name).

    Raises:
        ValueError: a value outside its bit width.
    """
    codes = np.asarray(codes).astype(np.int64).reshape(-1)
    index = np.asarray(index).astype(np.int64).reshape(-1)
    figure = Figure(figsize=(10.0, 3.4), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, values, bits, what in ((axes[0], codes, weight_bits, "weight code"), (axes[1], index, index_bits,
                                                                                  "index value")):
        top = (1 << bits) - 1
        if values.size and (values.min() < 0 or values.max() > top):
            raise ValueError(f"{what}s {values.min()}..{values.max()} do not fit {bits} bits")
        counts = np.bincount(values, minlength=top + 1)
        ax.bar(np.arange(top + 1), counts, width=0.85)
        uniform = values.size / (top + 1)
        ax.axhline(uniform, color="tab:red", linestyle="--", linewidth=1, label=f"uniform over {top + 1} values")
        ax.set_xlabel(what)
        ax.set_ylabel("entries")
        ax.set_title(f"{title} {what}s".strip() + f"\n{values.size:,} entries, entropy {entropy_bits(counts):.2f} of {bits} bits",
                     fontsize="medium")
        ax.legend(fontsize="small")
    return figure
