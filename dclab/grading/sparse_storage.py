"""Checks for the relative-index exercises (notebook ``03_sparse_storage``).

Expected values come from :mod:`dclab.sparse`. The rule: over the layer
flattened row-major, each stored entry contains the number of zeros skipped
since the previous entry (position = previous + value + 1, starting from
previous = -1). With ``b`` index bits an entry skips at most ``2**b - 1``
zeros; a longer run gets a filler entry (value 0) after every ``2**b - 1``
zeros, and the filler takes a position of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dclab import sparse
from dclab.grading.core import Case, Mismatch, compare_arrays, compare_scalar, run_check

__all__ = [
    "FLOAT32_BITS",
    "reference_relative_index_encode",
    "reference_relative_index_decode",
    "reference_compression_ratio",
    "check_relative_index_encode",
    "check_relative_index_decode",
    "check_compression_ratio",
]

FLOAT32_BITS = 32


# --- references ----------------------------------------------------------------


def reference_relative_index_encode(values: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (index, stored) of :func:`dclab.sparse.encode_relative`; nonzero values are the kept ones."""
    relative = sparse.encode_relative(values, index_bits)
    return relative.index.astype(np.int64), relative.values


def reference_relative_index_decode(index: np.ndarray, stored: np.ndarray, numel: int) -> np.ndarray:
    """Return the flat layer of ``numel`` values rebuilt by :func:`dclab.sparse.decode_relative`."""
    return sparse.decode_relative(index, stored, numel)


def reference_compression_ratio(
    codes: np.ndarray, codebook: np.ndarray, n_biases: int, weight_bits: int, index_bits: int
) -> float:
    """Return dense float32 bits over stored bits of one quantized layer, biases included.

    Stored bits: every entry (kept weight or filler) costs ``weight_bits +
    index_bits``, every codebook value (code 0's zero included) and every
    bias 32 bits. Dense bits: 32 per weight and per bias. Headers are ignored.
    """
    entries = sparse.encode_relative(codes, index_bits).entries
    stored_bits = entries * (weight_bits + index_bits) + FLOAT32_BITS * (len(codebook) + n_biases)
    dense_bits = FLOAT32_BITS * (np.asarray(codes).size + n_biases)
    return dense_bits / stored_bits


# --- relative_index_encode -------------------------------------------------------------

_FILLER_HINT = ("a gap of g zeros needs a filler only when g > 2**b - 1; a filler (value 2**b - 1, code 0) "
                "skips 2**b - 1 zeros and occupies one position itself")
_VALUE_HINT = "the index value is the number of zeros skipped since the previous entry, not the distance in positions"


def _encode_cases() -> list[Case]:
    seven_then_two = np.array([0] * 7 + [4] + [0] * 2 + [1])
    return [
        Case("example, 2 bits", (np.array([0, 0, 5, 0, 0, 0, 0, 0, 7]), 2), _FILLER_HINT),
        Case("gap of exactly 2**b - 1", (seven_then_two, 3),
             "7 zeros fit in a 3-bit index value (at most 2**3 - 1 = 7), so no filler is needed"),
        Case("gap of exactly 2**b", (np.array([0] * 8 + [3]), 3),
             "8 zeros do not fit in 3 bits: a filler after 7 zeros (at position 7), then the weight with value 0"),
        Case("long gap, three fillers", (np.array([2] + [0] * 13 + [6]), 2), _FILLER_HINT),
        Case("no zeros", (np.array([1, 2, 3]), 2), _VALUE_HINT),
        Case("all zeros", (np.array([0, 0, 0, 0]), 2), "a layer with no kept weight has no entries: two empty arrays"),
        Case("trailing zeros", (np.array([0, 3] + [0] * 8), 2),
             "zeros after the last kept weight need no entries (the decoder knows the layer's size)"),
        Case("2-D layer, row-major", (np.array([[0, 0, 1], [0, 0, 0], [2, 0, 0]]), 2),
             "flatten the layer row by row (numpy's default order) before encoding"),
        Case("single weight", (np.array([5]), 1), "a kept weight at position 0 has index value 0"),
        Case("1-bit index", (np.array([0, 0, 0, 1, 0, 1]), 1), _FILLER_HINT),
    ]


def _verify_encode(args: tuple, expected: tuple, received) -> None:
    if not isinstance(received, (tuple, list)) or len(received) != 2:
        raise Mismatch(f"expected a pair (index, stored), received {type(received).__name__}")
    compare_arrays(expected[0], received[0], what="index", exact=True)
    compare_arrays(expected[1], received[1], what="stored", exact=True)


