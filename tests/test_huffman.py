"""Tests for dclab.huffman: code lengths, canonical codes, streams and bit packing."""

import heapq
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dclab import huffman
from dclab.huffman import (
    MAX_CODE_LENGTH,
    canonical_codes,
    code_lengths,
    decode,
    encode,
    pack_fixed,
    stream_sizes,
    unpack_fixed,
)


def roundtrip(symbols, alphabet_size=None, block_log2=None):
    data = encode(np.asarray(symbols), alphabet_size, block_log2)
    decoded, end = decode(data)
    assert end == len(data)
    return data, decoded


def optimal_cost(counts) -> int:
    """Total bits of an optimal prefix code: the sum of all merged weights of Huffman's algorithm."""
    heap = [int(c) for c in counts if c > 0]
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def kraft_sum(lengths) -> float:
    lengths = np.asarray(lengths, dtype=np.float64)
    return float(np.sum(2.0 ** -lengths[lengths > 0]))


def fibonacci(n: int) -> list[int]:
    values = [1, 1]
    while len(values) < n:
        values.append(values[-1] + values[-2])
    return values


def test_code_lengths_optimal_cost():
    rng = np.random.default_rng(1)
    for _ in range(20):
        counts = rng.integers(0, 1000, size=rng.integers(2, 200))
        counts[:2] += 1  # at least two present symbols
        lengths = code_lengths(counts)
        assert int(np.sum(counts * lengths.astype(np.int64))) == optimal_cost(counts)
        assert kraft_sum(lengths) == 1.0


def test_code_lengths_absent_symbols():
    lengths = code_lengths(np.array([0, 5, 0, 5]))
    assert lengths.tolist() == [0, 1, 0, 1]


def test_code_lengths_one_symbol():
    assert code_lengths(np.array([0, 0, 9])).tolist() == [0, 0, 1]


def test_code_lengths_empty():
    assert code_lengths(np.zeros(4, dtype=np.int64)).tolist() == [0, 0, 0, 0]


def test_code_lengths_fibonacci_limited():
    counts = np.array(fibonacci(40))
    unlimited = huffman._huffman_depths(counts)
    assert unlimited.max() > MAX_CODE_LENGTH  # the case that needs the limit
    lengths = code_lengths(counts)
    assert lengths.max() == MAX_CODE_LENGTH
    assert kraft_sum(lengths) == 1.0
    # Frequent symbols never get longer codes than rarer ones.
    order = np.argsort(-counts, kind="stable")
    assert np.all(np.diff(lengths[order].astype(int)) >= 0)


def test_code_lengths_custom_limit():
    lengths = code_lengths(np.array(fibonacci(20)), max_length=8)
    assert lengths.max() == 8
    assert kraft_sum(lengths) == 1.0


def test_code_lengths_limit_too_short():
    with pytest.raises(ValueError, match="max_length"):
        code_lengths(np.ones(300, dtype=np.int64), max_length=8)


@pytest.mark.parametrize(
    "counts, message",
    [(np.array([[1, 2]]), "1-D"), (np.array([1.0, 2.0]), "integer"), (np.array([1, -1]), "nonnegative")],
)
def test_code_lengths_rejects(counts, message):
    with pytest.raises(ValueError, match=message):
        code_lengths(counts)


def test_canonical_codes_deflate_example():
    # RFC 1951, section 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) for A..H.
    codes = canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    assert codes.tolist() == [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]


def test_canonical_codes_prefix_free():
    lengths = code_lengths(np.array(fibonacci(30)))
    codes = canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths)]
    for i, a in enumerate(words):
        for j, b in enumerate(words):
            assert i == j or not b.startswith(a)


def test_canonical_codes_kraft_violation():
    with pytest.raises(ValueError, match="Kraft"):
        canonical_codes(np.array([1, 1, 1]))


def test_empty_stream():
    data, decoded = roundtrip(np.zeros(0, dtype=np.int64))
    assert data[0] == huffman.KIND_EMPTY
    assert decoded.size == 0


