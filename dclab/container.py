"""The compressed model file: pruned, quantized or Huffman-coded layers in one file.

A file contains one of dclab's networks (``lenet300``, ``lenet5``,
``alexnet``, ``vgg16``), its layers named as in Deep Compression (Han, Mao,
Dally, ICLR 2016): ip1..ip3, conv1..fc8 and so on. Each compressible layer is stored in relative-index form
(:mod:`dclab.sparse`) as two streams, the index values and the stored
values, in one of three modes:

- ``"pruned"``: float32 values of the kept weights, fixed-width indices.
- ``"quantized"``: fixed-width weight codes and indices, plus the codebook.
- ``"huffman"``: Huffman-coded weight codes and indices (:mod:`dclab.huffman`),
  plus the codebook.

Biases and every other tensor of the state dict are stored dense. Loading
executes no code (no pickle): :func:`load_compressed` rebuilds the network
with :func:`dclab.models.build_model` and fills in the decoded weights, which
equal the saved model's weights exactly. Every field is checked against the
file size and the network's layer shapes before anything is allocated, and
every kind of malformed input (truncation, flipped bits, a wrong magic or
version, inconsistent fields) raises :class:`CompressedFileError`.

The byte-by-byte layout is in ``docs/file-format.md``.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dclab import huffman
from dclab.models import MODEL_NAMES, PAPER_LAYER_NAMES, build_model, compressible_layers, network_of
from dclab.presets import Preset, get_preset
from dclab.prune import effective_weight
from dclab.sparse import decode_relative, encode_relative

__all__ = [
    "MAGIC",
    "VERSION",
    "MODES",
    "CompressedFileError",
    "EncodedModel",
    "encode_model",
    "encode_model_with_layout",
    "decode_model",
    "save_compressed",
    "load_compressed",
    "decode_layers",
    "DecodedLayer",
    "LayerData",
    "resolve_bits",
]

log = logging.getLogger(__name__)

MAGIC = b"\x89DCLAB\r\n"
VERSION = 1
MODES = ("pruned", "quantized", "huffman")

# Stream encodings.
RAW_FLOAT32 = 0
FIXED_WIDTH = 1
HUFFMAN = 2

_FILE_HEAD = struct.Struct("<8sHHQ")  # magic, version, flags, payload size
_CHECKSUM = struct.Struct("<I")
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_LAYER_BITS = struct.Struct("<BBQ")  # weight_bits, index_bits, entries

# Dtypes allowed for the dense tensors; the code is what the file stores.
_TENSOR_DTYPES = {
    1: torch.float32,
    2: torch.float64,
    3: torch.float16,
    4: torch.bfloat16,
    5: torch.int64,
    6: torch.int32,
    7: torch.int16,
    8: torch.int8,
    9: torch.uint8,
    10: torch.bool,
}
_DTYPE_CODES = {dtype: code for code, dtype in _TENSOR_DTYPES.items()}

# Names of the module attributes that carry compression state, never stored as dense tensors.
_STATE_SUFFIXES = ("weight", "weight_orig", "weight_mask", "weight_codebook", "weight_codes", "weight_centroids", "bias")


_LENETS = ("lenet300", "lenet5")
# Largest number of classes accepted for a LeNet's last layer.
MAX_CLASSES = 1 << 16


class CompressedFileError(ValueError):
    """A compressed file is malformed: truncated, corrupted, or inconsistent with its network."""


# ---------------------------------------------------------------------------
# Reading a layer out of a model
# ---------------------------------------------------------------------------


@dataclass
class LayerData:
    """One compressible layer in the form the file stores.

    Attributes:
        name: the paper's layer name.
        shape: the weight's shape.
        weight: flat float32 weights as the forward pass uses them.
        kept: flat bool mask of the stored weights.
        codebook: float32 shared values (entry 0 is 0.0), or None if unquantized.
        codes: flat int64 codes into ``codebook``, or None.
        bias: float32 bias, or None.
        weight_bits: bits per weight code (quantized layers), else None.
        index_bits: bits per relative-index value.
    """

    name: str
    shape: tuple[int, ...]
    weight: np.ndarray
    kept: np.ndarray
    codebook: np.ndarray | None
    codes: np.ndarray | None
    bias: np.ndarray | None
    weight_bits: int | None
    index_bits: int


def _is_pruned(module: nn.Module) -> bool:
    return "weight_orig" in module._parameters and "weight_mask" in module._buffers


def _bits_for(values: int) -> int:
    """Return the bits needed to number ``values`` codes (at least 1)."""
    return max(1, (values - 1).bit_length())


def _read_layer(name: str, module: nn.Module, index_bits: int, weight_bits: int | None) -> LayerData:
    """Collect one layer's weights, mask, codebook and codes, checking the quantization invariants."""
    # Recomputed from weight_orig and the mask, because torch.nn.utils.prune
    # only refreshes module.weight in a forward pass.
    weight = effective_weight(module)
    if weight.dtype != torch.float32:
        raise ValueError(f"layer {name} has {weight.dtype} weights; the file stores float32, so call model.float() first")
    flat = weight.cpu().reshape(-1).numpy().copy()
    bias = None
    if getattr(module, "bias", None) is not None:
        if module.bias.dtype != torch.float32:
            raise ValueError(f"layer {name} has a {module.bias.dtype} bias; the file stores float32, so call model.float()")
        bias = module.bias.detach().cpu().reshape(-1).numpy().copy()

    codebook = codes = None
    if "weight_codebook" in module._buffers and "weight_codes" in module._buffers:
        codebook, codes, weight_bits = _read_codebook(name, module, flat, weight_bits)
        kept = codes != 0
    elif _is_pruned(module):
        kept = module.weight_mask.detach().cpu().reshape(-1).numpy() != 0
        weight_bits = None
    else:
        kept = flat != 0
        weight_bits = None
    return LayerData(name, tuple(weight.shape), flat, kept, codebook, codes, bias, weight_bits, index_bits)


