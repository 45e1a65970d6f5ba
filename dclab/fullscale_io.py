"""Layer-at-a-time writing and reading of dclab's compressed file, for full-size networks.

:func:`dclab.container.encode_model` reads every layer out of its module as
a float copy and int64 codes, and :func:`dclab.container.decode_layers`
returns every layer densely with int64 codes: 12 bytes per weight, which is
1.2 GB for VGG-16's fc6 alone. The functions here write and read the same
file format one layer at a time from arrays the caller already has (uint8
codes, views of the weights). That keeps compressing VGG-16 under 2.5 GB of
memory, imports included (``benchmarks/bench_fullscale.py`` measures it).

They reuse the container's own layer writer, stream readers and checks, so
the bytes are those that :func:`dclab.container.encode_model` writes for
the same model, and :func:`dclab.container.load_compressed` reads the files.
The framing (file header, layer records, checksum) is the container's;
``docs/file-format.md`` describes it.

NOTE: this module calls private helpers of :mod:`dclab.container`
(``_Writer``, ``_write_layer``, ``_write_tensors``, ``_Reader``,
``_check_envelope``, ``_Architecture``, ``_read_stream``,
``_read_tensors``) and repeats its envelope and layer-record header
layout. A public layer-level API in the container (a writer that accepts
``LayerData`` objects and a reader that yields a layer's entries before
densifying) would replace this duplication.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dclab import container
from dclab.container import MODES, CompressedFileError, EncodedModel, LayerData
from dclab.models import MODEL_NAMES
from dclab.sparse import decode_positions, decode_relative

__all__ = ["LayerEntries", "StreamingEncoder", "read_header", "iter_layer_entries"]


class StreamingEncoder:
    """Write one compressed file in one mode, one layer at a time.

    Example:
        >>> encoder = StreamingEncoder("vgg16", "huffman", layer_count=16)
        >>> for layer in layers:              # dclab.container.LayerData objects
        ...     encoder.add_layer(layer)
        >>> encoded = encoder.finish(model)   # an EncodedModel, as encode_model_with_layout returns
    """

    def __init__(self, network: str, mode: str, layer_count: int) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if network not in MODEL_NAMES:
            raise ValueError(f"unknown network {network!r}; expected one of {', '.join(MODEL_NAMES)}")
        self.network = network
        self.mode = mode
        self.stats: dict[str, dict[str, int | None]] = {}
        self._writer = container._Writer(offset=container._FILE_HEAD.size)
        self._writer.put_text("file", network)
        self._writer.put("file", "header", container._U8.pack(MODES.index(mode)))
        self._writer.put("file", "header", container._U16.pack(layer_count))

    def add_layer(self, layer: LayerData) -> None:
        """Append one layer's record (layers must come in forward order).

        Raises:
            ValueError: a quantized mode and a layer without codebook and codes.
        """
        if self.mode != "pruned" and (layer.codebook is None or layer.codes is None):
            raise ValueError(f"layer {layer.name} has no codebook and codes; {self.mode} mode needs them")
        self.stats[layer.name] = container._write_layer(self._writer, layer, self.mode)

    def finish(self, model: nn.Module) -> EncodedModel:
        """Append the model's other dense tensors, the header and the checksum.

        Returns:
            The file's bytes and where they went, like
            :func:`dclab.container.encode_model_with_layout`.
        """
        writer = self._writer
        container._write_tensors(writer, model, self.network)
        payload = b"".join(writer.parts)
        head = container._FILE_HEAD.pack(container.MAGIC, container.VERSION, 0, len(payload))
        checksum = container._CHECKSUM.pack(zlib.crc32(payload, zlib.crc32(head)))
        layout = dict(writer.layout)
        layout[("file", "header")] = layout.get(("file", "header"), 0) + len(head)
        layout[("file", "checksum")] = len(checksum)
        end = len(head) + len(payload)
        spans = [(0, len(head), "file", "header"), *writer.spans, (end, len(checksum), "file", "checksum")]
        return EncodedModel(head + payload + checksum, self.mode, self.network, layout, self.stats, spans)


def encode_layers(model: nn.Module, network: str, mode: str, layers: Iterable[LayerData], layer_count: int) -> EncodedModel:
    """Encode a whole file from layer records (see :class:`StreamingEncoder`)."""
    encoder = StreamingEncoder(network, mode, layer_count)
    for layer in layers:
        encoder.add_layer(layer)
    return encoder.finish(model)


@dataclass(frozen=True)
class LayerEntries:
    """One layer of a compressed file as stored: relative-index entries, not yet densified.

    Attributes:
        name: the paper's layer name.
        shape: the weight's shape.
        weight_bits: bits per code (0 for a pruned-mode file).
        index_bits: bits per relative-index value.
        codebook: float32 shared values (entry 0 is 0.0), or None in pruned mode.
        bias: float32 bias, or None.
        index: per entry, the zeros skipped since the previous entry.
        values: per entry, the code (quantized modes) or float32 weight (pruned mode); 0 at fillers.
    """

    name: str
    shape: tuple[int, ...]
    weight_bits: int
    index_bits: int
    codebook: np.ndarray | None
    bias: np.ndarray | None
    index: np.ndarray
    values: np.ndarray

    @property
    def numel(self) -> int:
        """Number of weights in the layer."""
        return int(np.prod(self.shape))

    def positions(self) -> np.ndarray:
        """Return every entry's flat (row-major) position, fillers included."""
        return decode_positions(self.index, self.numel)

    def entry_weights(self) -> np.ndarray:
        """Return every entry's float32 weight: ``codebook[values]``, or the values in pruned mode."""
        if self.codebook is None:
            return self.values.astype(np.float32, copy=False)
        return self.codebook[self.values]

    def dense_codes(self) -> np.ndarray:
        """Return the flat codes of the whole layer, in the smallest unsigned dtype the stream uses.

        Raises:
            ValueError: a pruned-mode layer, which has no codes.
        """
        if self.codebook is None:
            raise ValueError(f"layer {self.name} is stored in pruned mode and has no codes")
        return decode_relative(self.index, self.values, self.numel)

    def dense_weight(self) -> np.ndarray:
        """Return the layer's float32 weights with its shape (``codebook[codes]`` when quantized)."""
        if self.codebook is None:
            flat = decode_relative(self.index, self.values.astype(np.float32, copy=False), self.numel)
        else:
            flat = self.codebook[self.dense_codes()]
        return flat.reshape(self.shape)


