"""Checks for the Huffman exercises (notebook ``04_huffman``).

Code lengths and canonical codes come from :mod:`dclab.huffman`. Huffman
code lengths are not unique when counts tie, so the code-length check
accepts every optimal result: absent symbols get length 0, a lone symbol
gets length 1, and otherwise the lengths must satisfy the Kraft inequality
and give the minimum total number of bits. Canonical codes follow the
DEFLATE convention (RFC 1951, section 3.2.2), which fixes every code.

The decoding exercise reads a string of ``'0'`` and ``'1'`` characters: the
library packs bits into bytes, which would hide the logic being taught. Its
reference is written here; the grader's tests compare it with codes built by
:mod:`dclab.huffman`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dclab import huffman
from dclab.grading.core import Case, Mismatch, as_array, compare_arrays, describe, run_check

__all__ = [
    "reference_huffman_code_lengths",
    "reference_canonical_codes",
    "reference_huffman_decode",
    "code_strings",
    "check_huffman_code_lengths",
    "check_canonical_codes",
    "check_huffman_decode",
]


# --- references ----------------------------------------------------------------


def reference_huffman_code_lengths(counts: np.ndarray) -> np.ndarray:
    """Return Huffman code lengths from :func:`dclab.huffman.code_lengths` (0 for absent symbols)."""
    return huffman.code_lengths(np.asarray(counts, dtype=np.int64)).astype(np.int64)


def reference_canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Return the canonical (DEFLATE) codes of :func:`dclab.huffman.canonical_codes` as int64."""
    return huffman.canonical_codes(np.asarray(lengths, dtype=np.int64)).astype(np.int64)


def reference_huffman_decode(bits: str, code: dict[int, str], count: int) -> list[int]:
    """Decode the first ``count`` symbols of ``bits`` (a string of '0' and '1'); later bits are padding."""
    symbol_of = {word: symbol for symbol, word in code.items()}
    symbols: list[int] = []
    word = ""
    for bit in bits:
        if len(symbols) == count:
            break
        word += bit
        if word in symbol_of:
            symbols.append(symbol_of[word])
            word = ""
    return symbols


def code_strings(lengths: np.ndarray) -> dict[int, str]:
    """Return symbol -> canonical code as a bit string, for the symbols with a nonzero length."""
    codes = reference_canonical_codes(lengths)
    return {int(s): format(int(codes[s]), f"0{int(lengths[s])}b") for s in np.flatnonzero(lengths)}


# --- huffman_code_lengths ----------------------------------------------------------------

_OPTIMAL_HINT = ("build the Huffman tree: repeatedly merge the two least frequent nodes; a symbol's code "
                 "length is its depth in the tree")


def _laplace_code_counts(seed: int) -> np.ndarray:
    # Counts of 5-bit weight codes after quantizing Laplace-like weights: peaked, long tails.
    rng = np.random.default_rng(seed)
    codes = np.clip(np.round(rng.laplace(16.0, 3.0, size=2000)), 1, 31).astype(np.int64)
    return np.bincount(codes, minlength=32)


def _length_cases() -> list[Case]:
    return [
        Case("three symbols 3, 3, 2", (np.array([3, 3, 2]),), _OPTIMAL_HINT),
        Case("skewed counts", (np.array([50, 20, 10, 10, 5, 3, 2]),), _OPTIMAL_HINT),
        Case("absent symbols", (np.array([5, 0, 3, 0, 1, 1]),),
             "a symbol with count 0 gets length 0 and takes no place in the tree"),
        Case("one symbol", (np.array([0, 7, 0]),),
             "a lone symbol still needs one bit per occurrence: length 1 (and 0 for the absent ones)"),
        Case("two symbols", (np.array([1, 100]),), "two symbols get one bit each"),
        Case("no symbols", (np.array([0, 0, 0]),), "no symbol occurs, so every length is 0"),
        Case("empty alphabet", (np.zeros(0, dtype=np.int64),), "an empty counts array gives an empty lengths array"),
        Case("eight equal counts", (np.full(8, 4),), "equal counts of 8 symbols give 3 bits each"),
        Case("five equal counts", (np.full(5, 2),), "any optimal tree is accepted: here lengths 2, 2, 2, 3, 3"),
        Case("5-bit weight codes", (_laplace_code_counts(0),), _OPTIMAL_HINT),
    ]


def _verify_lengths(args: tuple, expected: np.ndarray, received) -> None:
    counts = np.asarray(args[0], dtype=np.int64)
    got = as_array(received, "the code lengths")
    if got.shape != counts.shape:
        raise Mismatch(f"the code lengths have shape {tuple(got.shape)}, "
                       f"expected {tuple(counts.shape)} (one per symbol)")
    got_float = got.astype(np.float64)
    if np.any(got_float != np.round(got_float)) or np.any(got_float < 0):
        raise Mismatch("code lengths must be nonnegative integers")
    lengths = got_float.astype(np.int64)
    present = counts > 0
    wrong_absent = np.flatnonzero(~present & (lengths != 0))
    if wrong_absent.size:
        raise Mismatch(f"symbol {int(wrong_absent[0])} has count 0 but length {lengths[wrong_absent[0]]}; expected 0")
    if np.count_nonzero(present) == 1:
        compare_arrays(expected, lengths, what="the code lengths", exact=True)
        return
    missing = np.flatnonzero(present & (lengths == 0))
    if missing.size:
        raise Mismatch(f"symbol {int(missing[0])} occurs but has length 0")
    # Kraft inequality, in exact integer arithmetic: sum 2**(longest - l) <= 2**longest.
    longest = int(lengths.max()) if lengths.size else 0
    kraft = sum(1 << (longest - int(length)) for length in lengths[present])
    if kraft > 1 << longest:
        raise Mismatch(f"no prefix code has these lengths: the Kraft sum is {kraft / (1 << longest):.4f} > 1")
    best = int(np.sum(counts * expected))
    total = int(np.sum(counts * lengths))
    if total != best:
        raise Mismatch(f"these lengths encode the symbols in {total} bits; a Huffman code needs only {best}")