def _read_codebook(
    name: str, module: nn.Module, flat_weight: np.ndarray, weight_bits: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    codebook = module.weight_codebook.detach().cpu()
    codes = module.weight_codes.detach().cpu()
    if codebook.dtype != torch.float32 or codebook.ndim != 1 or codebook.numel() == 0:
        raise ValueError(f"layer {name}: weight_codebook must be a non-empty 1-D float32 tensor")
    if codes.is_floating_point() or codes.dtype == torch.bool:
        raise ValueError(f"layer {name}: weight_codes must be an integer tensor, got {codes.dtype}")
    if codes.numel() != flat_weight.size:
        raise ValueError(f"layer {name}: weight_codes has {codes.numel()} elements, the weight {flat_weight.size}")
    codebook_np = codebook.numpy().copy()
    codes_np = codes.reshape(-1).to(torch.int64).numpy()
    if codebook_np[0] != 0.0:
        raise ValueError(f"layer {name}: weight_codebook[0] is {codebook_np[0]}, but code 0 is reserved for 0.0")
    if codes_np.size and (codes_np.min() < 0 or codes_np.max() >= codebook_np.size):
        raise ValueError(f"layer {name}: codes {codes_np.min()}..{codes_np.max()} are outside the codebook of {codebook_np.size}")
    if not np.array_equal(codebook_np[codes_np], flat_weight):
        raise ValueError(
            f"layer {name}: weight != weight_codebook[weight_codes]; re-quantize or sync the codebook "
            "(dclab.quantize.sync_codebooks) before saving"
        )
    if weight_bits is None:
        weight_bits = _bits_for(codebook_np.size)
    if codebook_np.size > 1 << weight_bits:
        raise ValueError(f"layer {name}: a codebook of {codebook_np.size} values does not fit {weight_bits}-bit codes")
    return codebook_np, codes_np, weight_bits


def resolve_bits(
    model: nn.Module, index_bits: int | Mapping[str, int] | None = None, preset: str | Preset | None = None
) -> tuple[dict[str, int], dict[str, int | None]]:
    """Return per-layer (index bits, weight bits) for a model.

    Index bits: an int for every layer, a mapping per layer (layers not in it
    use the preset), or None for the preset. Weight bits come from an
    explicit preset; without one they are the bits the layer's codebook
    needs (None means "derive from the codebook").

    Raises:
        ValueError: a mapping names an unknown layer or a value is out of range.
    """
    network = network_of(model)
    layers = list(compressible_layers(model))
    chosen = preset if isinstance(preset, Preset) else get_preset(network, preset or "paper")
    per_layer_index = {name: chosen.layer(name).index_bits for name in layers}
    if isinstance(index_bits, Mapping):
        unknown = set(index_bits) - set(layers)
        if unknown:
            raise ValueError(f"index_bits names unknown layers {sorted(unknown)}; layers are {layers}")
        per_layer_index.update(index_bits)
    elif index_bits is not None:
        per_layer_index = {name: index_bits for name in layers}
    for name, bits in per_layer_index.items():
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"index_bits for {name} is {bits!r}; use an integer in 1..16")
    weight_bits = {name: (chosen.layer(name).weight_bits if preset is not None else None) for name in layers}
    return per_layer_index, weight_bits


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