def check_relative_index_encode(relative_index_encode: Callable) -> None:
    """Grade ``relative_index_encode(values, index_bits) -> (index, stored)``, fillers included."""
    run_check("relative_index_encode", relative_index_encode, _encode_cases(), reference_relative_index_encode,
              _verify_encode, ("values", "index_bits"))


# --- relative_index_decode -------------------------------------------------------------

_POSITION_HINT = "position = previous position + index value + 1, starting from previous = -1"


def _decode_cases() -> list[Case]:
    return [
        Case("example, 2 bits", (np.array([2, 3, 1]), np.array([5, 0, 7]), 9), _POSITION_HINT),
        Case("filler before a weight", (np.array([7, 0]), np.array([0, 3]), 9),
             "a filler is an ordinary entry whose value is 0: it advances the position like any other"),
        Case("first weight at position 0", (np.array([0, 0, 2]), np.array([1, 2, 3]), 6), _POSITION_HINT),
        Case("trailing zeros", (np.array([1]), np.array([3]), 10),
             "positions after the last entry stay 0; the result has numel values"),
        Case("no entries", (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 5),
             "with no entries every weight is 0"),
        Case("float values", (np.array([1, 0, 3]), np.array([0.5, -1.25, 2.0]), 8),
             "place the stored values unchanged (floats here)"),
        Case("three fillers in a row", (np.array([0, 3, 3, 3, 1]), np.array([2, 0, 0, 0, 6]), 16), _POSITION_HINT),
    ]


def _verify_decode(args: tuple, expected: np.ndarray, received) -> None:
    compare_arrays(expected, received, what="the decoded layer", exact=True)


def check_relative_index_decode(relative_index_decode: Callable) -> None:
    """Grade ``relative_index_decode(index, stored, numel)``: the flat layer of ``numel`` values."""
    run_check("relative_index_decode", relative_index_decode, _decode_cases(), reference_relative_index_decode,
              _verify_decode, ("index", "stored", "numel"))


# --- compression_ratio -------------------------------------------------------------------


def _random_codes(shape: tuple[int, int], keep: float, bits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kept = rng.random(shape) < keep
    return np.where(kept, rng.integers(1, 2**bits, size=shape), 0)


def _codebook(size: int) -> np.ndarray:
    return np.concatenate(([0.0], np.linspace(-0.5, 0.5, size - 1))).astype(np.float32)


_ENTRY_HINT = "every entry, filler or kept weight, stores a weight_bits code and an index_bits index value"


def _ratio_cases() -> list[Case]:
    long_gaps = np.zeros((4, 10), dtype=np.int64)
    long_gaps[0, 0], long_gaps[2, 5], long_gaps[3, 9] = 3, 1, 2
    return [
        Case("4x10 layer with long gaps", (long_gaps, _codebook(4), 4, 2, 3), _ENTRY_HINT),
        Case("ip3-sized layer, 26% kept", (_random_codes((10, 100), 0.26, 6, 0), _codebook(64), 10, 6, 5),
             _ENTRY_HINT),
        Case("no fillers needed", (np.array([[1, 0, 2], [3, 1, 0]]), _codebook(4), 2, 2, 4),
             "count the codebook (32 bits per value, code 0's zero included) and the biases on both sides"),
        Case("every weight pruned", (np.zeros((3, 5), dtype=np.int64), _codebook(2), 3, 1, 2),
             "no entries: only the codebook and the biases are stored"),
        Case("no biases", (_random_codes((20, 30), 0.1, 5, 1), _codebook(32), 0, 5, 4), _ENTRY_HINT),
        Case("conv layer (4, 3, 3, 3) as codes", (_random_codes((4, 27), 0.6, 8, 2).reshape(4, 3, 3, 3),
                                                 _codebook(256), 4, 8, 4),
             "the layer is flattened row-major; biases count 32 bits each"),
    ]


def _verify_ratio(args: tuple, expected: float, received) -> None:
    compare_scalar(expected, received, what="the compression ratio", atol=1e-9, rtol=1e-9)


def check_compression_ratio(compression_ratio: Callable) -> None:
    """Grade ``compression_ratio(codes, codebook, n_biases, weight_bits, index_bits)``, biases included."""
    run_check("compression_ratio", compression_ratio, _ratio_cases(), reference_compression_ratio, _verify_ratio,
              ("codes", "codebook", "n_biases", "weight_bits", "index_bits"))
