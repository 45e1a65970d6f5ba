"""Tests of dclab.grading: the checks accept correct functions and reject plausible wrong ones.

The solutions are the functions of ``solutions/*.ipynb`` (their code cells
are executed here, check cells left out). Each wrong implementation below is
a mistake a student could make; every one must fail its check. Run
``python tests/test_grading.py`` to print the mutation table of
docs/grading.md from these mutants; a test keeps that table current.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import io
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from torch import nn

from dclab import grading
from dclab.grading import huffman_coding, pruning, sparse_storage, weight_sharing

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
DOCS = ROOT / "docs" / "grading.md"
CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")


@functools.cache
def solution_namespace(notebook: str) -> dict:
    """Execute the non-check code cells of a solution notebook and return its namespace."""
    nb = nbformat.read(SOLUTIONS / f"{notebook}.ipynb", as_version=4)
    namespace: dict = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and not CHECK_CALL.search(cell.source):
            exec(compile(cell.source, f"{notebook}.ipynb", "exec"), namespace)  # noqa: S102 - our own notebooks
    return namespace


def solution(exercise: str) -> Callable:
    return solution_namespace(grading.notebook_of(exercise))[exercise]


# ---------------------------------------------------------------- wrong implementations: pruning


def mask_ge(weight, threshold):
    return (weight.abs() >= threshold).float()


def mask_no_abs(weight, threshold):
    return (weight > threshold).float()


def mask_returns_weights(weight, threshold):
    return weight * (weight.abs() > threshold)


def std_sample(weight, s):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that n - 1 = 0 for one weight (and returns NaN)
        return s * weight.std().item()


def std_of_magnitudes(weight, s):
    return s * weight.abs().std(correction=0).item()


def std_forgets_s(weight, s):
    return weight.std(correction=0).item()


def std_root_mean_square(weight, s):
    return s * weight.pow(2).mean().sqrt().item()


def _prunable(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def sparsity_from_values(model):
    layers = _prunable(model)
    return sum(int((m.weight == 0).sum()) for m in layers) / sum(m.weight.numel() for m in layers)


def sparsity_mean_of_layers(model):
    fractions = []
    for m in _prunable(model):
        mask = getattr(m, "weight_mask", torch.ones_like(m.weight))
        fractions.append(float((mask == 0).float().mean()))
    return sum(fractions) / len(fractions)


def sparsity_counts_biases(model):
    pruned = total = 0
    for m in _prunable(model):
        mask = getattr(m, "weight_mask", torch.ones_like(m.weight))
        pruned += int((mask == 0).sum())
        total += mask.numel() + (m.bias.numel() if m.bias is not None else 0)
    return pruned / total


def sparsity_masked_layers_only(model):
    masks = [m.weight_mask for m in _prunable(model) if hasattr(m, "weight_mask")]
    if not masks:
        return 0.0
    return sum(int((mask == 0).sum()) for mask in masks) / sum(mask.numel() for mask in masks)


def sgd_masks_gradient_only(weight, grad, mask, velocity, lr, momentum):
    new_velocity = momentum * velocity + grad * mask
    return weight - lr * new_velocity, new_velocity


def sgd_velocity_unmasked(weight, grad, mask, velocity, lr, momentum):
    new_velocity = momentum * velocity + grad
    return mask * (weight - lr * new_velocity), new_velocity


def sgd_weight_unmasked(weight, grad, mask, velocity, lr, momentum):
    new_velocity = mask * (momentum * velocity + grad)
    return weight - lr * new_velocity, new_velocity


def sgd_ascent(weight, grad, mask, velocity, lr, momentum):
    new_velocity = mask * (momentum * velocity + grad)
    return mask * (weight + lr * new_velocity), new_velocity


# ---------------------------------------------------------------- wrong implementations: weight sharing


def linear_two_pow_b(weights, bits):
    return np.unique(np.linspace(weights.min(), weights.max(), 2**bits))


def linear_symmetric(weights, bits):
    top = np.abs(weights).max()
    return np.unique(np.linspace(-top, top, 2**bits - 1))


def linear_keeps_duplicates(weights, bits):
    return np.linspace(weights.min(), weights.max(), 2**bits - 1)


def density_includes_ends(weights, bits):
    return np.unique(np.quantile(weights, np.linspace(0.0, 1.0, 2**bits - 1)))


def density_two_pow_b(weights, bits):
    k = 2**bits
    return np.unique(np.quantile(weights, (np.arange(k) + 0.5) / k))


def density_of_magnitudes(weights, bits):
    k = 2**bits - 1
    return np.unique(np.quantile(np.abs(weights), (np.arange(k) + 0.5) / k))


def _assign(weights, centroids):
    return np.abs(weights[:, None] - centroids[None, :]).argmin(axis=1)


def kmeans_empty_to_zero(weights, centroids):
    labels = _assign(weights, centroids)
    new = np.array([weights[labels == j].mean() if np.any(labels == j) else 0.0 for j in range(len(centroids))])
    return new, labels


def kmeans_empty_to_nan(weights, centroids):
    labels = _assign(weights, centroids)
    counts = np.bincount(labels, minlength=len(centroids))
    sums = np.bincount(labels, weights=weights, minlength=len(centroids))
    with np.errstate(invalid="ignore"):
        return sums / counts, labels


def kmeans_median(weights, centroids):
    labels = _assign(weights, centroids)
    new = np.array([np.median(weights[labels == j]) if np.any(labels == j) else centroids[j]
                    for j in range(len(centroids))])
    return new, labels


def kmeans_no_abs(weights, centroids):
    labels = (weights[:, None] - centroids[None, :]).argmin(axis=1)
    new = np.array([weights[labels == j].mean() if np.any(labels == j) else centroids[j]
                    for j in range(len(centroids))])
    return new, labels


def kmeans_labels_after_update(weights, centroids):
    new, _ = solution("kmeans_step")(weights, centroids)
    return new, _assign(weights, new)


def gradient_mean(weight_grad, codes, n_codes):
    sums = np.bincount(codes.ravel(), weights=weight_grad.ravel(), minlength=n_codes)
    counts = np.bincount(codes.ravel(), minlength=n_codes)
    mean = np.divide(sums, counts, out=np.zeros(n_codes), where=counts > 0)
    mean[0] = 0.0
    return mean


def gradient_includes_code_zero(weight_grad, codes, n_codes):
    return np.bincount(codes.ravel(), weights=weight_grad.ravel(), minlength=n_codes)


def gradient_no_minlength(weight_grad, codes, n_codes):
    gradient = np.bincount(codes.ravel(), weights=weight_grad.ravel())
    gradient[0] = 0.0
    return gradient


# ---------------------------------------------------------------- wrong implementations: sparse storage


def _encode(values, index_bits, *, max_skip=None, filler_slot=True, stores_distance=False, order="C"):
    max_skip = 2**index_bits - 1 if max_skip is None else max_skip
    flat = np.asarray(values).ravel(order=order)
    index, stored, zeros = [], [], 0
    for value in flat:
        if value == 0:
            zeros += 1
            continue
        skip = zeros + 1 if stores_distance else zeros
        while skip > max_skip:
            index.append(max_skip)
            stored.append(0)
            skip -= max_skip + 1 if filler_slot else max_skip
        index.append(skip)
        stored.append(value)
        zeros = 0
    return np.array(index, dtype=np.int64), np.array(stored, dtype=flat.dtype)


def encode_filler_too_early(values, index_bits):
    return _encode(values, index_bits, max_skip=2**index_bits - 2)


def encode_stores_distance(values, index_bits):
    return _encode(values, index_bits, stores_distance=True)


def encode_filler_without_slot(values, index_bits):
    return _encode(values, index_bits, filler_slot=False)


def encode_no_fillers(values, index_bits):
    return _encode(values, index_bits, max_skip=10**9)


def encode_column_major(values, index_bits):
    return _encode(values, index_bits, order="F")


def _decode(index, stored, numel, *, step=1, start=-1, skip_fillers=False, trim=False):
    layer = np.zeros(numel, dtype=np.asarray(stored).dtype)
    position = start
    for skip, value in zip(index, stored):
        if skip_fillers and value == 0:
            continue
        position += int(skip) + step
        layer[position] = value
    return layer[: position + 1] if trim else layer


def decode_no_plus_one(index, stored, numel):
    return _decode(index, stored, numel, step=0, start=0)


def decode_starts_at_zero(index, stored, numel):
    return _decode(index, stored, numel, start=0)


def decode_skips_fillers(index, stored, numel):
    return _decode(index, stored, numel, skip_fillers=True)


def decode_drops_trailing_zeros(index, stored, numel):
    return _decode(index, stored, numel, trim=True)


def _ratio(codes, codebook, n_biases, weight_bits, index_bits, *, fillers=True, filler_code=True,
           biases=True, codebook_values=None):
    relative = solution("relative_index_encode")
    index, stored = relative(codes, index_bits)
    kept = int(np.count_nonzero(stored))
    filler_count = len(index) - kept if fillers else 0
    entry_bits = kept * (weight_bits + index_bits) + filler_count * (index_bits + (weight_bits if filler_code else 0))
    bias_count = n_biases if biases else 0
    book = len(codebook) if codebook_values is None else codebook_values(len(codebook))
    return 32 * (codes.size + bias_count) / (entry_bits + 32 * (book + bias_count))


def ratio_no_fillers(codes, codebook, n_biases, weight_bits, index_bits):
    return _ratio(codes, codebook, n_biases, weight_bits, index_bits, fillers=False)


def ratio_fillers_index_only(codes, codebook, n_biases, weight_bits, index_bits):
    return _ratio(codes, codebook, n_biases, weight_bits, index_bits, filler_code=False)


def ratio_ignores_biases(codes, codebook, n_biases, weight_bits, index_bits):
    return _ratio(codes, codebook, n_biases, weight_bits, index_bits, biases=False)


def ratio_ignores_codebook(codes, codebook, n_biases, weight_bits, index_bits):
    return _ratio(codes, codebook, n_biases, weight_bits, index_bits, codebook_values=lambda size: 0)


def ratio_codebook_without_zero(codes, codebook, n_biases, weight_bits, index_bits):
    return _ratio(codes, codebook, n_biases, weight_bits, index_bits, codebook_values=lambda size: size - 1)


# ---------------------------------------------------------------- wrong implementations: Huffman


def lengths_shannon(counts):
    counts = np.asarray(counts, dtype=np.float64)
    lengths = np.zeros(counts.size, dtype=np.int64)
    present = counts > 0
    lengths[present] = np.maximum(1, np.ceil(-np.log2(counts[present] / counts.sum())))
    return lengths


def lengths_fixed(counts):
    counts = np.asarray(counts)
    lengths = np.zeros(counts.size, dtype=np.int64)
    present = counts > 0
    lengths[present] = max(1, math.ceil(math.log2(max(1, int(present.sum())))))
    return lengths


def _huffman_lengths(counts, *, include_absent=False, largest_first=False, lone_gets_one=True):
    counts = np.asarray(counts)
    lengths = np.zeros(counts.size, dtype=np.int64)
    symbols = [s for s in range(counts.size) if include_absent or counts[s] > 0]
    if len(symbols) == 1 and lone_gets_one:
        lengths[symbols[0]] = 1
    sign = -1 if largest_first else 1
    heap = [(sign * int(counts[s]), s, [s]) for s in symbols]
    heapq.heapify(heap)
    next_id = counts.size
    while len(heap) > 1:
        count_a, _, a = heapq.heappop(heap)
        count_b, _, b = heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        heapq.heappush(heap, (count_a + count_b, next_id, a + b))
        next_id += 1
    return lengths


def lengths_lone_symbol_zero(counts):
    return _huffman_lengths(counts, lone_gets_one=False)


def lengths_absent_symbols_coded(counts):
    return _huffman_lengths(counts, include_absent=True)


def lengths_merges_largest(counts):
    return _huffman_lengths(counts, largest_first=True)


def _canonical(lengths, *, key=lambda length, symbol: (length, symbol), shift=True, first=0):
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = sorted(((int(length), symbol) for symbol, length in enumerate(lengths) if length > 0),
                   key=lambda item: key(*item))
    code, previous = first - 1, None
    for length, symbol in order:
        code += 1
        if shift and previous is not None:
            code = code << (length - previous) if length >= previous else code >> (previous - length)
        codes[symbol] = code
        previous = length
    return codes


def canonical_no_shift(lengths):
    return _canonical(lengths, shift=False)


def canonical_symbol_order(lengths):
    return _canonical(lengths, key=lambda length, symbol: symbol)


def canonical_descending_symbols(lengths):
    return _canonical(lengths, key=lambda length, symbol: (length, -symbol))


def canonical_starts_at_one(lengths):
    return _canonical(lengths, first=1)


def _huffman_decode(bits, code, count, *, limit=True, extra=0, reset=True):
    symbol_of = {word: symbol for symbol, word in code.items()}
    symbols, word = [], ""
    for bit in bits:
        if limit and len(symbols) >= count + extra:
            break
        word += bit
        if word in symbol_of:
            symbols.append(symbol_of[word])
            if reset:
                word = ""
    return symbols


def decode_reads_padding(bits, code, count):
    return _huffman_decode(bits, code, count, limit=False)


def decode_one_extra_symbol(bits, code, count):
    return _huffman_decode(bits, code, count, extra=1)


def decode_no_reset(bits, code, count):
    return _huffman_decode(bits, code, count, reset=False)


# ---------------------------------------------------------------- the mutation table

MUTANTS: dict[str, list[tuple[Callable, str]]] = {
    "magnitude_mask": [
        (mask_ge, "keeps ties: `abs(w) >= t` instead of `>`"),
        (mask_no_abs, "compares `w > t`, losing the negative weights"),
        (mask_returns_weights, "returns the pruned weights instead of a 0/1 mask"),
    ],
    "std_threshold": [
        (std_sample, "sample standard deviation (divides by n - 1, torch's default `std()`)"),
        (std_of_magnitudes, "standard deviation of `abs(w)`"),
        (std_forgets_s, "forgets the factor s"),
        (std_root_mean_square, "root mean square (spread around 0, not around the mean)"),
    ],
    "sparsity": [
        (sparsity_from_values, "counts weights equal to 0 instead of mask entries equal to 0"),
        (sparsity_mean_of_layers, "averages the per-layer fractions instead of pooling the counts"),
        (sparsity_counts_biases, "counts biases in the total"),
        (sparsity_masked_layers_only, "leaves layers without a mask out of the total"),
    ],
    "masked_sgd_step": [
        (sgd_masks_gradient_only, "masks only the gradient (old momentum regrows pruned weights)"),
        (sgd_velocity_unmasked, "masks the weight but returns an unmasked velocity"),
        (sgd_weight_unmasked, "masks the velocity but not the weight (stale weights under the mask stay)"),
        (sgd_ascent, "sign error: `w + lr * v`"),
    ],
    "linear_init": [
        (linear_two_pow_b, "`2**b` centroids (forgets that code 0 is reserved)"),
        (linear_symmetric, "spaces centroids over `[-max abs(w), max abs(w)]`"),
        (linear_keeps_duplicates, "keeps duplicate centroids (no `np.unique`)"),
    ],
    "density_init": [
        (density_includes_ends, "quantiles `j / (k - 1)` (includes min and max)"),
        (density_two_pow_b, "`2**b` centroids"),
        (density_of_magnitudes, "quantiles of `abs(w)`"),
    ],
    "kmeans_step": [
        (kmeans_empty_to_zero, "an empty cluster's centroid becomes 0"),
        (kmeans_empty_to_nan, "an empty cluster's centroid becomes NaN (mean of nothing)"),
        (kmeans_median, "moves centroids to the median"),
        (kmeans_no_abs, "nearest by `w - c` without the absolute value"),
        (kmeans_labels_after_update, "returns labels for the new centroids, not the ones used"),
    ],
    "centroid_gradient": [
        (gradient_mean, "averages the gradients instead of summing them"),
        (gradient_includes_code_zero, "gives code 0 (the fixed zero) a gradient"),
        (gradient_no_minlength, "`np.bincount` without `minlength` (unused last codes missing)"),
    ],
    "relative_index_encode": [
        (encode_filler_too_early, "filler one gap too early (largest skip `2**b - 2`)"),
        (encode_stores_distance, "stores the distance (zeros + 1), an off-by-one"),
        (encode_filler_without_slot, "a filler skips `2**b - 1` zeros but takes no position"),
        (encode_no_fillers, "no fillers (index values overflow b bits)"),
        (encode_column_major, "flattens column-major"),
    ],
    "relative_index_decode": [
        (decode_no_plus_one, "position = previous + value (forgets the + 1)"),
        (decode_starts_at_zero, "starts from previous = 0 instead of -1"),
        (decode_skips_fillers, "skips filler entries without advancing the position"),
        (decode_drops_trailing_zeros, "returns only up to the last entry (drops trailing zeros)"),
    ],
    "compression_ratio": [
        (ratio_no_fillers, "counts no filler entries"),
        (ratio_fillers_index_only, "fillers cost only their index bits"),
        (ratio_ignores_biases, "leaves the biases out"),
        (ratio_ignores_codebook, "leaves the codebook out"),
        (ratio_codebook_without_zero, "counts the codebook without code 0's zero"),
    ],
    "huffman_code_lengths": [
        (lengths_shannon, "Shannon lengths `ceil(-log2 p)`"),
        (lengths_fixed, "fixed-length code `ceil(log2 n)`"),
        (lengths_lone_symbol_zero, "a lone symbol gets length 0"),
        (lengths_absent_symbols_coded, "gives absent symbols (count 0) a code"),
        (lengths_merges_largest, "merges the two largest counts"),
    ],
    "canonical_codes": [
        (canonical_no_shift, "adds 1 without shifting when the length grows"),
        (canonical_symbol_order, "orders by symbol only, ignoring length"),
        (canonical_descending_symbols, "orders equal lengths by descending symbol"),
        (canonical_starts_at_one, "the first code is 1"),
    ],
    "huffman_decode": [
        (decode_reads_padding, "ignores count and decodes the padding bits"),
        (decode_one_extra_symbol, "decodes count + 1 symbols"),
        (decode_no_reset, "does not start a new code word after a symbol"),
    ],
}

MUTATION_CASES = [(exercise, function) for exercise, mutants in MUTANTS.items() for function, _ in mutants]


def first_failure(exercise: str, function: Callable) -> str | None:
    """Return the label of the first case that ``function`` fails, or None when it passes."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            grading.get_check(exercise)(function)
    except AssertionError as error:
        return re.search(r"the first one is '([^']*)'", str(error)).group(1)
    return None