@dataclass
class EncodedModel:
    """An encoded file and where its bytes went.

    Attributes:
        data: the file's bytes.
        mode: the storage mode.
        network: the network name.
        layout: bytes per (owner, part). Owners are layer names and
            ``"file"``; parts are ``"index"``, ``"weights"``, ``"codebook"``,
            ``"bias"``, ``"tables"`` (Huffman code lengths and block
            lengths), ``"header"`` (field headers), ``"tensors"`` and
            ``"checksum"``. The values add up to ``len(data)``.
        layers: per layer: numel, kept, entries, fillers, index_bits,
            weight_bits and bias size.
        spans: (offset, size, owner, part) of every field group in file
            order, for inspecting or mutating a file.
    """

    data: bytes
    mode: str
    network: str
    layout: dict[tuple[str, str], int] = field(default_factory=dict)
    layers: dict[str, dict[str, int | None]] = field(default_factory=dict)
    spans: list[tuple[int, int, str, str]] = field(default_factory=list)


class _Writer:
    """Collect the payload's parts and count the bytes per (owner, part)."""

    def __init__(self, offset: int) -> None:
        self.parts: list[bytes] = []
        self.layout: dict[tuple[str, str], int] = {}
        self.spans: list[tuple[int, int, str, str]] = []
        self.offset = offset

    def put(self, owner: str, part: str, data: bytes) -> None:
        self.parts.append(data)
        self.count(owner, part, len(data))

    def count(self, owner: str, part: str, size: int) -> None:
        """Account for ``size`` bytes that were appended to ``parts``."""
        self.layout[(owner, part)] = self.layout.get((owner, part), 0) + size
        self.spans.append((self.offset, size, owner, part))
        self.offset += size

    def put_text(self, owner: str, text: str) -> None:
        raw = text.encode("utf-8")
        if len(raw) > 255:
            raise ValueError(f"name {text!r} is longer than 255 bytes")
        self.put(owner, "header", _U8.pack(len(raw)) + raw)


def encode_model(
    model: nn.Module,
    mode: str = "huffman",
    index_bits: int | Mapping[str, int] | None = None,
    preset: str | Preset | None = None,
) -> bytes:
    """Encode a model into the bytes of a compressed file.

    Args:
        model: one of dclab's networks, its compressible layers pruned
            (``weight_mask``) and/or quantized (``weight_codebook`` and
            ``weight_codes`` buffers).
        mode: ``"pruned"``, ``"quantized"`` or ``"huffman"``.
        index_bits: bits per relative-index value: an int, a mapping per
            layer, or None for the preset.
        preset: preset name or object for index and weight bits (default:
            the paper's index bits, weight bits from each codebook's size).

    Returns:
        The file's bytes.

    Raises:
        ValueError: unknown mode, a layer that the mode needs quantized is
            not, or quantization buffers that do not reproduce the weight.
    """
    return encode_model_with_layout(model, mode, index_bits, preset).data


