"""Tests for full-scale post-training compression (dclab.fullscale, dclab.fullscale_io, dclab.analytic).

The fast tests check each tensor-level step against the module-level
implementation it mirrors, on small layers. The ``fullscale`` tests build
AlexNet and VGG-16 with random weights, compress each once (module-scoped
fixtures) and check the preset's sparsity and bits, the exact round trip and
the P+Q rates against the paper and against the analytic rate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dclab import container, prune, quantize
from dclab.analytic import expected_entries, expected_fillers, expected_pq_size, fillers_per_kept_bernoulli
from dclab.cli import main
from dclab.container import CompressedFileError, decode_layers, encode_model, load_compressed
from dclab.fullscale import (
    STAGES,
    format_result,
    magnitude_threshold,
    prune_tensor,
    run_fullscale,
    share_weights,
    verify_file,
)
from dclab.fullscale_io import StreamingEncoder, iter_layer_entries, read_header
from dclab.models import build_model, compressible_layers
from dclab.presets import PAPER_RESULTS, get_preset
from dclab.sparse import count_fillers

# --- helpers ------------------------------------------------------------------


def _quantized_lenet5(seed: int = 0) -> nn.Module:
    """LeNet-5 with random weights, pruned and quantized to the "paper" preset by the module-level API."""
    torch.manual_seed(seed)
    model = build_model("lenet5", weights="random")
    prune.prune_to_preset(model, "paper")
    quantize.quantize_model(model, "paper")
    return model


def _layer_records(model: nn.Module, preset_name: str = "paper") -> list[container.LayerData]:
    """Build LayerData records from a quantized model's buffers, as compress_model does."""
    preset = get_preset("lenet5", preset_name)
    records = []
    for name, module in compressible_layers(model).items():
        weight = prune.effective_weight(module).reshape(-1).numpy()
        codes = module.weight_codes.reshape(-1).numpy()
        setting = preset.layer(name)
        records.append(container.LayerData(
            name, tuple(module.weight_orig.shape), weight, codes != 0, module.weight_codebook.numpy(), codes,
            module.bias.detach().numpy(), setting.weight_bits, setting.index_bits,
        ))
    return records


def _write_image_folder(root, classes: int = 2, per_class: int = 2) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"n{label:08d}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.JPEG")


# --- analytic filler count --------------------------------------------------------


def test_fillers_match_simulation():
    rng = np.random.default_rng(0)
    numel, kept, bits = 400, 50, 2
    counts = [count_fillers(np.sort(rng.choice(numel, kept, replace=False)), bits) for _ in range(4000)]
    standard_error = np.std(counts) / math.sqrt(len(counts))
    assert abs(np.mean(counts) - expected_fillers(numel, kept, bits)) < 4 * standard_error


def test_fillers_bernoulli_limit():
    numel, kept, bits = 50_000_000, 2_000_000, 5
    exact = expected_fillers(numel, kept, bits)
    limit = kept * fillers_per_kept_bernoulli(kept / numel, bits)
    assert exact == pytest.approx(limit, rel=1e-4)


def test_fillers_edge_cases():
    assert expected_fillers(100, 0, 4) == 0.0
    assert expected_fillers(100, 100, 4) == 0.0  # no zeros at all
    assert expected_fillers(10, 1, 4) == 0.0  # no gap can reach 16 zeros
    assert expected_entries(100, 100, 4) == 100.0