def mutation_table() -> str:
    """Return the markdown mutation table: every wrong implementation and the check case that rejects it."""
    lines = ["| exercise | wrong implementation | rejected by the case |", "|---|---|---|"]
    for exercise, mutants in MUTANTS.items():
        for function, description in mutants:
            label = first_failure(exercise, function)
            lines.append(f"| `{exercise}` | {description} | {'NOT REJECTED' if label is None else label} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- tests


def test_mutants_cover_every_exercise():
    assert set(MUTANTS) == set(grading.exercise_names())
    for exercise, mutants in MUTANTS.items():
        assert len(mutants) >= 2, exercise


@pytest.mark.parametrize("exercise", grading.exercise_names())
def test_solution_passes(exercise, capsys):
    grading.get_check(exercise)(solution(exercise))
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"{exercise}: (\d+)/\1 checks passed", line), line


@pytest.mark.parametrize("exercise", grading.exercise_names())
def test_stub_raises_not_implemented(exercise, capsys):
    def stub(*args):
        raise NotImplementedError(f"implement {exercise}")

    with pytest.raises(NotImplementedError, match=f"implement {exercise}"):
        grading.get_check(exercise)(stub)
    assert re.fullmatch(rf"{exercise}: 0/\d+ checks passed", capsys.readouterr().out.strip())