def encode_model_with_layout(
    model: nn.Module,
    mode: str = "huffman",
    index_bits: int | Mapping[str, int] | None = None,
    preset: str | Preset | None = None,
) -> EncodedModel:
    """Encode a model like :func:`encode_model` and also return where the bytes went."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    network = network_of(model)
    index_per_layer, weight_bits_per_layer = resolve_bits(model, index_bits, preset)
    writer = _Writer(offset=_FILE_HEAD.size)
    writer.put_text("file", network)
    writer.put("file", "header", _U8.pack(MODES.index(mode)))

    layers = compressible_layers(model)
    writer.put("file", "header", _U16.pack(len(layers)))
    stats = {}
    for name, module in layers.items():
        layer = _read_layer(name, module, index_per_layer[name], weight_bits_per_layer[name])
        if mode != "pruned" and layer.codebook is None:
            raise ValueError(
                f"layer {name} is not quantized (no weight_codebook and weight_codes buffers); "
                f"quantize the model first (dclab.quantize) or use mode='pruned'"
            )
        stats[name] = _write_layer(writer, layer, mode)

    _write_tensors(writer, model, network)
    payload = b"".join(writer.parts)
    head = _FILE_HEAD.pack(MAGIC, VERSION, 0, len(payload))
    checksum = _CHECKSUM.pack(zlib.crc32(payload, zlib.crc32(head)))
    layout = dict(writer.layout)
    layout[("file", "header")] = layout.get(("file", "header"), 0) + len(head)
    layout[("file", "checksum")] = len(checksum)
    spans = [(0, len(head), "file", "header"), *writer.spans, (len(head) + len(payload), len(checksum), "file", "checksum")]
    return EncodedModel(head + payload + checksum, mode, network, layout, stats, spans)


def _write_layer(writer: _Writer, layer: LayerData, mode: str) -> dict[str, int | None]:
    name = layer.name
    if mode == "pruned":
        relative = encode_relative(layer.weight, layer.index_bits, kept=layer.kept)
        weight_bits = 0
    else:
        relative = encode_relative(layer.codes, layer.index_bits, kept=layer.kept)
        weight_bits = layer.weight_bits

    writer.put_text(name, name)
    writer.put(name, "header", _U8.pack(len(layer.shape)) + b"".join(_U32.pack(n) for n in layer.shape))
    writer.put(name, "header", _LAYER_BITS.pack(weight_bits, layer.index_bits, relative.entries))
    codebook = layer.codebook if mode != "pruned" else np.zeros(0, dtype=np.float32)
    writer.put(name, "header", _U32.pack(codebook.size))
    writer.put(name, "codebook", codebook.astype("<f4").tobytes())
    bias = layer.bias if layer.bias is not None else np.zeros(0, dtype=np.float32)
    writer.put(name, "header", _U32.pack(bias.size))
    writer.put(name, "bias", bias.astype("<f4").tobytes())

    if mode == "huffman":
        _write_huffman(writer, name, "index", relative.index, 1 << layer.index_bits)
        _write_huffman(writer, name, "weights", relative.values, codebook.size)
    else:
        _write_fixed(writer, name, "index", relative.index, layer.index_bits)
        if mode == "pruned":
            writer.put(name, "header", _U8.pack(RAW_FLOAT32))
            writer.put(name, "weights", relative.values.astype("<f4").tobytes())
        else:
            _write_fixed(writer, name, "weights", relative.values, weight_bits)
    return {
        "numel": int(layer.weight.size),
        "kept": int(layer.kept.sum()),
        "entries": relative.entries,
        "fillers": relative.fillers,
        "index_bits": layer.index_bits,
        "weight_bits": weight_bits or None,
        "bias": 0 if layer.bias is None else int(layer.bias.size),
    }


def _write_fixed(writer: _Writer, owner: str, part: str, values: np.ndarray, width: int) -> None:
    writer.put(owner, "header", _U8.pack(FIXED_WIDTH) + _U8.pack(width))
    writer.put(owner, part, huffman.pack_fixed(values, width))


def _write_huffman(writer: _Writer, owner: str, part: str, values: np.ndarray, alphabet_size: int) -> None:
    stream = huffman.encode(values, alphabet_size=alphabet_size)
    sizes = huffman.stream_sizes(stream)
    writer.put(owner, "header", _U8.pack(HUFFMAN))
    writer.parts.append(stream)
    writer.count(owner, "tables", sizes.table_bytes)  # the table comes first in the stream
    writer.count(owner, part, sizes.code_bytes)


def _dense_tensor_names(model: nn.Module, network: str) -> list[str]:
    """Return the state-dict keys that are not compressible layers' weights or biases."""
    compressed_modules = set(PAPER_LAYER_NAMES[network].values())
    names = []
    for key in _architecture_state(network, model).keys():
        module_path, _, attribute = key.rpartition(".")
        if module_path in compressed_modules and attribute in _STATE_SUFFIXES:
            continue
        names.append(key)
    return names


