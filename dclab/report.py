"""Per-layer size tables in the layout of Tables 2-5 of Deep Compression (Han, Mao, Dally, ICLR 2016).

Every number comes from real encoded bytes: :func:`size_report` encodes the
model once per storage mode with :func:`dclab.container.encode_model_with_layout`
and reads the byte count of every part of the file (index and weight
streams, codebooks, biases, Huffman tables, headers, the checksum). The
parts add up to the file's size, so a report's total for a mode equals the
size of the file that :func:`dclab.container.save_compressed` writes in that
mode.

Column definitions (per layer; the total row uses the sums):

- weights: the layer's weight count; kept: kept weights / weights.
- weight bits P+Q and +H: 8 * bytes of the weight-code stream / stored
  entries (kept weights plus fillers), in quantized and Huffman mode. The
  Huffman tables are counted apart, in their own column.
- index bits P+Q and +H: the same for the relative-index stream.
- rate P+Q and +H: all of the layer's bytes (streams, codebook, bias,
  tables, field headers) / its dense float32 weights and bias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from dclab.container import MODES, encode_model_with_layout
from dclab.models import compressible_layers, network_of
from dclab.presets import PAPER_RESULTS, Preset

__all__ = ["LayerSizes", "SizeReport", "PARTS", "size_report", "format_report"]

# Parts of a layer's bytes, in the order the tables show them.
PARTS = ("index", "weights", "codebook", "bias", "tables", "header")
# Parts of the bytes that belong to the file rather than a layer.
FILE_PARTS = ("header", "tensors", "checksum")


@dataclass(frozen=True)
class LayerSizes:
    """One layer's counts and its bytes in each encoded mode.

    Attributes:
        name: the paper's layer name.
        weights: number of weights.
        kept: weights kept by pruning.
        entries: relative-index entries (kept weights plus fillers).
        fillers: filler entries.
        bias: number of biases.
        weight_bits: bits per fixed-width weight code, None if unquantized.
        index_bits: bits per fixed-width index value.
        bytes: mode -> part (see ``PARTS``) -> bytes.
    """

    name: str
    weights: int
    kept: int
    entries: int
    fillers: int
    bias: int
    weight_bits: int | None
    index_bits: int
    bytes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def dense_bytes(self) -> int:
        """Bytes of the layer's weights and bias as dense float32."""
        return 4 * (self.weights + self.bias)

    def total_bytes(self, mode: str) -> int:
        """Return all of the layer's bytes in ``mode``."""
        return sum(self.bytes[mode].values())

    def rate(self, mode: str) -> float:
        """Stored size over dense float32 size."""
        return self.total_bytes(mode) / self.dense_bytes

    def bits_per_entry(self, mode: str, part: str) -> float | None:
        """Average bits per entry of the ``"index"`` or ``"weights"`` stream in ``mode``."""
        if mode not in self.bytes or self.entries == 0:
            return None
        return 8 * self.bytes[mode][part] / self.entries


@dataclass(frozen=True)
class SizeReport:
    """Sizes of a model's compressed file in every mode that it supports.

    Attributes:
        network: the network name.
        modes: the modes encoded (``"pruned"`` always; ``"quantized"`` and
            ``"huffman"`` when every layer is quantized).
        layers: per-layer sizes in forward order.
        file_bytes: mode -> file-level part (``FILE_PARTS``) -> bytes.
        dense_bytes: the whole model's dense float32 size (all weights,
            biases and other tensors of the state dict).
    """

    network: str
    modes: tuple[str, ...]
    layers: list[LayerSizes]
    file_bytes: dict[str, dict[str, int]]
    dense_bytes: int

    def total_bytes(self, mode: str) -> int:
        """Return the file's size in ``mode``: every layer's bytes plus the file-level parts."""
        return sum(layer.total_bytes(mode) for layer in self.layers) + sum(self.file_bytes[mode].values())

    def ratio(self, mode: str) -> float:
        """Compression ratio against the dense float32 model."""
        return self.dense_bytes / self.total_bytes(mode)

    def part_total(self, mode: str, part: str) -> int:
        """Bytes of one part summed over the layers."""
        return sum(layer.bytes[mode][part] for layer in self.layers)

    def bits_per_entry(self, mode: str, part: str) -> float | None:
        """Average bits per entry of a stream over all layers."""
        entries = sum(layer.entries for layer in self.layers)
        if mode not in self.modes or entries == 0:
            return None
        return 8 * self.part_total(mode, part) / entries


