"""Relative-index storage of a pruned layer (Deep Compression, section 2).

A pruned layer is stored as a list of entries, one per kept weight plus
fillers. The layer is flattened in row-major order (a conv weight of shape
(out, in, kh, kw) as (out, in*kh*kw), which row-major flattening already
gives). Each entry stores the number of zeros skipped since the previous
entry, so

    position = previous position + index value + 1,  starting from previous = -1,

which is the rule of the authors' released decoder (positions are the
cumulative sum of ``value + 1``, minus one). With ``b`` index bits an entry
can skip at most ``2**b - 1`` zeros. A longer run of zeros gets a filler
entry after every ``2**b - 1`` zeros: the filler has index value
``2**b - 1`` and code 0 (value zero), and it lands on a zero position, so
decoding needs no special case for it.

Zeros after the last kept weight need no entries: the decoder reads the
layer's size (``numel``) from the file header and leaves the tail zero.

Example with ``b = 2`` (at most 3 zeros per entry)::

    weights  [0 0 5 0 0 0 0 0 7]      kept at positions 2 and 8
    gaps     2, 5                      zeros before each kept weight
    entries  index [2, 3, 1]  codes [5, 0, 7]
             (5 after 2 zeros; a filler after 3 more zeros, at position 6;
              7 after 1 more zero, at position 8)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "RelativeIndex",
    "max_skip",
    "encode_positions",
    "encode_relative",
    "decode_positions",
    "decode_relative",
    "count_fillers",
]


def max_skip(index_bits: int) -> int:
    """Return the largest number of zeros one entry can skip: ``2**index_bits - 1``.

    Raises:
        ValueError: index_bits outside 1..16.
    """
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits={index_bits!r} is outside 1..16")
    return (1 << index_bits) - 1


@dataclass(frozen=True)
class RelativeIndex:
    """A layer in relative-index form.

    Attributes:
        index: per entry, the zeros skipped since the previous entry
            (uint16, each at most ``2**index_bits - 1``).
        values: per entry, the stored code or weight value; 0 for fillers.
        numel: number of weights in the layer (the length after decoding).
        index_bits: bits per index value.
        fillers: number of filler entries among the entries.
    """

    index: np.ndarray
    values: np.ndarray
    numel: int
    index_bits: int
    fillers: int

    @property
    def entries(self) -> int:
        """Number of stored entries (kept weights plus fillers)."""
        return int(self.index.size)


def encode_positions(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn sorted kept positions into relative-index values, adding fillers.

    Vectorized: a gap of ``g`` zeros needs ``g // 2**b`` fillers (each filler
    covers ``2**b - 1`` zeros and its own slot), and the kept entry then
    stores ``g % 2**b``.

    Args:
        positions: strictly increasing flat positions of the kept weights.
        index_bits: bits per index value (1..16).

    Returns:
        (index, source): ``index`` contains each entry's skip (uint16) and
        ``source`` the position in ``positions`` that the entry stores, or
        -1 for a filler (int64).

    Raises:
        ValueError: positions are negative or not strictly increasing.
    """
    skip = max_skip(index_bits)
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    if positions.size == 0:
        return np.zeros(0, dtype=np.uint16), np.zeros(0, dtype=np.int64)
    gaps = np.diff(positions, prepend=-1) - 1
    if gaps.min() < 0:
        raise ValueError("positions must be nonnegative and strictly increasing")

    fillers = gaps // (skip + 1)
    per_kept = fillers + 1  # entries written for each kept weight
    owner = np.repeat(np.arange(positions.size), per_kept)
    first_entry = np.cumsum(per_kept) - per_kept
    rank = np.arange(owner.size) - first_entry[owner]  # 0.. within the group
    is_kept = rank == fillers[owner]

    index = np.where(is_kept, gaps[owner] - fillers[owner] * (skip + 1), skip).astype(np.uint16)
    source = np.where(is_kept, owner, -1)
    return index, source


def encode_relative(values: np.ndarray, index_bits: int, kept: np.ndarray | None = None) -> RelativeIndex:
    """Encode a layer's codes (or weight values) in relative-index form.

    Args:
        values: the layer's codes (0 = pruned) or weights, any shape; it is
            flattened in row-major order.
        index_bits: bits per index value (1..16).
        kept: optional boolean mask of the same shape, True for stored
            weights. Default: ``values != 0``. A mask lets a kept weight whose
            value is exactly 0 still be stored.

    Returns:
        The :class:`RelativeIndex`; ``values`` has the dtype of the input and
        contains 0 at fillers.

    Raises:
        ValueError: ``kept`` has another shape, or index_bits is out of range.
    """
    flat = np.asarray(values).reshape(-1)
    if kept is None:
        mask = flat != 0
    else:
        mask = np.asarray(kept).reshape(-1).astype(bool)
        if mask.size != flat.size:
            raise ValueError(f"kept mask has {mask.size} elements, the values {flat.size}")
    positions = np.flatnonzero(mask)
    index, source = encode_positions(positions, index_bits)
    stored = np.zeros(index.size, dtype=flat.dtype)
    real = source >= 0
    stored[real] = flat[positions[source[real]]]
    return RelativeIndex(index, stored, flat.size, index_bits, int(index.size - positions.size))


def decode_positions(index: np.ndarray, numel: int) -> np.ndarray:
    """Return each entry's flat position: ``cumsum(index + 1) - 1``.

    Raises:
        ValueError: an entry lands at or past ``numel``.
    """
    index = np.asarray(index).reshape(-1)
    if index.size > numel:
        raise ValueError(f"{index.size} entries cannot fit in a layer of {numel} weights")
    if index.size == 0:
        return np.zeros(0, dtype=np.int64)
    positions = np.cumsum(index.astype(np.int64) + 1) - 1
    if positions[-1] >= numel:
        raise ValueError(f"the relative index reaches position {positions[-1]}, past the layer's {numel} weights")
    return positions


def decode_relative(index: np.ndarray, values: np.ndarray, numel: int) -> np.ndarray:
    """Rebuild the flat layer from its entries (inverse of :func:`encode_relative`).

    Fillers carry 0 and land on zero positions, so they need no special case.

    Args:
        index: per-entry skips.
        values: per-entry codes or weights (same length as ``index``).
        numel: number of weights in the layer.

    Returns:
        Flat array of ``numel`` elements with the dtype of ``values``.

    Raises:
        ValueError: the lengths differ or an entry lands past ``numel``.
    """
    values = np.asarray(values).reshape(-1)
    if values.size != np.asarray(index).size:
        raise ValueError(f"{np.asarray(index).size} index values but {values.size} stored values")
    positions = decode_positions(index, numel)
    flat = np.zeros(numel, dtype=values.dtype)
    flat[positions] = values
    return flat


def count_fillers(positions: np.ndarray, index_bits: int) -> int:
    """Return how many filler entries a layer with these kept positions needs."""
    skip = max_skip(index_bits)
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    if positions.size == 0:
        return 0
    gaps = np.diff(positions, prepend=-1) - 1
    return int(np.sum(gaps // (skip + 1)))