@pytest.mark.parametrize(("exercise", "mutant"), MUTATION_CASES, ids=[f"{e}-{m.__name__}" for e, m in MUTATION_CASES])
def test_mutant_rejected(exercise, mutant, capsys):
    with pytest.raises(AssertionError) as failure:
        grading.get_check(exercise)(mutant)
    message = str(failure.value)
    assert "input:" in message
    assert "expected:" in message
    assert "received:" in message
    assert "hint:" in message
    line = capsys.readouterr().out.strip()
    passed, total = map(int, re.fullmatch(rf"{exercise}: (\d+)/(\d+) checks passed", line).groups())
    assert passed < total


def test_docs_mutation_table_current():
    text = DOCS.read_text(encoding="utf-8")
    assert mutation_table() in text, "docs/grading.md is stale: paste the output of `python tests/test_grading.py`"


def test_check_prints_one_line(capsys):
    grading.check_huffman_decode(solution("huffman_decode"))
    assert capsys.readouterr().out == "huffman_decode: 7/7 checks passed\n"


def test_check_rejects_non_callable():
    with pytest.raises(TypeError, match="check_linear_init"):
        grading.check_linear_init(None)


def test_check_failure_message_shows_case():
    with pytest.raises(AssertionError) as failure:
        grading.check_magnitude_mask(mask_ge)
    message = str(failure.value)
    assert "ties at the threshold" in message
    assert "threshold=0.5" in message
    assert "not >=" in message