def test_fillers_one_kept_exact():
    # One kept weight at a uniform position p in 0..n-1 has gap p: E[floor(p / m)] computed directly.
    numel, bits = 100, 3
    direct = np.mean([p // 8 for p in range(numel)])
    assert expected_fillers(numel, 1, bits) == pytest.approx(direct, rel=1e-9)


def test_analytic_rejects_bad_counts():
    with pytest.raises(ValueError, match="kept=5"):
        expected_fillers(4, 5, 4)
    with pytest.raises(ValueError, match="index_bits"):
        expected_fillers(4, 1, 0)
    with pytest.raises(ValueError, match="keep"):
        fillers_per_kept_bernoulli(0.0, 4)


def test_pq_size_default_fixed_bytes():
    estimate = expected_pq_size(1000, 100, 4, 5, bias=10)
    assert estimate.fixed_bytes == 4 * 32 + 4 * 10
    assert estimate.index_bytes == math.ceil(estimate.entries * 4 / 8)
    assert estimate.dense_bytes == 4 * 1010


# --- tensor-level stages ---------------------------------------------------------


def test_threshold_matches_prune_module():
    torch.manual_seed(1)
    weight = torch.randn(64, 33)
    for keep in (0.0, 0.1, 0.37, 0.9):
        expected = prune.fraction_threshold(weight, torch.ones_like(weight), 1.0 - keep)
        assert magnitude_threshold(weight, keep) == expected


def test_threshold_keep_all():
    assert magnitude_threshold(torch.randn(5, 5), 1.0) == -math.inf


def test_threshold_rejects_bad_keep():
    with pytest.raises(ValueError, match="keep=1.5"):
        magnitude_threshold(torch.randn(3), 1.5)


def test_prune_tensor_matches_prune_layer():
    torch.manual_seed(2)
    layer = nn.Linear(40, 30)
    original = layer.weight.detach().clone()
    weight = original.clone()
    mask, threshold = prune_tensor(weight, 0.25)
    prune.prune_layer(layer, keep=0.25)
    assert torch.equal(mask, layer.weight_mask.bool())
    assert torch.equal(weight, prune.effective_weight(layer))
    assert int(mask.sum()) == 30 * 40 - round(0.75 * 30 * 40)
    assert (weight[~mask] == 0).all()
    assert (original.abs()[mask] > threshold).all()
    assert (original.abs()[~mask] <= threshold).all()


def test_prune_tensor_ties_pruned():
    weight = torch.tensor([0.5, -0.5, 0.5, 1.0, -2.0])
    mask, threshold = prune_tensor(weight, 0.6)  # prunes round(0.4 * 5) = 2; the tie at 0.5 prunes all three
    assert threshold == 0.5
    assert mask.tolist() == [False, False, False, True, True]


def test_share_weights_matches_quantize_layer():
    torch.manual_seed(3)
    layer = nn.Linear(50, 40)
    weight = layer.weight.detach().clone()
    mask, _ = prune_tensor(weight, 0.3)
    shared = share_weights(weight, mask, bits=4)
    prune.prune_layer(layer, keep=0.3)
    quantize.quantize_layer(layer, 4)
    assert torch.equal(shared.codebook, layer.weight_codebook)
    assert torch.equal(shared.codes, layer.weight_codes)
    assert torch.equal(weight, shared.codebook[shared.codes.long()])


def test_share_weights_code_dtypes():
    weight = torch.randn(20, 20)
    mask = torch.ones_like(weight, dtype=torch.bool)
    assert share_weights(weight.clone(), mask, 8).codes.dtype == torch.uint8
    assert share_weights(weight.clone(), mask, 9).codes.dtype == torch.int32


def test_share_weights_empty_mask():
    weight = torch.zeros(4, 4)
    shared = share_weights(weight, torch.zeros(4, 4, dtype=torch.bool), 5)
    assert shared.codebook.tolist() == [0.0]
    assert int(shared.codes.count_nonzero()) == 0


def test_share_weights_rejects_mask_shape():
    with pytest.raises(ValueError, match="mask shape"):
        share_weights(torch.randn(4, 4), torch.ones(16, dtype=torch.bool), 5)


# --- streaming file I/O ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pruned", "quantized", "huffman"])
def test_streaming_encoder_bytes_equal_container(mode):
    model = _quantized_lenet5()
    encoder = StreamingEncoder("lenet5", mode, layer_count=4)
    for record in _layer_records(model):
        encoder.add_layer(record)
    encoded = encoder.finish(model)
    assert encoded.data == encode_model(model, mode, preset="paper")
    assert sum(encoded.layout.values()) == len(encoded.data)


def test_streaming_encoder_rejects_unquantized_layer():
    model = _quantized_lenet5()
    record = _layer_records(model)[0]
    record.codebook = None
    encoder = StreamingEncoder("lenet5", "huffman", layer_count=4)
    with pytest.raises(ValueError, match="conv1"):
        encoder.add_layer(record)


def test_entries_decode_like_container():
    model = _quantized_lenet5()
    data = encode_model(model, "huffman", preset="paper")
    assert read_header(data) == ("lenet5", "huffman")
    _, _, layers, _ = decode_layers(data)
    entries = list(iter_layer_entries(data))
    assert [e.name for e in entries] == [layer.name for layer in layers]
    for stored, decoded in zip(entries, layers):
        assert np.array_equal(stored.dense_weight(), decoded.weight)
        assert np.array_equal(stored.dense_codes().reshape(stored.shape), decoded.codes)
        assert np.array_equal(stored.bias, decoded.bias)


def test_entries_reject_truncated_file():
    data = encode_model(_quantized_lenet5(), "huffman", preset="paper")
    with pytest.raises(CompressedFileError):
        list(iter_layer_entries(data[:-10]))


def test_verify_file_detects_changed_codebook():
    model = _quantized_lenet5()
    data = encode_model(model, "huffman", preset="paper")
    layers = compressible_layers(model)
    codes = {name: m.weight_codes for name, m in layers.items()}
    codebooks = {name: m.weight_codebook.clone() for name, m in layers.items()}
    quantize.dequantize(model)
    codebooks["ip1"][1] += 1e-3
    with pytest.raises(CompressedFileError, match="ip1: the codebook"):
        verify_file(data, model, codes, codebooks)


def test_verify_file_detects_changed_weight():
    model = _quantized_lenet5()
    data = encode_model(model, "huffman", preset="paper")
    layers = compressible_layers(model)
    codes = {name: m.weight_codes for name, m in layers.items()}
    codebooks = {name: m.weight_codebook for name, m in layers.items()}
    quantize.dequantize(model)
    with torch.no_grad():
        model.conv2.weight.view(-1)[0] = -model.conv2.weight.view(-1)[0] + 1.0
    with pytest.raises(CompressedFileError, match="conv2: the weights"):
        verify_file(data, model, codes, codebooks)


# --- command line ---------------------------------------------------------------------


def test_cli_vgg16_rejected_in_quick_mode(quick_on, capsys):
    assert main(["-q", "fullscale", "--model", "vgg16", "--weights", "random"]) == 1
    assert "quick mode" in capsys.readouterr().err


def test_cli_missing_pretrained_weights(quick_off, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert main(["-q", "fullscale", "--model", "alexnet", "--weights", "pretrained"]) == 1
    assert "not cached" in capsys.readouterr().err


def test_run_fullscale_rejects_lenet():
    with pytest.raises(ValueError, match="lenet5"):
        run_fullscale("lenet5")


# --- full-size networks ------------------------------------------------------------------


@pytest.fixture(scope="module")
def alexnet_run(tmp_path_factory):
    """AlexNet with random weights, compressed once, evaluated on a 4-image ImageFolder."""
    root = tmp_path_factory.mktemp("alexnet")
    _write_image_folder(root / "val")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DCLAB_QUICK", raising=False)
        return run_fullscale("alexnet", "random", out=root / "alexnet.dcz", imagenet=root / "val",
                             batch_size=4, progress=False)


@pytest.fixture(scope="module")
def vgg16_run(tmp_path_factory):
    """VGG-16 with random weights, compressed once."""
    root = tmp_path_factory.mktemp("vgg16")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DCLAB_QUICK", raising=False)
        return run_fullscale("vgg16", "random", out=root / "vgg16.dcz", progress=False)


NETWORK_RUNS = ["alexnet_run", "vgg16_run"]


@pytest.mark.slow
@pytest.mark.fullscale
@pytest.mark.parametrize("run", NETWORK_RUNS)
def test_fullscale_preset_sparsity_and_bits(run, request):
    result = request.getfixturevalue(run)
    preset = get_preset(result.network, "paper")
    assert list(result.layers) == list(preset.layers)
    stats = {layer.name: layer for layer in result.report.layers}
    for name, layer in result.layers.items():
        setting = preset.layer(name)
        target = layer.numel - round((1.0 - setting.keep) * layer.numel)
        # float32 weights tie at the threshold now and then; ties are pruned, so a few fewer are kept.
        assert 0 <= target - layer.kept <= 1e-5 * layer.numel, name
        assert stats[name].kept == layer.kept, name
        assert stats[name].weight_bits == setting.weight_bits, name
        assert stats[name].index_bits == setting.index_bits, name
        assert 2 <= layer.codebook_size <= 2**setting.weight_bits, name


@pytest.mark.slow
@pytest.mark.fullscale
@pytest.mark.parametrize("run", NETWORK_RUNS)
def test_fullscale_file_round_trip(run, request):
    result = request.getfixturevalue(run)
    assert result.verified
    data = result.path.read_bytes()
    assert len(data) == result.file_bytes
    modules = compressible_layers(result.model)
    for entries in iter_layer_entries(data):
        codes = entries.dense_codes()
        weight = entries.codebook[codes].reshape(entries.shape)
        model_weight = modules[entries.name].weight.detach().numpy()
        assert np.array_equal(weight.view(np.uint32), model_weight.view(np.uint32)), entries.name


@pytest.mark.slow
@pytest.mark.fullscale
def test_fullscale_alexnet_container_reads_file(alexnet_run):
    loaded = load_compressed(alexnet_run.path)
    for name, module in compressible_layers(loaded).items():
        original = compressible_layers(alexnet_run.model)[name]
        weight = module.weight.detach()
        assert torch.equal(weight, original.weight.detach()), name
        assert torch.equal(weight, module.weight_codebook[module.weight_codes.long()]), name
        assert torch.equal(module.bias, original.bias), name


@pytest.mark.slow
@pytest.mark.fullscale
@pytest.mark.parametrize("run", NETWORK_RUNS)
def test_fullscale_pq_rates_near_paper(run, request):
    result = request.getfixturevalue(run)
    published = PAPER_RESULTS[result.network]
    for layer in result.report.layers:
        rate = layer.rate("quantized")
        assert rate == pytest.approx(published[layer.name].rate_pq, rel=0.20), layer.name


@pytest.mark.slow
@pytest.mark.fullscale
@pytest.mark.parametrize("run", NETWORK_RUNS)
def test_fullscale_pq_rates_near_analytic(run, request):
    result = request.getfixturevalue(run)
    for layer in result.report.layers:
        estimate = result.analytic(layer.name)
        assert layer.rate("quantized") == pytest.approx(estimate.rate, rel=0.02), layer.name
        # Fillers: within 6 standard deviations of a Poisson count, plus 2.
        assert abs(layer.fillers - estimate.fillers) <= 6 * math.sqrt(estimate.fillers) + 2, layer.name


@pytest.mark.slow
@pytest.mark.fullscale
@pytest.mark.parametrize("run", NETWORK_RUNS)
def test_fullscale_report_names_weights(run, request):
    result = request.getfixturevalue(run)
    text = format_result(result)
    assert "random (torchvision's initialization" in text
    assert "accuracy is meaningless" in text
    assert "| fc6 |" in text


@pytest.mark.slow
@pytest.mark.fullscale
def test_fullscale_alexnet_evaluates_every_stage(alexnet_run):
    assert list(alexnet_run.accuracy) == list(STAGES)
    for stage, row in alexnet_run.accuracy.items():
        assert row["count"] == 4, stage
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0, stage
    # The file contains exactly the quantized weights, so the model read back scores the same.
    assert alexnet_run.accuracy["file"] == alexnet_run.accuracy["quantized"]


@pytest.mark.slow
@pytest.mark.fullscale
def test_fullscale_alexnet_sparse_inference(alexnet_run):
    from dclab.sparse_inference import SparseLinear, load_sparse_model

    sparse = load_sparse_model(alexnet_run.path)
    assert sum(isinstance(m, SparseLinear) for m in sparse.modules()) == 3
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = alexnet_run.model.eval()(images)
        actual = sparse(images)
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-6)