def _write_tensors(writer: _Writer, model: nn.Module, network: str) -> None:
    state = model.state_dict()
    names = _dense_tensor_names(model, network)
    writer.put("file", "header", _U16.pack(len(names)))
    for key in names:
        if key not in state:
            raise ValueError(f"the model's state dict lacks {key!r}, which {network} needs")
        tensor = state[key].detach().cpu().contiguous()
        if tensor.dtype not in _DTYPE_CODES:
            raise ValueError(f"tensor {key} has dtype {tensor.dtype}, which the file format does not store")
        raw = key.encode("utf-8")
        writer.put("file", "tensors", _U16.pack(len(raw)) + raw)
        writer.put("file", "tensors", _U8.pack(_DTYPE_CODES[tensor.dtype]) + _U8.pack(tensor.ndim))
        writer.put("file", "tensors", b"".join(_U64.pack(n) for n in tensor.shape))
        writer.put("file", "tensors", _tensor_bytes(tensor))


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    # Little-endian raw bytes; bfloat16 has no numpy dtype, so go through int16.
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    array = tensor.numpy()
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def save_compressed(
    model: nn.Module,
    path: str | Path,
    mode: str = "huffman",
    index_bits: int | Mapping[str, int] | None = None,
    preset: str | Preset | None = None,
) -> int:
    """Write a model to a compressed file (see :func:`encode_model` for the arguments).

    Returns:
        The number of bytes written, which is the file's size.
    """
    data = encode_model(model, mode, index_bits, preset)
    path = Path(path)
    path.write_bytes(data)
    log.info("wrote %s (%s mode, %d bytes)", path, mode, len(data))
    return len(data)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


class _Reader:
    """Read fields from the payload; every read is checked against the bytes left."""

    def __init__(self, data: memoryview, offset: int, end: int) -> None:
        self.data = data
        self.offset = offset
        self.end = end

    def take(self, size: int, what: str) -> memoryview:
        if size > self.end - self.offset:
            raise CompressedFileError(
                f"file is truncated or corrupt: {what} needs {size} bytes at offset {self.offset}, "
                f"{self.end - self.offset} remain"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, layout: struct.Struct, what: str) -> tuple:
        return layout.unpack(self.take(layout.size, what))

    def integer(self, layout: struct.Struct, what: str) -> int:
        return self.unpack(layout, what)[0]

    def text(self, what: str) -> str:
        size = self.integer(_U8, f"{what} length")
        raw = bytes(self.take(size, what))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CompressedFileError(f"{what} is not valid UTF-8: {raw!r}") from None


@dataclass
class DecodedLayer:
    """One layer as read from a file.

    Attributes:
        name: the paper's layer name.
        shape: weight shape.
        weight: dense float32 weights, ``shape``.
        codebook: float32 codebook, or None for a pruned-mode file.
        codes: dense int64 codes, ``shape``, or None.
        bias: float32 bias, or None.
        weight_bits: bits per code (0 in pruned mode).
        index_bits: bits per relative-index value.
        entries: stored relative-index entries.
    """

    name: str
    shape: tuple[int, ...]
    weight: np.ndarray
    codebook: np.ndarray | None
    codes: np.ndarray | None
    bias: np.ndarray | None
    weight_bits: int
    index_bits: int
    entries: int


