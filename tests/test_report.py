"""Tests for dclab.report: per-layer size tables from real encoded bytes."""

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from dclab.container import MODES, save_compressed
from dclab.models import build_model, compressible_layers
from dclab.report import PARTS, format_report, size_report

KEEP = {"ip1": 0.08, "ip2": 0.09, "ip3": 0.26}


def pruned_lenet300(seed=0):
    torch.manual_seed(seed)
    model = build_model("lenet300", weights="random")
    for name, module in compressible_layers(model).items():
        prune.l1_unstructured(module, "weight", amount=1.0 - KEEP[name])
    return model


def quantize_laplace_codes(model, bits, seed=0):
    """Give every kept weight a code drawn from a peaked distribution, like trained codebooks."""
    rng = np.random.default_rng(seed)
    for module in compressible_layers(model).values():
        kept = module.weight_mask.bool()
        clusters = (1 << bits) - 1
        draws = np.clip(np.round(rng.laplace(clusters / 2, clusters / 8, int(kept.sum()))), 0, clusters - 1)
        codes = torch.zeros(module.weight.shape, dtype=torch.uint8)
        codes[kept] = torch.from_numpy(draws.astype(np.uint8) + 1)
        codebook = torch.cat([torch.zeros(1), torch.linspace(-0.2, 0.2, clusters)])
        module.register_buffer("weight_codebook", codebook)
        module.register_buffer("weight_codes", codes)
        with torch.no_grad():
            module.weight_orig.copy_(codebook[codes.long()])
    return model


@pytest.fixture(scope="module")
def quantized():
    return quantize_laplace_codes(pruned_lenet300(), bits=6)


@pytest.fixture(scope="module")
def report(quantized):
    return size_report(quantized)


def test_modes_for_quantized(report):
    assert report.modes == MODES


def test_modes_for_pruned_only():
    assert size_report(pruned_lenet300()).modes == ("pruned",)


@pytest.mark.parametrize("mode", MODES)
def test_total_equals_file_size(quantized, report, mode, tmp_path):
    path = tmp_path / f"{mode}.dcz"
    save_compressed(quantized, path, mode=mode)
    assert report.total_bytes(mode) == path.stat().st_size


def test_layer_counts(report):
    ip1 = report.layers[0]
    assert ip1.name == "ip1"
    assert ip1.weights == 235_200
    assert ip1.kept == round(0.08 * 235_200)
    assert ip1.entries == ip1.kept + ip1.fillers
    assert ip1.bias == 300
    assert ip1.weight_bits == 6
    assert ip1.index_bits == 5


def test_fixed_bits_per_entry(report):
    for layer in report.layers:
        # Fixed-width streams round up to a whole byte, nothing more.
        assert 6 <= layer.bits_per_entry("quantized", "weights") < 6 + 8 / layer.entries
        assert 5 <= layer.bits_per_entry("quantized", "index") < 5 + 8 / layer.entries
        assert layer.bits_per_entry("pruned", "weights") == 32


def test_huffman_beats_fixed_on_peaked_codes(report):
    for layer in report.layers:
        assert layer.bits_per_entry("huffman", "weights") < 6


def test_separate_parts(report):
    ip1 = report.layers[0]
    assert ip1.bytes["quantized"]["codebook"] == 64 * 4
    assert ip1.bytes["pruned"]["codebook"] == 0
    assert ip1.bytes["huffman"]["bias"] == 300 * 4
    assert ip1.bytes["huffman"]["tables"] > 0
    assert ip1.bytes["quantized"]["tables"] == 0
    assert set(ip1.bytes["huffman"]) == set(PARTS)


def test_rate_and_ratio(report):
    ip3 = report.layers[2]
    assert ip3.rate("huffman") == ip3.total_bytes("huffman") / (4 * (1000 + 10))
    assert report.dense_bytes == 4 * 266_610
    assert report.ratio("huffman") == report.dense_bytes / report.total_bytes("huffman")
    assert report.ratio("huffman") > report.ratio("quantized") > report.ratio("pruned")


def test_index_bits_passed_through(quantized):
    report = size_report(quantized, index_bits=8, modes=("quantized",))
    assert report.modes == ("quantized",)
    assert all(layer.index_bits == 8 for layer in report.layers)


def test_format_markdown_with_paper(report):
    text = format_report(report)
    assert "| ip1 | 235,200 (235K) | 8.0% (8%) |" in text
    assert "(4.4)" in text  # Deep Compression's Huffman weight bits for ip1 (Table 2)
    assert "(2.49%)" in text  # Deep Compression's total rate after Huffman (Table 2)
    assert f"| total | {report.part_total('huffman', 'index'):,} |" in text
    assert f"{report.total_bytes('huffman'):,} bytes" in text


def test_format_text_without_paper(report):
    text = format_report(report, paper=False, style="text")
    assert "(235K)" not in text
    assert "|" not in text
    assert text.splitlines()[0].split()[:3] == ["Layer", "Weights", "Kept"]


def test_format_pruned_only():
    text = format_report(size_report(pruned_lenet300()))
    assert "Bytes (pruned)" in text
    assert "pruned (P)" in text


def test_format_unknown_style(report):
    with pytest.raises(ValueError, match="style"):
        format_report(report, style="html")


def test_bytes_table_total_row_adds_up(report):
    text = format_report(report, paper=False)
    total_row = next(line for line in text.splitlines() if line.startswith("| total |") and "%" not in line)
    cells = [int(cell.replace(",", "")) for cell in total_row.strip("| ").split(" | ")[1:]]
    assert sum(cells[:-1]) == cells[-1] == report.total_bytes("huffman")
