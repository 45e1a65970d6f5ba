"""Expected relative-index sizes when the kept weights are placed at random.

With random weights, magnitude pruning keeps a uniformly random subset of K
of a layer's n positions, so the size of a pruned and quantized (P+Q) layer
depends only on n, K, the bit widths and the filler rule. This module gives
that size in closed form, so a measured file can be checked against it.

Filler rule (the one :mod:`dclab.sparse` and the compressed file use): the
layer is flattened row-major, each kept weight stores the number of zeros
``g`` since the previous stored entry, one entry skips at most ``2**b - 1``
zeros, and a gap of ``g`` zeros is therefore preceded by ``floor(g / 2**b)``
filler entries (each filler covers ``2**b - 1`` zeros plus its own slot).
Zeros after the last kept weight need no entries.

Derivation. Write ``m = 2**b`` and let ``g_1 .. g_K`` be the gaps before the
kept weights and ``g_{K+1}`` the trailing zeros. For a uniformly random
K-subset the K + 1 gaps are exchangeable, and the first gap is at least t
exactly when the first t positions are all pruned::

    P(g >= t) = C(n - t, K) / C(n, K)

Since ``floor(g / m) = sum_{j >= 1} [g >= j m]``, the expected number of
fillers in the layer is::

    E[F] = K * sum_{j >= 1} C(n - j m, K) / C(n, K)

For large n this tends to the Bernoulli(p) placement, where a gap is
geometric, ``P(g >= t) = q**t`` with ``q = 1 - p``, and
``E[F] / K = q**m / (1 - q**m)``. The expected number of stored entries is
``K + E[F]``; at P+Q each entry costs ``b`` index bits plus the code bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

__all__ = [
    "fillers_per_kept_bernoulli",
    "expected_fillers",
    "expected_entries",
    "PQSizeEstimate",
    "expected_pq_size",
]


def _check_counts(numel: int, kept: int, index_bits: int) -> None:
    if numel < 0 or not 0 <= kept <= numel:
        raise ValueError(f"kept={kept} must lie in 0..numel={numel}")
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits={index_bits} is outside 1..16")


def fillers_per_kept_bernoulli(keep: float, index_bits: int) -> float:
    """Return the expected fillers per kept weight, ``q**m / (1 - q**m)``, for Bernoulli(keep) placement.

    Args:
        keep: probability that a weight is kept, in (0, 1].
        index_bits: b; a gap of g zeros needs ``floor(g / 2**b)`` fillers.

    Raises:
        ValueError: keep outside (0, 1] or index_bits outside 1..16.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep={keep} is outside (0, 1]")
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits={index_bits} is outside 1..16")
    q_to_m = (1.0 - keep) ** (1 << index_bits)
    return q_to_m / (1.0 - q_to_m)


def expected_fillers(numel: int, kept: int, index_bits: int) -> float:
    """Return ``E[F] = K * sum_j C(n - j m, K) / C(n, K)`` for K of n positions kept uniformly at random.

    Term j is at most ``q**(j m)`` with ``q = 1 - K / n``, so the sum stops at
    the first j where that bound falls below 1e-18, or where ``n - j m < K``
    and the binomial coefficient is zero.

    Raises:
        ValueError: kept outside 0..numel or index_bits outside 1..16.
    """
    _check_counts(numel, kept, index_bits)
    if kept == 0:
        return 0.0
    m = 1 << index_bits
    last_j = (numel - kept) // m
    q = 1.0 - kept / numel
    if q > 0.0:
        # q**(j m) < 1e-18  <=>  j > log(1e-18) / (m log q)
        last_j = min(last_j, int(math.log(1e-18) / (m * math.log(q))) + 1)
    if last_j < 1:
        return 0.0
    j = np.arange(1, last_j + 1, dtype=np.float64)
    # log C(n - j m, K) - log C(n, K); the log K! terms cancel.
    log_ratio = (
        gammaln(numel - j * m + 1) - gammaln(numel - j * m - kept + 1)
        - gammaln(numel + 1) + gammaln(numel - kept + 1)
    )
    return float(kept * np.exp(log_ratio).sum())


def expected_entries(numel: int, kept: int, index_bits: int) -> float:
    """Return the expected number of stored entries: kept weights plus expected fillers."""
    return kept + expected_fillers(numel, kept, index_bits)


@dataclass(frozen=True)
class PQSizeEstimate:
    """The expected size of one layer stored pruned and quantized (fixed-width streams).

    Attributes:
        entries: expected stored entries (kept weights plus fillers).
        fillers: expected filler entries.
        index_bytes: ``ceil(entries * index_bits / 8)``.
        code_bytes: ``ceil(entries * weight_bits / 8)``.
        fixed_bytes: bytes that do not depend on where the kept weights lie
            (codebook, bias, field headers), as given by the caller.
        dense_bytes: the layer's float32 weights and bias.
    """

    entries: float
    fillers: float
    index_bytes: float
    code_bytes: float
    fixed_bytes: int
    dense_bytes: int

    @property
    def total_bytes(self) -> float:
        """Expected bytes of the layer in the file."""
        return self.index_bytes + self.code_bytes + self.fixed_bytes

    @property
    def rate(self) -> float:
        """Expected stored size over the dense float32 size."""
        return self.total_bytes / self.dense_bytes


def expected_pq_size(
    numel: int,
    kept: int,
    index_bits: int,
    weight_bits: int,
    *,
    bias: int = 0,
    fixed_bytes: int | None = None,
) -> PQSizeEstimate:
    """Return the expected P+Q size of a layer whose kept weights are a uniformly random subset.

    Args:
        numel: weights in the layer.
        kept: weights kept by pruning.
        index_bits: bits per relative-index entry.
        weight_bits: bits per weight code.
        bias: number of float32 biases.
        fixed_bytes: placement-independent bytes (codebook, bias, headers).
            Default: a full codebook of ``2**weight_bits`` float32 values
            plus the bias, with no headers.

    Raises:
        ValueError: counts or bit widths out of range.
    """
    _check_counts(numel, kept, index_bits)
    if not 1 <= weight_bits <= 16:
        raise ValueError(f"weight_bits={weight_bits} is outside 1..16")
    fillers = expected_fillers(numel, kept, index_bits)
    entries = kept + fillers
    if fixed_bytes is None:
        fixed_bytes = 4 * (1 << weight_bits) + 4 * bias
    return PQSizeEstimate(
        entries=entries,
        fillers=fillers,
        index_bytes=math.ceil(entries * index_bits / 8),
        code_bytes=math.ceil(entries * weight_bits / 8),
        fixed_bytes=fixed_bytes,
        dense_bytes=4 * (numel + bias),
    )
