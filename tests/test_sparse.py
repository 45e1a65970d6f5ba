"""Tests for dclab.sparse: relative-index encoding with fillers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dclab.sparse import (
    count_fillers,
    decode_positions,
    decode_relative,
    encode_positions,
    encode_relative,
    max_skip,
)


def authors_decode(index: np.ndarray, codes: np.ndarray, numel: int) -> np.ndarray:
    """Decode as the authors' released AlexNet decoder does: position = cumsum(value + 1) - 1."""
    flat = np.zeros(numel, dtype=codes.dtype)
    position = -1
    for value, code in zip(index.tolist(), codes.tolist()):
        position += value + 1
        flat[position] = code
    return flat


def layer_with_gap(gap: int, code: int = 7) -> np.ndarray:
    """A layer of ``gap`` zeros followed by one kept code."""
    layer = np.zeros(gap + 1, dtype=np.int64)
    layer[-1] = code
    return layer


def test_encode_docstring_example():
    codes = np.array([0, 0, 5, 0, 0, 0, 0, 0, 7])
    rel = encode_relative(codes, index_bits=2)
    assert rel.index.tolist() == [2, 3, 1]
    assert rel.values.tolist() == [5, 0, 7]
    assert rel.fillers == 1
    assert rel.numel == 9


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_skip_max_needs_no_filler(bits):
    rel = encode_relative(layer_with_gap((1 << bits) - 1), bits)
    assert rel.index.tolist() == [(1 << bits) - 1]
    assert rel.values.tolist() == [7]
    assert rel.fillers == 0


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_skip_max_plus_one_needs_filler(bits):
    rel = encode_relative(layer_with_gap(1 << bits), bits)
    assert rel.index.tolist() == [(1 << bits) - 1, 0]
    assert rel.values.tolist() == [0, 7]
    assert rel.fillers == 1


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5])
def test_long_run_of_zeros(bits):
    layer = layer_with_gap(10_000)
    rel = encode_relative(layer, bits)
    assert rel.fillers == 10_000 // (1 << bits)
    assert rel.entries == rel.fillers + 1
    assert int(rel.index.max()) <= max_skip(bits)
    assert np.array_equal(decode_relative(rel.index, rel.values, layer.size), layer)
    assert np.array_equal(authors_decode(rel.index, rel.values, layer.size), layer)


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_long_runs_between_kept(bits):
    layer = np.zeros(40_000, dtype=np.int64)
    layer[[0, 1, 9_999, 10_000, 39_999]] = [1, 2, 3, 4, 5]
    rel = encode_relative(layer, bits)
    gaps = np.array([0, 0, 9_997, 0, 29_998])
    assert rel.fillers == int(np.sum(gaps // (1 << bits)))
    assert np.array_equal(decode_relative(rel.index, rel.values, layer.size), layer)


def test_empty_layer():
    rel = encode_relative(np.zeros(0, dtype=np.int64), 5)
    assert rel.entries == 0
    assert rel.numel == 0
    assert decode_relative(rel.index, rel.values, 0).size == 0


def test_all_zero_layer_has_no_entries():
    rel = encode_relative(np.zeros((30, 40), dtype=np.int64), 5)
    assert rel.entries == 0
    decoded = decode_relative(rel.index, rel.values, 1200)
    assert decoded.shape == (1200,)
    assert not decoded.any()


def test_dense_layer_has_zero_skips():
    layer = np.arange(1, 101)
    rel = encode_relative(layer, 2)
    assert rel.fillers == 0
    assert not rel.index.any()
    assert np.array_equal(rel.values, layer)


def test_trailing_zeros_need_no_entries():
    layer = np.zeros(1000, dtype=np.int64)
    layer[3] = 9
    rel = encode_relative(layer, 1)
    # 3 zeros before position 3 with 1 bit: one filler (covers 2 slots), then skip 1.
    assert rel.index.tolist() == [1, 1]
    assert rel.values.tolist() == [0, 9]
    assert np.array_equal(decode_relative(rel.index, rel.values, layer.size), layer)


def test_conv_weight_flattens_row_major():
    weight = np.zeros((2, 3, 2, 2), dtype=np.int64)
    weight[1, 0, 1, 1] = 4
    rel = encode_relative(weight, 5)
    # row-major position of (1, 0, 1, 1) in a (2, 12) matrix: 12 + 3 = 15
    assert rel.index.tolist() == [15]
    assert np.array_equal(decode_relative(rel.index, rel.values, weight.size).reshape(weight.shape), weight)


def test_kept_mask_stores_zero_valued_weight():
    weights = np.array([0.0, 0.0, 1.5, 0.0], dtype=np.float32)
    kept = np.array([False, True, True, False])
    rel = encode_relative(weights, 4, kept=kept)
    assert rel.index.tolist() == [1, 0]
    assert rel.values.tolist() == [0.0, 1.5]
    assert rel.values.dtype == np.float32


def test_kept_mask_shape_mismatch():
    with pytest.raises(ValueError, match="kept mask"):
        encode_relative(np.ones(4), 4, kept=np.ones(5, dtype=bool))


def test_fillers_carry_code_zero():
    layer = layer_with_gap(100, code=3)
    rel = encode_relative(layer, 3)
    is_filler = np.zeros(rel.entries, dtype=bool)
    is_filler[:-1] = True
    assert not rel.values[is_filler].any()
    assert (rel.index[is_filler] == max_skip(3)).all()


def test_encode_positions_source():
    index, source = encode_positions(np.array([0, 5]), 2)
    assert index.tolist() == [0, 3, 0]  # gap of 4 zeros: a filler at 4, then skip 0
    assert source.tolist() == [0, -1, 1]


def test_encode_positions_rejects_unsorted():
    with pytest.raises(ValueError, match="strictly increasing"):
        encode_positions(np.array([3, 3]), 5)


def test_decode_rejects_position_past_numel():
    with pytest.raises(ValueError, match="past the layer"):
        decode_positions(np.array([3, 3]), 7)


def test_decode_rejects_too_many_entries():
    with pytest.raises(ValueError, match="cannot fit"):
        decode_positions(np.zeros(5, dtype=np.uint16), 4)


def test_decode_rejects_length_mismatch():
    with pytest.raises(ValueError, match="stored values"):
        decode_relative(np.zeros(3, dtype=np.uint16), np.zeros(2), 10)


@pytest.mark.parametrize("bits", [0, 17])
def test_max_skip_range(bits):
    with pytest.raises(ValueError, match="index_bits"):
        max_skip(bits)


def test_count_fillers_matches_encoding():
    rng = np.random.default_rng(0)
    layer = (rng.random(50_000) < 0.01).astype(np.int64)
    for bits in range(1, 9):
        rel = encode_relative(layer, bits)
        assert count_fillers(np.flatnonzero(layer), bits) == rel.fillers


@st.composite
def sparse_layers(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim)))
    keep = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 0.9, 1.0]))
    bits = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    codes = rng.integers(1, 256, size=shape)
    codes[rng.random(shape) >= keep] = 0
    return codes, bits


@settings(max_examples=300, deadline=None)
@given(sparse_layers())
def test_roundtrip_property(case):
    codes, bits = case
    rel = encode_relative(codes, bits)
    assert int(rel.index.max(initial=0)) <= max_skip(bits)
    assert rel.entries - rel.fillers == np.count_nonzero(codes)
    decoded = decode_relative(rel.index, rel.values, codes.size)
    assert np.array_equal(decoded.reshape(codes.shape), codes)
    assert np.array_equal(authors_decode(rel.index, rel.values, codes.size), codes.reshape(-1))