def test_one_symbol_stream_has_no_code_bits():
    data, decoded = roundtrip(np.full(100_000, 7))
    assert data[0] == huffman.KIND_SINGLE
    assert len(data) == 11  # kind, count, symbol
    assert decoded.tolist() == [7] * 100_000
    assert stream_sizes(data) == (11, 0)


def test_two_symbol_stream_one_bit_each():
    symbols = np.array([0, 1] * 500 + [1])
    data, decoded = roundtrip(symbols)
    assert np.array_equal(decoded, symbols)
    assert stream_sizes(data).code_bytes == (1001 + 7) // 8


def test_fibonacci_stream_roundtrip():
    counts = fibonacci(25)  # 196,417 symbols in total
    symbols = np.repeat(np.arange(25), counts)
    np.random.default_rng(0).shuffle(symbols)
    data, decoded = roundtrip(symbols)
    assert np.array_equal(decoded, symbols)


@pytest.mark.parametrize("count", [1, 2, 63, 64, 65, 127, 128, 129, 1000])
def test_block_boundaries(count):
    symbols = np.random.default_rng(count).integers(0, 5, count)
    symbols[0] = 4  # at least two distinct symbols whenever count > 1
    _, decoded = roundtrip(symbols, alphabet_size=5, block_log2=6)
    assert np.array_equal(decoded, symbols)


@pytest.mark.parametrize("alphabet", [2, 255, 256, 257, 65535, 65536])
def test_alphabet_sizes(alphabet):
    rng = np.random.default_rng(alphabet)
    symbols = rng.integers(0, alphabet, 5001)
    symbols[:2] = [0, alphabet - 1]
    _, decoded = roundtrip(symbols, alphabet)
    assert np.array_equal(decoded, symbols)
    assert decoded.dtype == (np.uint8 if alphabet <= 256 else np.uint16)


def test_odd_count_pair_path():
    symbols = np.random.default_rng(3).integers(0, 30, 100_001)
    _, decoded = roundtrip(symbols)
    assert np.array_equal(decoded, symbols)


def test_coded_size_matches_optimal_cost():
    rng = np.random.default_rng(4)
    symbols = np.clip(np.round(rng.laplace(0, 2, 200_000)), -15, 16).astype(np.int64) + 15
    data = encode(symbols)
    counts = np.bincount(symbols)
    assert stream_sizes(data).code_bytes == (optimal_cost(counts) + 7) // 8


def test_padding_bits_are_not_symbols():
    # Symbol 0 has a 1-bit code "0", so zero padding could decode as extra symbols.
    symbols = np.array([0, 0, 0, 1, 2])
    data, decoded = roundtrip(symbols)
    assert decoded.tolist() == [0, 0, 0, 1, 2]


def test_stream_sizes_add_up():
    data = encode(np.random.default_rng(5).integers(0, 40, 30_000))
    sizes = stream_sizes(data)
    assert sizes.table_bytes + sizes.code_bytes == len(data)


def test_decode_at_offset():
    stream = encode(np.array([1, 2, 3, 1]))
    decoded, end = decode(b"xyz" + stream + b"tail", offset=3)
    assert decoded.tolist() == [1, 2, 3, 1]
    assert end == 3 + len(stream)


def test_encode_rejects_symbol_outside_alphabet():
    with pytest.raises(ValueError, match="outside the alphabet"):
        encode(np.array([0, 5]), alphabet_size=5)


def test_encode_rejects_negative():
    with pytest.raises(ValueError, match="outside the alphabet"):
        encode(np.array([-1, 2]))


def test_encode_rejects_floats():
    with pytest.raises(ValueError, match="integers"):
        encode(np.array([0.5, 1.0]))


def test_decode_rejects_every_truncation():
    data = encode(np.random.default_rng(6).integers(0, 9, 3000), block_log2=6)
    for size in range(len(data)):
        with pytest.raises(ValueError):
            decode(data[:size])


def test_decode_rejects_count_above_limit():
    data = encode(np.full(1000, 3))
    with pytest.raises(ValueError, match="limit"):
        decode(data, max_count=999)