def read_header(data: bytes | bytearray | memoryview) -> tuple[str, str]:
    """Check a file's envelope and return its (network, mode).

    Raises:
        CompressedFileError: the file is malformed.
    """
    network, mode, _, _, _ = _open(data)
    return network, mode


def _open(data) -> tuple[str, str, "container._Reader", "container._Architecture", int]:
    view = memoryview(data).cast("B")
    payload_size = container._check_envelope(view)
    reader = container._Reader(view, container._FILE_HEAD.size, container._FILE_HEAD.size + payload_size)
    network = reader.text("network name")
    if network not in MODEL_NAMES:
        raise CompressedFileError(f"unknown network {network!r}; expected one of {', '.join(MODEL_NAMES)}")
    mode_code = reader.integer(container._U8, "mode")
    if mode_code >= len(MODES):
        raise CompressedFileError(f"unknown mode code {mode_code}; expected 0..{len(MODES) - 1}")
    architecture = container._Architecture(network)
    layer_count = reader.integer(container._U16, "layer count")
    if layer_count != len(architecture.layers):
        raise CompressedFileError(f"file has {layer_count} layers, but {network} has {len(architecture.layers)}")
    return network, MODES[mode_code], reader, architecture, layer_count


def iter_layer_entries(
    data: bytes | bytearray | memoryview, tensors: dict[str, torch.Tensor] | None = None
) -> Iterator[LayerEntries]:
    """Yield a file's layers one at a time, in forward order, without densifying them.

    The checksum is verified before the first layer. After the last layer
    the dense tensors are read (into ``tensors`` when given) and the file
    must end there.

    Raises:
        CompressedFileError: the file is malformed.
    """
    _, _, reader, architecture, _ = _open(data)
    for name in list(architecture.layers):
        layer, architecture = _read_entries(reader, name, architecture)
        yield layer
    dense = container._read_tensors(reader, architecture.dense)
    if reader.offset != reader.end:
        raise CompressedFileError(f"{reader.end - reader.offset} unexpected bytes after the last record")
    if tensors is not None:
        tensors.update(dense)


def _read_entries(reader, name: str, architecture) -> tuple[LayerEntries, object]:
    """Read one layer record with the checks of ``dclab.container``, stopping before densifying."""
    U8, U32 = container._U8, container._U32
    stored_name = reader.text("layer name")
    if stored_name != name:
        raise CompressedFileError(f"expected layer {name!r} next, found {stored_name!r}")
    ndim = reader.integer(U8, f"{name} ndim")
    if not 1 <= ndim <= 4:
        raise CompressedFileError(f"layer {name} has {ndim} dimensions; weights have 1 to 4")
    shape = tuple(reader.integer(U32, f"{name} shape") for _ in range(ndim))
    architecture = architecture.accept_shape(name, shape)
    numel = int(np.prod(shape))
    _, bias_size = architecture.layers[name]

    weight_bits, index_bits, entries = reader.unpack(container._LAYER_BITS, f"{name} bit widths")
    if not 0 <= weight_bits <= 16 or not 1 <= index_bits <= 16:
        raise CompressedFileError(f"layer {name}: weight_bits={weight_bits} or index_bits={index_bits} out of range")
    if entries > numel:
        raise CompressedFileError(f"layer {name} claims {entries} entries for {numel} weights")
    codebook_size = reader.integer(U32, f"{name} codebook size")
    if (weight_bits == 0) != (codebook_size == 0) or codebook_size > (1 << weight_bits):
        raise CompressedFileError(f"layer {name}: codebook of {codebook_size} values with {weight_bits}-bit codes")
    codebook = container._read_floats(reader, codebook_size, f"{name} codebook") if codebook_size else None
    if codebook is not None and codebook[0] != 0.0:
        raise CompressedFileError(f"layer {name}: codebook entry 0 is {codebook[0]}, but code 0 must mean 0.0")
    stored_bias = reader.integer(U32, f"{name} bias size")
    if stored_bias != bias_size:
        raise CompressedFileError(f"layer {name} stores {stored_bias} biases, but {architecture.network} needs {bias_size}")
    bias = container._read_floats(reader, bias_size, f"{name} bias") if bias_size else None

    read_stream = container._read_stream
    index = read_stream(reader, f"{name} index", entries, symbol_bits=index_bits, alphabet=1 << index_bits)
    if codebook is None:
        values = read_stream(reader, f"{name} weights", entries, symbol_bits=None, alphabet=0)
    else:
        values = read_stream(reader, f"{name} codes", entries, symbol_bits=weight_bits, alphabet=codebook_size)
        # Fixed-width streams come back as int64; 1 byte per code is enough up to 8 bits.
        values = values.astype(np.uint8 if codebook_size <= 256 else np.uint16, copy=False)
    try:
        decode_positions(index, numel)  # rejects an index that runs past the layer
    except ValueError as error:
        raise CompressedFileError(f"layer {name}: {error}") from None
    return LayerEntries(name, shape, weight_bits, index_bits, codebook, bias, index, values), architecture