def test_check_error_in_student_code():
    def crashes(weights, bits):
        raise IndexError("index 3 is out of bounds")

    with pytest.raises(AssertionError, match="raised IndexError: index 3 is out of bounds") as failure:
        grading.check_linear_init(crashes)
    assert isinstance(failure.value.__cause__, IndexError)


def test_unknown_check_attribute():
    with pytest.raises(AttributeError):
        grading.check_does_not_exist  # noqa: B018


def test_numpy_checks_skip_torch():
    import subprocess
    import sys

    code = ("import sys; from dclab import grading; grading.check_huffman_decode; grading.check_relative_index_encode; "
            "grading.check_kmeans_step; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- correct variants must pass


def mask_as_bool(weight, threshold):
    return weight.abs() > threshold


def mask_as_numpy(weight, threshold):
    return (np.abs(weight.numpy()) > threshold).astype(np.float64)


def mask_mutates_input(weight, threshold):
    weight.abs_()
    return (weight > threshold).float()


def std_with_numpy(weight, s):
    return s * float(np.std(weight.numpy().astype(np.float64)))


def std_as_tensor(weight, s):
    return s * weight.std(correction=0)


def sparsity_as_tensor(model):
    return torch.tensor(solution("sparsity")(model))


def sgd_in_place(weight, grad, mask, velocity, lr, momentum):
    velocity.mul_(momentum).add_(grad).mul_(mask)
    weight.sub_(lr * velocity).mul_(mask)
    return weight, velocity


def sgd_float64(weight, grad, mask, velocity, lr, momentum):
    return solution("masked_sgd_step")(weight.double(), grad.double(), mask.double(), velocity.double(), lr, momentum)


def linear_sorts_in_place(weights, bits):
    weights.sort()
    return np.unique(np.linspace(weights[0], weights[-1], 2**bits - 1))


def linear_by_formula(weights, bits):
    k = 2**bits - 1
    low, high = weights.min(), weights.max()
    if k == 1:
        return np.array([low])
    return np.unique([low + j * (high - low) / (k - 1) for j in range(k)])


def density_with_torch(weights, bits):
    k = 2**bits - 1
    probabilities = torch.tensor((np.arange(k) + 0.5) / k)
    return torch.unique(torch.quantile(torch.tensor(weights), probabilities))


def kmeans_ties_go_up(weights, centroids):
    distances = np.abs(weights[:, None] - centroids[None, :])
    labels = distances.shape[1] - 1 - distances[:, ::-1].argmin(axis=1)
    new = np.array([weights[labels == j].mean() if np.any(labels == j) else centroids[j]
                    for j in range(len(centroids))])
    return new, labels


def kmeans_labels_as_list(weights, centroids):
    new, labels = solution("kmeans_step")(weights, centroids)
    return list(new), [int(label) for label in labels]


def gradient_float32(weight_grad, codes, n_codes):
    return solution("centroid_gradient")(weight_grad.astype(np.float32), codes, n_codes).astype(np.float32)


def encode_with_library(values, index_bits):
    from dclab.sparse import encode_relative

    relative = encode_relative(values, index_bits)
    return relative.index, relative.values


def decode_with_library(index, stored, numel):
    from dclab.sparse import decode_relative

    return decode_relative(index, stored, numel)


def lengths_other_tie_rule(counts):
    # Huffman with ties broken towards the most recently merged node: different lengths, equally optimal.
    counts = np.asarray(counts)
    lengths = np.zeros(counts.size, dtype=np.int64)
    present = [s for s in range(counts.size) if counts[s] > 0]
    if len(present) == 1:
        lengths[present[0]] = 1
        return lengths
    heap = [(int(counts[s]), -s, [s]) for s in present]
    heapq.heapify(heap)
    order = 0
    while len(heap) > 1:
        count_a, _, a = heapq.heappop(heap)
        count_b, _, b = heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        order -= 1
        heapq.heappush(heap, (count_a + count_b, order - counts.size, a + b))
    return lengths


def lengths_from_library(counts):
    from dclab.huffman import code_lengths

    return code_lengths(np.asarray(counts, dtype=np.int64))


def decode_as_array(bits, code, count):
    return np.array(solution("huffman_decode")(bits, code, count), dtype=np.int64)


CORRECT_VARIANTS = [
    ("magnitude_mask", mask_as_bool),
    ("magnitude_mask", mask_as_numpy),
    ("magnitude_mask", mask_mutates_input),
    ("std_threshold", std_with_numpy),
    ("std_threshold", std_as_tensor),
    ("sparsity", sparsity_as_tensor),
    ("masked_sgd_step", sgd_in_place),
    ("masked_sgd_step", sgd_float64),
    ("linear_init", linear_sorts_in_place),
    ("linear_init", linear_by_formula),
    ("density_init", density_with_torch),
    ("kmeans_step", kmeans_ties_go_up),
    ("kmeans_step", kmeans_labels_as_list),
    ("centroid_gradient", gradient_float32),
    ("relative_index_encode", encode_with_library),
    ("relative_index_decode", decode_with_library),
    ("huffman_code_lengths", lengths_other_tie_rule),
    ("huffman_code_lengths", lengths_from_library),
    ("huffman_decode", decode_as_array),
]


@pytest.mark.parametrize(("exercise", "variant"), CORRECT_VARIANTS,
                         ids=[f"{e}-{v.__name__}" for e, v in CORRECT_VARIANTS])
def test_correct_variant_passes(exercise, variant):
    grading.get_check(exercise)(variant)


def test_tie_rule_variant_differs():
    # The variant must really differ from the reference, or the test above proves nothing about ties.
    counts = np.full(5, 2)
    assert not np.array_equal(lengths_other_tie_rule(counts), huffman_coding.reference_huffman_code_lengths(counts))


def test_kmeans_tie_variant_differs():
    weights, centroids = np.array([0.0, 0.5, 1.0, 2.0, 2.5]), np.array([0.0, 1.0, 2.0])
    assert not np.array_equal(kmeans_ties_go_up(weights, centroids)[1], solution("kmeans_step")(weights, centroids)[1])


# ---------------------------------------------------------------- references agree with the library


def test_sgd_reference_matches_torch_optimizer():
    from torch.nn.utils import prune as torch_prune

    from dclab.prune import enforce_masks

    torch.manual_seed(0)
    layer = nn.Linear(5, 4, bias=False)
    mask = (torch.rand(4, 5) > 0.5).float()
    velocity = torch.randn(4, 5)
    torch_prune.custom_from_mask(layer, "weight", mask)
    optimizer = torch.optim.SGD([layer.weight_orig], lr=0.1, momentum=0.9)
    optimizer.state[layer.weight_orig]["momentum_buffer"] = velocity.clone()
    weight_before = layer.weight_orig.detach().clone()

    loss = layer(torch.randn(3, 5)).pow(2).sum()
    loss.backward()
    grad = layer.weight_orig.grad.clone()
    optimizer.step()
    enforce_masks(layer, optimizer)

    expected_weight, expected_velocity = pruning.reference_masked_sgd_step(
        weight_before, grad, mask, velocity, 0.1, 0.9)
    torch.testing.assert_close(layer.weight_orig.detach(), expected_weight)
    torch.testing.assert_close(optimizer.state[layer.weight_orig]["momentum_buffer"], expected_velocity)


def test_kmeans_reference_matches_library():
    from dclab.kmeans import kmeans_1d

    rng = np.random.default_rng(0)
    weights = rng.laplace(0.0, 0.05, 500)
    init = np.linspace(weights.min(), weights.max(), 7)
    new, _ = weight_sharing.reference_kmeans_step(weights, init)
    np.testing.assert_allclose(new, kmeans_1d(weights, init, max_iter=1).centroids, rtol=1e-12, atol=1e-15)


def test_gradient_reference_matches_bincount():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 6, size=(5, 7))
    grad = rng.normal(size=(5, 7))
    expected = np.bincount(codes.ravel(), weights=grad.ravel(), minlength=8)
    expected[0] = 0.0
    np.testing.assert_allclose(weight_sharing.reference_centroid_gradient(grad, codes, 8), expected, atol=1e-12)