def test_decode_bounds_one_symbol_count_by_size():
    # A one-symbol stream claiming 2**60 symbols must not allocate them.
    data = struct.pack("<BQH", huffman.KIND_SINGLE, 1 << 60, 3)
    with pytest.raises(ValueError, match="limit"):
        decode(data)


def test_decode_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        decode(struct.pack("<BQ", 9, 1))


def test_decode_rejects_nonzero_padding():
    data = bytearray(encode(np.array([0, 1, 1])))  # 3 code bits, 5 padding bits
    data[-1] |= 1
    with pytest.raises(ValueError, match="padding"):
        decode(bytes(data))


def test_decode_rejects_kraft_violation():
    data = bytearray(encode(np.array([0, 1, 2, 0])))
    lengths_at = 9 + 4  # after kind, count and alphabet size
    data[lengths_at : lengths_at + 2] = bytes([0b00001000, 0b01000010])  # 5-bit lengths 1, 1, 1
    with pytest.raises(ValueError, match="Kraft"):
        decode(bytes(data))


def test_decode_rejects_wrong_block_lengths():
    symbols = np.random.default_rng(7).integers(0, 9, 300)
    data = bytearray(encode(symbols, block_log2=6))
    base_at = 9 + 4 + (9 * 5 + 7) // 8 + 1
    (base,) = struct.unpack_from("<I", data, base_at)
    struct.pack_into("<I", data, base_at, base + 1)
    with pytest.raises(ValueError, match="block"):
        decode(bytes(data))


@pytest.mark.parametrize("width", list(range(1, 17)) + [25])
def test_pack_fixed_roundtrip(width):
    rng = np.random.default_rng(width)
    values = rng.integers(0, 1 << width, 1001)
    data = pack_fixed(values, width)
    assert len(data) == (1001 * width + 7) // 8
    assert np.array_equal(unpack_fixed(data, 1001, width), values)


def test_pack_fixed_msb_first():
    assert pack_fixed(np.array([1, 0, 3]), 2) == bytes([0b01001100])


def test_pack_fixed_empty():
    assert pack_fixed(np.zeros(0, dtype=np.int64), 5) == b""
    assert unpack_fixed(b"", 0, 5).size == 0


def test_pack_fixed_rejects_overflow():
    with pytest.raises(ValueError, match="do not fit"):
        pack_fixed(np.array([4]), 2)


def test_unpack_fixed_rejects_wrong_size():
    with pytest.raises(ValueError, match="need"):
        unpack_fixed(b"\x00\x00", 5, 4)


def test_choose_block_log2_range():
    assert huffman.choose_block_log2(0) == 6
    assert huffman.choose_block_log2(10_000_000) == 14
    assert huffman.choose_block_log2(10**12) == 16


@st.composite
def symbol_streams(draw):
    alphabet = draw(st.sampled_from([1, 2, 3, 16, 64, 256, 300, 4096]))
    count = draw(st.integers(0, 3000))
    seed = draw(st.integers(0, 2**31 - 1))
    skew = draw(st.sampled_from(["uniform", "laplace", "one-hot", "geometric"]))
    rng = np.random.default_rng(seed)
    if skew == "uniform":
        symbols = rng.integers(0, alphabet, count)
    elif skew == "laplace":
        symbols = np.clip(np.abs(np.round(rng.laplace(0, 2, count))), 0, alphabet - 1).astype(np.int64)
    elif skew == "one-hot":
        symbols = np.full(count, alphabet - 1)
        symbols[: count // 100] = 0
    else:
        symbols = np.minimum(rng.geometric(0.5, count) - 1, alphabet - 1)
    block_log2 = draw(st.sampled_from([None, 6, 7, 10]))
    return symbols, alphabet, block_log2


@settings(max_examples=300, deadline=None)
@given(symbol_streams())
def test_roundtrip_property(case):
    symbols, alphabet, block_log2 = case
    data = encode(symbols, alphabet, block_log2)
    decoded, end = decode(data)
    assert end == len(data)
    assert np.array_equal(decoded, symbols)