def size_report(
    model: nn.Module,
    index_bits: int | Mapping[str, int] | None = None,
    preset: str | Preset | None = None,
    modes: Sequence[str] | None = None,
) -> SizeReport:
    """Encode the model once per mode and tabulate where the bytes go.

    Args:
        model: a pruned and/or quantized dclab network.
        index_bits, preset: as for :func:`dclab.container.encode_model`.
        modes: the modes to encode; default: all three if every compressible
            layer is quantized, else ``("pruned",)``.

    Returns:
        The :class:`SizeReport`.

    Raises:
        ValueError: a mode needs quantized layers that are not, or the
            encoder rejects the model (see :func:`dclab.container.encode_model`).
    """
    if modes is None:
        quantized = all("weight_codebook" in m._buffers for m in compressible_layers(model).values())
        modes = MODES if quantized else ("pruned",)
    modes = tuple(modes)
    encoded = {mode: encode_model_with_layout(model, mode, index_bits, preset) for mode in modes}

    layers = []
    for name in compressible_layers(model):
        first = encoded[modes[0]].layers[name]
        per_mode = {mode: {part: encoded[mode].layout.get((name, part), 0) for part in PARTS} for mode in modes}
        weight_bits = next((encoded[m].layers[name]["weight_bits"] for m in modes if m != "pruned"), None)
        layers.append(
            LayerSizes(
                name=name,
                weights=first["numel"],
                kept=first["kept"],
                entries=first["entries"],
                fillers=first["fillers"],
                bias=first["bias"],
                weight_bits=weight_bits,
                index_bits=first["index_bits"],
                bytes=per_mode,
            )
        )
    file_bytes = {mode: {part: encoded[mode].layout.get(("file", part), 0) for part in FILE_PARTS} for mode in modes}
    dense_bytes = sum(layer.dense_bytes for layer in layers) + _other_dense_bytes(model)
    report = SizeReport(network_of(model), modes, layers, file_bytes, dense_bytes)
    for mode in modes:
        if report.total_bytes(mode) != len(encoded[mode].data):  # the parts must account for every byte
            raise RuntimeError(f"size accounting for mode {mode} misses bytes; this is a bug in dclab.container")
    return report