def test_decode_reference_on_library_code():
    from dclab.huffman import code_lengths

    rng = np.random.default_rng(2)
    symbols = rng.choice(12, size=300, p=np.arange(1, 13) / 78)
    lengths = code_lengths(np.bincount(symbols, minlength=12))
    code = huffman_coding.code_strings(lengths)
    bits = "".join(code[int(s)] for s in symbols) + "0000000"
    assert huffman_coding.reference_huffman_decode(bits, code, len(symbols)) == symbols.tolist()


def test_ratio_reference_matches_container():
    from dclab.container import encode_model_with_layout
    from dclab.models import build_model, compressible_layers
    from dclab.prune import prune_to_preset
    from dclab.quantize import quantize_model

    torch.manual_seed(0)
    model = build_model("lenet300", weights="random")
    prune_to_preset(model, "paper")
    quantize_model(model, 6)
    encoded = encode_model_with_layout(model, "quantized", index_bits=5)
    layer = compressible_layers(model)["ip3"]
    codes = layer.weight_codes.long().numpy()
    codebook = layer.weight_codebook.numpy()
    weight_bits = encoded.layers["ip3"]["weight_bits"]  # the container derives it from the codebook size
    ratio = sparse_storage.reference_compression_ratio(codes, codebook, layer.bias.numel(), weight_bits, 5)
    stored_bits = 32 * (codes.size + layer.bias.numel()) / ratio

    file_bits = 8 * sum(encoded.layout[("ip3", part)] for part in ("index", "weights", "codebook", "bias"))
    assert encoded.layers["ip3"]["entries"] == len(sparse_storage.reference_relative_index_encode(codes, 5)[0])
    assert 0 <= file_bits - stored_bits < 16  # the file rounds each of the two streams up to whole bytes