def check_huffman_code_lengths(huffman_code_lengths: Callable) -> None:
    """Grade ``huffman_code_lengths(counts)``: any optimal lengths, 0 for absent symbols, 1 for a lone symbol."""
    run_check("huffman_code_lengths", huffman_code_lengths, _length_cases(), reference_huffman_code_lengths,
              _verify_lengths, ("counts",))


# --- canonical_codes ------------------------------------------------------------------------

_CANONICAL_HINT = ("sort symbols by (length, symbol); the first code is 0, each next code is the previous + 1, "
                   "shifted left by the growth in length")


def _canonical_cases() -> list[Case]:
    return [
        Case("RFC 1951 example", (np.array([3, 3, 3, 3, 3, 2, 4, 4]),), _CANONICAL_HINT),
        Case("lengths 1, 2, 3, 3", (np.array([1, 2, 3, 3]),), _CANONICAL_HINT),
        Case("lengths not in symbol order", (np.array([4, 1, 3, 2, 4]),),
             "order by length first, then by symbol within one length"),
        Case("absent symbols", (np.array([0, 2, 0, 1, 2]),),
             "a symbol with length 0 gets code 0 and no place in the order"),
        Case("equal lengths", (np.array([2, 2, 2, 2]),),
             "equal lengths number the symbols 0, 1, 2, ... in symbol order"),
        Case("one symbol", (np.array([0, 1]),), "a lone symbol of length 1 gets code 0"),
        Case("empty alphabet", (np.zeros(0, dtype=np.int64),), "no lengths give no codes"),
        Case("lengths of a skewed code", (reference_huffman_code_lengths(np.array([50, 20, 10, 10, 5, 3, 2, 1])),),
             _CANONICAL_HINT),
    ]


def _verify_canonical(args: tuple, expected: np.ndarray, received) -> None:
    compare_arrays(expected, received, what="the codes", exact=True)


def check_canonical_codes(canonical_codes: Callable) -> None:
    """Grade ``canonical_codes(lengths)``: integer codes in the DEFLATE convention, 0 for absent symbols."""
    run_check("canonical_codes", canonical_codes, _canonical_cases(), reference_canonical_codes, _verify_canonical,
              ("lengths",))


# --- huffman_decode --------------------------------------------------------------------------

_PADDING_HINT = "stop after count symbols: the zero bits that pad the stream to whole bytes are not symbols"


def _encode_bits(symbols: list[int], code: dict[int, str]) -> str:
    bits = "".join(code[s] for s in symbols)
    return bits + "0" * (-len(bits) % 8)


def _decode_case(label: str, symbols: list[int], code: dict[int, str], hint: str = _PADDING_HINT) -> Case:
    bits = _encode_bits(symbols, code)
    return Case(label, (bits, code, len(symbols)), hint,
                shown=f"bits={bits!r}, code={describe(code)}, count={len(symbols)}")


def _decode_cases() -> list[Case]:
    three = {0: "0", 1: "10", 2: "11"}
    rfc = code_strings(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    rng = np.random.default_rng(3)
    skewed_lengths = reference_huffman_code_lengths(np.array([40, 20, 10, 5, 3, 1, 1]))
    skewed = code_strings(skewed_lengths)
    skewed_symbols = [int(s) for s in rng.choice(7, size=40, p=np.array([40, 20, 10, 5, 3, 1, 1]) / 80)]
    return [
        _decode_case("three symbols with padding", [1, 0, 2, 2, 0, 1], three),
        _decode_case("no padding needed", [1, 2, 2, 1], three,
                     hint="read bits one at a time and emit a symbol as soon as the bits read form a code word"),
        _decode_case("RFC 1951 code", [5, 0, 7, 3, 3, 6, 1, 5, 2, 4], rfc,
                     hint="start a new code word after each symbol"),
        _decode_case("count 0", [], three, hint="count 0 means no symbols, even if padding bits follow"),
        Case("empty stream", ("", three, 0), "no bits and count 0 give an empty list"),
        _decode_case("one-symbol alphabet", [5, 5, 5], {5: "0"},
                     hint="a lone symbol has the 1-bit code '0'; stop after count symbols"),
        _decode_case("40 symbols of a skewed code", skewed_symbols, skewed, hint=_PADDING_HINT),
    ]


def _verify_decode(args: tuple, expected: list[int], received) -> None:
    if received is None:
        raise Mismatch("the function returned None; return the list of symbols")
    compare_arrays(np.asarray(expected, dtype=np.int64), list(received), what="the symbols", exact=True)


def check_huffman_decode(huffman_decode: Callable) -> None:
    """Grade ``huffman_decode(bits, code, count)``: the first ``count`` symbols of a '0'/'1' string."""
    run_check("huffman_decode", huffman_decode, _decode_cases(), reference_huffman_decode, _verify_decode,
              ("bits", "code", "count"))