def _other_dense_bytes(model: nn.Module) -> int:
    """Bytes of the state-dict tensors that are not compressible layers' weights or biases."""
    covered = set()
    for module in compressible_layers(model).values():
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            covered.add(id(tensor))
    total = 0
    for tensor in model.state_dict(keep_vars=True).values():
        if id(tensor) not in covered:
            total += tensor.numel() * tensor.element_size()
    return total


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _bits(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _paper_bits(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _with_paper(ours: str, paper: str | None) -> str:
    return ours if paper is None else f"{ours} ({paper})"


def _paper_count(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1e6:g}M"
    if count >= 1_000:
        return f"{count / 1e3:g}K"
    return str(count)


def format_report(report: SizeReport, paper: bool = True, style: str = "markdown") -> str:
    """Format a report as tables: the paper's per-layer layout, then bytes per part.

    Args:
        report: from :func:`size_report`.
        paper: show the paper's numbers in brackets beside ours (from
            ``dclab.presets.PAPER_RESULTS``).
        style: ``"markdown"`` (pipe tables) or ``"text"`` (aligned columns).

    Returns:
        The tables and a summary line per mode, as one string.

    Raises:
        ValueError: unknown style.
    """
    if style not in ("markdown", "text"):
        raise ValueError(f"unknown style {style!r}; use 'markdown' or 'text'")
    published = PAPER_RESULTS.get(report.network, {}) if paper else {}
    sections = [
        _render(_paper_layout_rows(report, published), style),
        _render(_bytes_rows(report), style),
        _summary(report),
    ]
    if paper:
        sections.insert(0, "Numbers in brackets: the paper's (Han, Mao, Dally, ICLR 2016, Tables 2-5).")
    return "\n\n".join(sections)


def _paper_layout_rows(report: SizeReport, published: Mapping) -> list[list[str]]:
    has_q = "quantized" in report.modes
    has_h = "huffman" in report.modes
    header = ["Layer", "Weights", "Kept", "W bits P+Q", "W bits +H", "Idx bits P+Q", "Idx bits +H", "Rate P+Q", "Rate +H"]
    rows = [header]
    for layer in report.layers:
        ref = published.get(layer.name)
        rows.append(
            _layout_cells(
                layer.name,
                layer.weights,
                layer.kept / layer.weights if layer.weights else None,
                layer.bits_per_entry("quantized", "weights") if has_q else None,
                layer.bits_per_entry("huffman", "weights") if has_h else None,
                layer.bits_per_entry("quantized", "index") if has_q else layer.bits_per_entry("pruned", "index"),
                layer.bits_per_entry("huffman", "index") if has_h else None,
                layer.rate("quantized") if has_q else None,
                layer.rate("huffman") if has_h else None,
                ref,
            )
        )
    weights = sum(layer.weights for layer in report.layers)
    kept = sum(layer.kept for layer in report.layers)
    rows.append(
        _layout_cells(
            "total",
            weights,
            kept / weights if weights else None,
            report.bits_per_entry("quantized", "weights"),
            report.bits_per_entry("huffman", "weights"),
            report.bits_per_entry("quantized" if has_q else "pruned", "index"),
            report.bits_per_entry("huffman", "index"),
            report.total_bytes("quantized") / report.dense_bytes if has_q else None,
            report.total_bytes("huffman") / report.dense_bytes if has_h else None,
            published.get("total"),
        )
    )
    return rows


def _layout_cells(name, weights, kept, wq, wh, iq, ih, rq, rh, ref) -> list[str]:
    if ref is None:
        return [name, f"{weights:,}", _percent(kept), _bits(wq), _bits(wh), _bits(iq), _bits(ih),
                _percent(rq, 2), _percent(rh, 2)]
    return [
        name,
        _with_paper(f"{weights:,}", _paper_count(ref.weights)),
        _with_paper(_percent(kept), _percent(ref.keep, 0)),
        _with_paper(_bits(wq), _paper_bits(ref.weight_bits)),
        _with_paper(_bits(wh), _paper_bits(ref.weight_bits_huffman)),
        _with_paper(_bits(iq), _paper_bits(ref.index_bits)),
        _with_paper(_bits(ih), _paper_bits(ref.index_bits_huffman)),
        _with_paper(_percent(rq, 2), _percent(ref.rate_pq, 2)),
        _with_paper(_percent(rh, 2), _percent(ref.rate_pqh, 2)),
    ]


def _bytes_rows(report: SizeReport) -> list[list[str]]:
    mode = report.modes[-1]  # the most compressed mode encoded
    header = [f"Bytes ({mode})", "Index", "Weights", "Codebook", "Bias", "Huffman tables", "Headers", "Other", "Total"]
    rows = [header]
    for layer in report.layers:
        parts = layer.bytes[mode]
        rows.append([layer.name] + [f"{parts[p]:,}" for p in PARTS] + ["0", f"{layer.total_bytes(mode):,}"])
    file_parts = report.file_bytes[mode]
    other = file_parts["tensors"] + file_parts["checksum"]
    file_total = sum(file_parts.values())
    rows.append(["file", "0", "0", "0", "0", "0", f"{file_parts['header']:,}", f"{other:,}", f"{file_total:,}"])
    totals = [report.part_total(mode, p) for p in PARTS]
    totals[-1] += file_parts["header"]
    rows.append(["total"] + [f"{t:,}" for t in totals] + [f"{other:,}", f"{report.total_bytes(mode):,}"])
    return rows


def _summary(report: SizeReport) -> str:
    labels = {"pruned": "pruned (P)", "quantized": "pruned + quantized (P+Q)", "huffman": "P+Q+Huffman (P+Q+H)"}
    lines = [f"{report.network}: dense float32 {report.dense_bytes:,} bytes"]
    for mode in report.modes:
        lines.append(f"- {labels[mode]}: {report.total_bytes(mode):,} bytes, {report.ratio(mode):.1f}x smaller")
    return "\n".join(lines)


def _render(rows: list[list[str]], style: str) -> str:
    if style == "markdown":
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