def test_case_arguments_fresh_each_call():
    from dclab.grading.core import Case

    case = Case("x", (np.array([1.0, 2.0]),))
    first = case.make_args()
    first[0][0] = 99.0
    assert case.make_args()[0][0] == 1.0


# ---------------------------------------------------------------- dclab grade (runs kernels)


def _write_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return path


def _with_mutant(tmp_path: Path) -> Path:
    """Copy the solved Huffman notebook with the padding-decoding mutant pasted into huffman_decode."""
    import inspect

    nb = nbformat.read(SOLUTIONS / "04_huffman.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("def huffman_decode"):
            cell.source = (inspect.getsource(_huffman_decode) + "\n\n" + inspect.getsource(decode_reads_padding)
                           ).replace("def decode_reads_padding", "def huffman_decode")
    student = tmp_path / "alice"
    student.mkdir()
    nbformat.write(nb, student / "04_huffman.ipynb")
    return student / "04_huffman.ipynb"


def solution_cells(exercise: str) -> str:
    """Return the solution notebook's cell that defines ``exercise`` (imports included)."""
    nb = nbformat.read(SOLUTIONS / f"{grading.notebook_of(exercise)}.ipynb", as_version=4)
    setup = next(c.source for c in nb.cells if c.cell_type == "code")
    body = next(c.source for c in nb.cells if c.cell_type == "code" and c.source.startswith(f"def {exercise}"))
    return setup + "\n\n" + body


@pytest.fixture(scope="module")
def graded_solutions():
    from dclab.grading.notebooks import grade_notebooks

    return grade_notebooks([SOLUTIONS], timeout=180)


@pytest.mark.slow
def test_grade_solutions_full_marks(graded_solutions):
    assert [r.path.stem for r in graded_solutions] == sorted(grading.EXERCISES)
    for result in graded_solutions:
        assert result.problem is None
        assert result.cell_errors == []
        assert [e.exercise for e in result.exercises] == list(grading.EXERCISES[result.path.stem])
        assert result.points == result.max_points
    assert sum(r.points for r in graded_solutions) == len(grading.exercise_names())


@pytest.mark.slow
def test_grade_mutant_partial_marks(tmp_path, capsys):
    import json

    from dclab import cli

    notebook = _with_mutant(tmp_path)
    assert cli.main(["grade", str(notebook), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    graded = report["notebooks"][0]
    assert graded["student"] == "alice"
    assert (graded["points"], graded["max_points"]) == (2, 3)
    by_name = {e["exercise"]: e for e in graded["exercises"]}
    assert by_name["huffman_decode"]["status"] == "failed"
    assert by_name["huffman_decode"]["detail"].startswith("AssertionError: huffman_decode failed")
    assert by_name["canonical_codes"]["points"] == 1
    assert report["students"] == {"alice": {"points": 2, "max_points": 3}}


@pytest.mark.slow
def test_grade_survives_crash_and_timeout(tmp_path):
    from dclab.grading.notebooks import NOT_RUN, PASSED, grade_notebooks

    check = "from dclab import grading\ngrading.check_huffman_decode(huffman_decode)"
    decode_source = solution_cells("huffman_decode")
    _write_notebook(tmp_path / "a_crash.ipynb", decode_source, "import os\nos._exit(1)", check)
    _write_notebook(tmp_path / "b_sleep.ipynb", decode_source, "import time\ntime.sleep(600)", check)
    _write_notebook(tmp_path / "c_good.ipynb", decode_source, check)

    crashed, slept, good = grade_notebooks([tmp_path], timeout=20)
    assert "kernel died in cell 1" in crashed.problem
    assert [(e.exercise, e.points, e.status) for e in crashed.exercises] == [("huffman_decode", 0, NOT_RUN)]
    assert "timed out after 20 s in cell 1" in slept.problem
    assert [(e.points, e.status) for e in slept.exercises] == [(0, NOT_RUN)]
    assert good.problem is None
    assert [(e.points, e.status) for e in good.exercises] == [(1, PASSED)]


@pytest.mark.slow
def test_grade_missing_check_cell(tmp_path):
    from dclab.grading.notebooks import MISSING, grade_notebook

    nb = nbformat.read(SOLUTIONS / "04_huffman.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if "check_canonical_codes" not in c.source]
    nbformat.write(nb, tmp_path / "04_huffman.ipynb")
    result = grade_notebook(tmp_path / "04_huffman.ipynb", timeout=120)
    assert (result.points, result.max_points) == (2, 3)
    assert [e.status for e in result.exercises if e.exercise == "canonical_codes"] == [MISSING]


def test_grade_printed_line_required():
    from dclab.grading.notebooks import FAILED, PASSED, _grade_cell, _Run

    run = _Run(executed={4, 5}, stdout={4: "huffman_decode: 7/7 checks passed\n", 5: "huffman_decode: 6/7\n"})
    assert _grade_cell("huffman_decode", 4, run).status == PASSED
    assert _grade_cell("huffman_decode", 5, run).status == FAILED


def test_grade_formats():
    from dclab.grading.notebooks import ExerciseResult, NotebookResult
    from dclab.grading_cli import format_csv, format_json, format_table

    results = [
        NotebookResult(Path("bob/04_huffman.ipynb"), "bob", [
            ExerciseResult("huffman_code_lengths", 1, "passed"),
            ExerciseResult("canonical_codes", 0, "failed", "AssertionError: canonical_codes failed 1 check(s)"),
        ]),
        NotebookResult(Path("bob/03_sparse_storage.ipynb"), "bob", [
            ExerciseResult("relative_index_encode", 0, "not run", "timed out after 5 s in cell 2"),
        ], problem="timed out after 5 s in cell 2"),
    ]
    table = format_table(results)
    assert "canonical_codes" in table
    assert table.endswith("bob: 1/3 points")
    rows = format_csv(results).splitlines()
    assert rows[0] == "student,notebook,exercise,points,max_points,status,detail"
    assert "bob,bob/04_huffman.ipynb,total,1,2,complete," in rows
    assert "bob,bob/03_sparse_storage.ipynb,total,0,1,incomplete,timed out after 5 s in cell 2" in rows
    report = __import__("json").loads(format_json(results))
    assert report["students"] == {"bob": {"points": 1, "max_points": 3}}
    assert report["notebooks"][1]["problem"] == "timed out after 5 s in cell 2"


def test_grade_missing_path(tmp_path, capsys):
    from dclab import cli

    assert cli.main(["grade", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err


if __name__ == "__main__":
    print(mutation_table())
