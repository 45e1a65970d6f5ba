"""Fuzz test of the compressed-file reader: mutated files load or raise CompressedFileError.

Every mutated file must either load (the mutation kept it valid) or raise
:class:`dclab.container.CompressedFileError`; any other exception, a hang or
a large allocation is a bug. Half of the mutations are "resealed": the
payload size and CRC-32 are recomputed after the edit, so the checksum does
not hide the edit and the field checks behind it get exercised.

``DCLAB_FUZZ_CASES`` sets the number of cases (default 2000, about 10-20 s
of CPU time on two cores). The cases are seeded, so a failure names the
case number that reproduces it.
"""

import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from dclab.container import CompressedFileError, decode_model, encode_model_with_layout
from dclab.models import build_model, compressible_layers

CASES = int(os.environ.get("DCLAB_FUZZ_CASES", "2000"))
HUGE = [0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, 1 << 62, (1 << 64) - 1]


def compressed_lenet300(mode: str, seed: int):
    """A LeNet-300-100 kept at 1-3% with random 5-bit codes (small, fast files)."""
    rng = np.random.default_rng(seed)
    model = build_model("lenet300", weights="random")
    for keep, module in zip((0.01, 0.02, 0.3), compressible_layers(model).values()):
        shape = tuple(module.weight.shape)
        mask = torch.from_numpy(rng.random(shape) < keep).float()
        prune.custom_from_mask(module, "weight", mask)
        codebook = np.concatenate(([0.0], np.sort(rng.normal(size=31)))).astype(np.float32)
        codes = np.minimum(rng.geometric(0.3, shape), 31).astype(np.uint8)
        codes[mask.numpy() == 0] = 0
        module.register_buffer("weight_codebook", torch.from_numpy(codebook))
        module.register_buffer("weight_codes", torch.from_numpy(codes))
        with torch.no_grad():
            module.weight_orig.copy_(torch.from_numpy(codebook[codes]))
    return encode_model_with_layout(model, mode, index_bits=5)


@pytest.fixture(scope="module")
def files():
    return [compressed_lenet300(mode, seed) for seed, mode in enumerate(("huffman", "quantized", "pruned", "huffman"))]


def reseal(body: bytearray) -> bytes:
    """Fix the payload size and append a fresh CRC-32 to a file body without its checksum."""
    if len(body) >= 20:
        struct.pack_into("<Q", body, 12, len(body) - 20)
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def field_offsets(encoded) -> list[int]:
    """Offsets inside header and Huffman-table spans, where the counts and sizes live."""
    offsets = []
    for offset, size, _, part in encoded.spans:
        if part in ("header", "tables"):
            offsets.extend(range(offset, offset + size))
    return offsets


def mutate(encoded, rng: np.random.Generator) -> tuple[bytes, str]:
    """Return a mutated copy of the file and a description of the mutation."""
    data = bytearray(encoded.data)
    kind = int(rng.integers(0, 9))
    if kind == 0:
        positions = rng.integers(0, 8 * len(data), int(rng.integers(1, 9)))
        for bit in positions:
            data[bit >> 3] ^= 1 << (bit & 7)
        return bytes(data), f"flip bits {positions.tolist()}"
    if kind == 1:
        size = int(rng.integers(0, len(data)))
        return bytes(data[:size]), f"truncate to {size}"
    if kind == 2:
        at = int(rng.integers(0, len(data) + 1))
        extra = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        return bytes(data[:at] + extra + data[at:]), f"insert {extra!r} at {at}"

    body = data[:-4]  # resealed mutations edit the body and recompute size and checksum
    if kind in (3, 4, 5):
        at = int(rng.choice(field_offsets(encoded)))
        width = int(rng.choice([1, 2, 4, 8]))
        value = int(rng.choice(HUGE)) & ((1 << (8 * width)) - 1)
        chunk = value.to_bytes(width, "little")[: max(0, len(body) - at)]
        body[at : at + len(chunk)] = chunk
        return reseal(body), f"resealed: write {value:#x} ({width} bytes) at {at}"
    if kind == 6:
        positions = rng.integers(20 * 8, 8 * len(body), int(rng.integers(1, 4)))
        for bit in positions:
            body[bit >> 3] ^= 1 << (bit & 7)
        return reseal(body), f"resealed: flip bits {positions.tolist()}"
    if kind == 7:
        start = int(rng.integers(20, len(body)))
        stop = min(len(body), start + int(rng.integers(1, 64)))
        del body[start:stop]
        return reseal(body), f"resealed: delete bytes {start}:{stop}"
    at = int(rng.integers(20, len(body) + 1))
    extra = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    body[at:at] = extra
    return reseal(body), f"resealed: insert {extra!r} at {at}"


def load_or_reject(data: bytes, description: str) -> bool:
    """Return True if the file loaded, False if it raised CompressedFileError; fail otherwise."""
    try:
        model = decode_model(data)
    except CompressedFileError:
        return False
    except Exception as error:  # anything else is a reader bug
        pytest.fail(f"{description}: {type(error).__name__}: {error}")
    assert isinstance(model, nn.Module)
    return True


def test_fuzz_mutations(files):
    rng = np.random.default_rng(2024)
    loaded = 0
    for case in range(CASES):
        encoded = files[case % len(files)]
        data, description = mutate(encoded, rng)
        loaded += load_or_reject(data, f"case {case} ({encoded.mode}): {description}")
    # Most mutations must be caught; a few resealed ones (a changed weight) stay valid.
    assert loaded < CASES // 4


def test_every_header_field_with_huge_values(files):
    """Overwrite each header and table byte with huge numbers; memory stays small."""
    encoded = files[0]
    tracemalloc.start()
    try:
        for at in field_offsets(encoded)[::3]:
            for value in (0xFFFFFFFF, 1 << 62):
                body = bytearray(encoded.data[:-4])
                chunk = value.to_bytes(8, "little")[: len(body) - at]
                body[at : at + len(chunk)] = chunk
                tracemalloc.reset_peak()
                load_or_reject(reseal(body), f"write {value:#x} at {at}")
                _, peak = tracemalloc.get_traced_memory()
                assert peak < 64 * 2**20, f"write {value:#x} at {at}: peak {peak} bytes"
    finally:
        tracemalloc.stop()


def test_unmutated_files_load(files):
    for encoded in files:
        assert load_or_reject(encoded.data, encoded.mode)