def _check_envelope(data: memoryview) -> int:
    """Check magic, version, size and checksum; return the payload size."""
    if len(data) < _FILE_HEAD.size + _CHECKSUM.size:
        raise CompressedFileError(f"file is {len(data)} bytes, too short for a dclab compressed file")
    magic, version, flags, payload_size = _FILE_HEAD.unpack(data[: _FILE_HEAD.size])
    if magic != MAGIC:
        raise CompressedFileError(f"not a dclab compressed file (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise CompressedFileError(f"unsupported file version {version}; this dclab reads version {VERSION}")
    if flags != 0:
        raise CompressedFileError(f"unsupported flags {flags:#06x}; this dclab writes and reads 0")
    expected = _FILE_HEAD.size + payload_size + _CHECKSUM.size
    if expected != len(data):
        raise CompressedFileError(
            f"file is {len(data)} bytes but its header announces {expected}: truncated or extended"
        )
    (stored,) = _CHECKSUM.unpack(data[-_CHECKSUM.size :])
    if zlib.crc32(data[: -_CHECKSUM.size]) != stored:
        raise CompressedFileError("checksum mismatch: the file is corrupted")
    return payload_size


def _architecture_state(network: str, model: nn.Module | None = None, num_classes: int = 10) -> dict[str, torch.Tensor]:
    """Return the state dict of ``network`` built on the meta device (shapes only, no memory).

    For the LeNets, ``num_classes`` is taken from ``model``'s last layer when a model is given.
    """
    if model is not None and network in _LENETS:
        num_classes = list(compressible_layers(model).values())[-1].weight.shape[0]
    with torch.device("meta"):
        skeleton = build_model(network, weights="random", num_classes=num_classes)
    return skeleton.state_dict()


class _Architecture:
    """The weight shapes, bias sizes and dense tensors that a network's file must contain."""

    def __init__(self, network: str, num_classes: int = 10) -> None:
        self.network = network
        self.num_classes = num_classes
        state = _architecture_state(network, num_classes=num_classes)
        self.layers: dict[str, tuple[tuple[int, ...], int]] = {}
        for paper_name, module_path in PAPER_LAYER_NAMES[network].items():
            bias = state.get(f"{module_path}.bias")
            self.layers[paper_name] = (tuple(state[f"{module_path}.weight"].shape), 0 if bias is None else bias.numel())
        compressed_modules = set(PAPER_LAYER_NAMES[network].values())
        self.dense: dict[str, torch.Tensor] = {}
        for key, tensor in state.items():
            module_path, _, attribute = key.rpartition(".")
            if not (module_path in compressed_modules and attribute in _STATE_SUFFIXES):
                self.dense[key] = tensor

    def accept_shape(self, name: str, shape: tuple[int, ...]) -> "_Architecture":
        """Check a layer's shape; return the architecture to check the rest against.

        A LeNet's last layer may have any number of rows up to ``MAX_CLASSES``
        (the number of classes); the architecture is then rebuilt for it.
        """
        expected, _ = self.layers[name]
        last = name == list(self.layers)[-1]
        if shape == expected:
            return self
        if (
            last
            and self.network in _LENETS
            and len(shape) == len(expected)
            and shape[1:] == expected[1:]
            and 1 <= shape[0] <= MAX_CLASSES
        ):
            return _Architecture(self.network, shape[0])
        raise CompressedFileError(f"layer {name} has shape {shape}, but {self.network} needs {expected}")


def decode_layers(data: bytes | bytearray | memoryview) -> tuple[str, str, list[DecodedLayer], dict[str, torch.Tensor]]:
    """Parse and decode a compressed file without building a model.

    Returns:
        (network, mode, layers in forward order, dense tensors by state-dict key).

    Raises:
        CompressedFileError: the file is malformed (see the module docstring).
    """
    view = memoryview(data).cast("B")
    payload_size = _check_envelope(view)
    reader = _Reader(view, _FILE_HEAD.size, _FILE_HEAD.size + payload_size)
    network = reader.text("network name")
    if network not in MODEL_NAMES:
        raise CompressedFileError(f"unknown network {network!r}; expected one of {', '.join(MODEL_NAMES)}")
    mode_code = reader.integer(_U8, "mode")
    if mode_code >= len(MODES):
        raise CompressedFileError(f"unknown mode code {mode_code}; expected 0..{len(MODES) - 1}")
    architecture = _Architecture(network)
    layer_count = reader.integer(_U16, "layer count")
    if layer_count != len(architecture.layers):
        raise CompressedFileError(f"file has {layer_count} layers, but {network} has {len(architecture.layers)}")

    layers = []
    for name in list(architecture.layers):
        layer, architecture = _read_layer_record(reader, name, architecture)
        layers.append(layer)
    tensors = _read_tensors(reader, architecture.dense)
    if reader.offset != reader.end:
        raise CompressedFileError(f"{reader.end - reader.offset} unexpected bytes after the last record")
    return network, MODES[mode_code], layers, tensors


def _read_layer_record(reader: _Reader, name: str, architecture: "_Architecture") -> tuple[DecodedLayer, "_Architecture"]:
    stored_name = reader.text("layer name")
    if stored_name != name:
        raise CompressedFileError(f"expected layer {name!r} next, found {stored_name!r}")
    ndim = reader.integer(_U8, f"{name} ndim")
    if not 1 <= ndim <= 4:
        raise CompressedFileError(f"layer {name} has {ndim} dimensions; weights have 1 to 4")
    shape = tuple(reader.integer(_U32, f"{name} shape") for _ in range(ndim))
    architecture = architecture.accept_shape(name, shape)
    numel = int(np.prod(shape))
    _, bias_size = architecture.layers[name]

    weight_bits, index_bits, entries = reader.unpack(_LAYER_BITS, f"{name} bit widths")
    if not 0 <= weight_bits <= 16 or not 1 <= index_bits <= 16:
        raise CompressedFileError(f"layer {name}: weight_bits={weight_bits} or index_bits={index_bits} out of range")
    if entries > numel:
        raise CompressedFileError(f"layer {name} claims {entries} entries for {numel} weights")
    codebook_size = reader.integer(_U32, f"{name} codebook size")
    if (weight_bits == 0) != (codebook_size == 0) or codebook_size > (1 << weight_bits):
        raise CompressedFileError(f"layer {name}: codebook of {codebook_size} values with {weight_bits}-bit codes")
    codebook = _read_floats(reader, codebook_size, f"{name} codebook") if codebook_size else None
    if codebook is not None and codebook[0] != 0.0:
        raise CompressedFileError(f"layer {name}: codebook entry 0 is {codebook[0]}, but code 0 must mean 0.0")
    stored_bias = reader.integer(_U32, f"{name} bias size")
    if stored_bias != bias_size:
        raise CompressedFileError(f"layer {name} stores {stored_bias} biases, but {architecture.network} needs {bias_size}")
    bias = _read_floats(reader, bias_size, f"{name} bias") if bias_size else None

    index = _read_stream(reader, f"{name} index", entries, symbol_bits=index_bits, alphabet=1 << index_bits)
    if codebook is None:
        values = _read_stream(reader, f"{name} weights", entries, symbol_bits=None, alphabet=0)
    else:
        values = _read_stream(reader, f"{name} codes", entries, symbol_bits=weight_bits, alphabet=codebook_size)
    try:
        flat = decode_relative(index, values, numel)
    except ValueError as error:
        raise CompressedFileError(f"layer {name}: {error}") from None

    if codebook is None:
        weight, codes = flat, None
    else:
        codes = flat.astype(np.int64)
        weight = codebook[codes]
    layer = DecodedLayer(
        name, shape, weight.reshape(shape), codebook, None if codes is None else codes.reshape(shape),
        bias, weight_bits, index_bits, entries,
    )
    return layer, architecture


def _read_floats(reader: _Reader, count: int, what: str) -> np.ndarray:
    return np.frombuffer(reader.take(4 * count, what), dtype="<f4").astype(np.float32)


def _read_stream(reader: _Reader, what: str, count: int, symbol_bits: int | None, alphabet: int) -> np.ndarray:
    """Read one stream of ``count`` values.

    ``symbol_bits`` None means float32 values (pruned mode); otherwise the
    stream contains integers below ``alphabet``, fixed-width at ``symbol_bits``
    or Huffman-coded.
    """
    encoding = reader.integer(_U8, f"{what} encoding")
    if symbol_bits is None:
        if encoding != RAW_FLOAT32:
            raise CompressedFileError(f"{what}: encoding {encoding}, but float weights are stored raw (0)")
        return _read_floats(reader, count, what)
    if encoding == FIXED_WIDTH:
        width = reader.integer(_U8, f"{what} width")
        if width != symbol_bits:
            raise CompressedFileError(f"{what}: width {width} differs from the layer header's {symbol_bits} bits")
        field = reader.take((count * width + 7) >> 3, what)
        values = huffman.unpack_fixed(field, count, width)
    elif encoding == HUFFMAN:
        try:
            values, end = huffman.decode(reader.data[: reader.end], reader.offset, max_count=count)
        except ValueError as error:
            raise CompressedFileError(f"{what}: {error}") from None
        reader.offset = end
        if values.size != count:
            raise CompressedFileError(f"{what}: stream contains {values.size} values, the layer header {count}")
    else:
        raise CompressedFileError(f"{what}: unknown encoding {encoding}; expected 1 (fixed) or 2 (Huffman)")
    if values.size and int(values.max()) >= alphabet:
        raise CompressedFileError(f"{what}: value {int(values.max())} is outside 0..{alphabet - 1}")
    return values


def _read_tensors(reader: _Reader, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    count = reader.integer(_U16, "tensor count")
    if count != len(expected):
        raise CompressedFileError(f"file has {count} dense tensors, the network needs {len(expected)}")
    tensors = {}
    for _ in range(count):
        size = reader.integer(_U16, "tensor name length")
        raw_name = bytes(reader.take(size, "tensor name"))
        key = raw_name.decode("utf-8", errors="replace")
        if key not in expected or key in tensors:
            raise CompressedFileError(f"unexpected or repeated tensor {key!r}")
        dtype_code, ndim = reader.unpack(struct.Struct("<BB"), f"{key} dtype")
        dtype = _TENSOR_DTYPES.get(dtype_code)
        shape = tuple(reader.integer(_U64, f"{key} shape") for _ in range(ndim))
        want = expected[key]
        if dtype != want.dtype or shape != tuple(want.shape):
            raise CompressedFileError(
                f"tensor {key} is {dtype} {shape}, but the network needs {want.dtype} {tuple(want.shape)}"
            )
        itemsize = torch.empty(0, dtype=dtype).element_size()
        raw = bytes(reader.take(itemsize * want.numel(), key))
        tensors[key] = _tensor_from_bytes(raw, dtype, shape)
    return tensors


def _tensor_from_bytes(raw: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if dtype == torch.bfloat16:
        array = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        return torch.from_numpy(array).view(torch.bfloat16).reshape(shape).clone()
    numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    array = np.frombuffer(raw, dtype=numpy_dtype.newbyteorder("<")).astype(numpy_dtype)
    return torch.from_numpy(array).reshape(shape).clone()


def decode_model(data: bytes | bytearray | memoryview, attach_codes: bool = True) -> nn.Module:
    """Rebuild a model from the bytes of a compressed file.

    Args:
        data: the file's bytes.
        attach_codes: for quantized and Huffman files, also register the
            ``weight_codebook`` and ``weight_codes`` buffers on each layer
            (uint8 codes up to 8 bits, else int32), so the model is a
            quantized model again and encodes to the same bytes.

    Returns:
        The network in eval mode, its weights equal to those that were saved.

    Raises:
        CompressedFileError: the file is malformed.
    """
    network, _, layers, tensors = decode_layers(data)
    num_classes = layers[-1].shape[0] if network in _LENETS else 10
    # Build without initializing (meta, then uninitialized CPU memory): every
    # entry of the state dict is filled from the file below.
    with torch.device("meta"):
        model = build_model(network, weights="random", num_classes=num_classes)
    model.to_empty(device="cpu")
    modules = compressible_layers(model)
    with torch.no_grad():
        for layer in layers:
            module = modules[layer.name]
            module.weight.copy_(torch.from_numpy(layer.weight))
            if layer.bias is not None:
                module.bias.copy_(torch.from_numpy(layer.bias))
            if attach_codes and layer.codebook is not None:
                code_dtype = np.uint8 if layer.weight_bits <= 8 else np.int32
                module.register_buffer("weight_codebook", torch.from_numpy(layer.codebook.copy()))
                module.register_buffer("weight_codes", torch.from_numpy(layer.codes.astype(code_dtype)))
        state = model.state_dict()
        for key, tensor in tensors.items():
            state[key].copy_(tensor)
    model.eval()
    return model


def load_compressed(path: str | Path, attach_codes: bool = True) -> nn.Module:
    """Read a compressed file and return the rebuilt model (see :func:`decode_model`).

    Raises:
        CompressedFileError: the file is malformed.
        OSError: the file cannot be read.
    """
    data = Path(path).read_bytes()
    return decode_model(data, attach_codes=attach_codes)
