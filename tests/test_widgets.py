"""Tests for dclab.widgets: every slider's displayed accuracy and size equal the library's for that setting."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from dclab import container, data, models, prune, quantize, report, sparse, train, widgets


@pytest.fixture(scope="module")
def lenet300() -> torch.nn.Module:
    return models.build_model("lenet300", weights="trained")


@pytest.fixture(scope="module")
def pruned300(lenet300) -> torch.nn.Module:
    model = copy.deepcopy(lenet300)
    prune.prune_to_preset(model, "paper")
    return model


@pytest.fixture(scope="module")
def quantized300(pruned300) -> torch.nn.Module:
    model = prune.deepcopy_pruned(pruned300)
    quantize.quantize_model(model, "paper")
    return model


def _library_accuracy(model: torch.nn.Module, splits: data.Splits) -> float:
    """Accuracy on the explorers' subset, built independently of dclab.widgets."""
    subset = data.fixed_subset(splits.test, widgets.DEFAULT_EVAL_SIZE)
    return train.evaluate(model, data.make_loader(subset, 250))["top1"]


def _kilobytes(size: int) -> str:
    return f"{size / 1000:,.1f} KB"


# ---------------------------------------------------------------- PruningExplorer


def test_pruning_s_slider_matches_library(lenet300, bundled_mnist):
    explorer = widgets.PruningExplorer(lenet300, bundled_mnist, kind="s")
    explorer.sliders["s"].value = 1.3

    expected = copy.deepcopy(lenet300)
    prune.prune_model(expected, {name: {"s": 1.3} for name in models.compressible_layers(expected)})
    expected_bytes = len(container.encode_model(expected, "pruned"))
    expected_accuracy = _library_accuracy(expected, bundled_mnist)

    assert explorer.result.setting == {"s": 1.3}
    assert explorer.accuracy == expected_accuracy
    assert explorer.size_bytes == {"pruned": expected_bytes}
    assert f"{100 * expected_accuracy:.2f}%" in explorer.readout.value
    assert _kilobytes(expected_bytes) in explorer.readout.value


def test_pruning_global_sparsity_matches_library(lenet300, bundled_mnist):
    explorer = widgets.PruningExplorer(lenet300, bundled_mnist, kind="sparsity", plot=False)
    explorer.sliders["sparsity"].value = 0.93

    expected = copy.deepcopy(lenet300)
    prune.prune_global(expected, 0.93)
    sizes = report.size_report(expected, modes=("pruned",))

    assert explorer.accuracy == _library_accuracy(expected, bundled_mnist)
    assert explorer.size_bytes["pruned"] == sizes.total_bytes("pruned")
    assert explorer.result.dense_bytes == sizes.dense_bytes
    kept = {layer.layer: layer.keep for layer in prune.sparsity_report(expected).layers}
    assert explorer.result.kept == kept


def test_pruning_per_layer_slider_matches_library(lenet300, bundled_mnist):
    explorer = widgets.PruningExplorer(lenet300, bundled_mnist, kind="sparsity", per_layer=True, plot=False)
    assert set(explorer.sliders) == {"ip1", "ip2", "ip3"}
    explorer.sliders["ip1"].value = 0.97

    expected = copy.deepcopy(lenet300)
    prune.prune_model(expected, {"ip1": {"amount": 0.97}, "ip2": {"amount": 0.8}, "ip3": {"amount": 0.8}})

    assert explorer.accuracy == _library_accuracy(expected, bundled_mnist)
    assert explorer.size_bytes["pruned"] == len(container.encode_model(expected, "pruned"))
    assert explorer.result.kept["ip1"] == pytest.approx(0.03, abs=1e-4)


def test_pruning_index_bits_change_size(lenet300, bundled_mnist):
    four = widgets.PruningExplorer(lenet300, bundled_mnist, plot=False, index_bits=4)
    expected = copy.deepcopy(lenet300)
    prune.prune_model(expected, {name: {"s": 1.0} for name in models.compressible_layers(expected)})
    assert four.size_bytes["pruned"] == len(container.encode_model(expected, "pruned", index_bits=4))


def test_pruning_base_model_unchanged(lenet300, bundled_mnist):
    before = {key: value.clone() for key, value in lenet300.state_dict().items()}
    explorer = widgets.PruningExplorer(lenet300, bundled_mnist, plot=False)
    explorer.sliders["s"].value = 2.0
    after = lenet300.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_pruning_sweep_leaves_sliders(lenet300, bundled_mnist):
    explorer = widgets.PruningExplorer(lenet300, bundled_mnist, plot=False)
    results = explorer.sweep([{"s": 0.5}, {"s": 1.5}])
    assert [r.setting for r in results] == [{"s": 0.5}, {"s": 1.5}]
    assert results[0].size_bytes["pruned"] > results[1].size_bytes["pruned"]
    assert explorer.sliders["s"].value == 1.0
    assert explorer.result.setting == {"s": 1.0}


def test_pruning_kind_invalid(lenet300, bundled_mnist):
    with pytest.raises(ValueError, match="kind"):
        widgets.PruningExplorer(lenet300, bundled_mnist, kind="threshold")


def test_pruning_reference_drawn(lenet300, bundled_mnist):
    explorer = widgets.PruningExplorer(lenet300, bundled_mnist)
    explorer.add_reference("retrained", [50_000, 100_000], [0.93, 0.94])
    labels = [line.get_label() for line in explorer.figure().axes[0].get_lines()]
    assert "retrained" in labels
    assert "current (no retraining)" in labels
    assert bytes(explorer.image.value).startswith(b"\x89PNG")


def test_pruning_latency_recorded(lenet300, bundled_mnist):
    explorer = widgets.PruningExplorer(lenet300, bundled_mnist, plot=False)
    explorer.sliders["s"].value = 0.8
    assert math.isfinite(explorer.latency_s)
    assert explorer.latency_s > 0
    assert math.isfinite(explorer.latency_cpu_s)
    assert explorer.latency_cpu_s >= 0
    assert "update" in explorer.describe()


# ---------------------------------------------------------------- BitWidthExplorer


def test_bitwidth_slider_matches_library(pruned300, bundled_mnist):
    explorer = widgets.BitWidthExplorer(pruned300, bundled_mnist, bits=(2, 6), precompute=False)
    assert set(explorer.sliders) == {"fc"}
    explorer.sliders["fc"].value = 3

    expected = prune.deepcopy_pruned(pruned300)
    quantize.quantize_model(expected, 3)
    sizes = report.size_report(expected, modes=("quantized", "huffman"))

    assert explorer.layer_bits(explorer.setting()) == {"ip1": 3, "ip2": 3, "ip3": 3}
    assert explorer.accuracy == _library_accuracy(expected, bundled_mnist)
    assert explorer.size_bytes == {"quantized": sizes.total_bytes("quantized"), "huffman": sizes.total_bytes("huffman")}
    assert _kilobytes(sizes.total_bytes("huffman")) in explorer.readout.value


def test_bitwidth_cache_reused(pruned300, bundled_mnist):
    explorer = widgets.BitWidthExplorer(pruned300, bundled_mnist, bits=(2, 4), precompute=True, plot=False)
    assert set(explorer._cache) == {(name, bits) for name in ("ip1", "ip2", "ip3") for bits in (2, 3, 4)}
    explorer.sliders["fc"].value = 2
    first = explorer.result
    explorer.sliders["fc"].value = 4
    explorer.sliders["fc"].value = 2
    assert explorer.result.accuracy == first.accuracy
    assert explorer.result.size_bytes == first.size_bytes


def test_bitwidth_conv_and_fc_sliders(bundled_mnist):
    lenet5 = models.build_model("lenet5", weights="trained")
    explorer = widgets.BitWidthExplorer(lenet5, bundled_mnist, bits=(2, 5), precompute=False, plot=False)
    assert set(explorer.sliders) == {"conv", "fc"}
    assert explorer.layer_bits(explorer.setting()) == {"conv1": 5, "conv2": 5, "ip1": 5, "ip2": 5}
    explorer.sliders["conv"].value = 2

    expected = copy.deepcopy(lenet5)
    quantize.quantize_model(expected, {"conv1": 2, "conv2": 2, "ip1": 5, "ip2": 5})
    assert explorer.accuracy == _library_accuracy(expected, bundled_mnist)
    assert explorer.size_bytes["huffman"] == len(container.encode_model(expected, "huffman"))


def test_bitwidth_per_layer_sliders(pruned300, bundled_mnist):
    explorer = widgets.BitWidthExplorer(pruned300, bundled_mnist, per_layer=True, bits=(2, 6), precompute=False,
                                        plot=False)
    assert set(explorer.sliders) == {"ip1", "ip2", "ip3"}
    explorer.sliders["ip3"].value = 2
    expected = prune.deepcopy_pruned(pruned300)
    quantize.quantize_model(expected, {"ip1": 6, "ip2": 6, "ip3": 2})
    assert explorer.size_bytes["quantized"] == len(container.encode_model(expected, "quantized"))


def test_bitwidth_range_invalid(pruned300, bundled_mnist):
    with pytest.raises(ValueError, match="bits"):
        widgets.BitWidthExplorer(pruned300, bundled_mnist, bits=(6, 2))


# ---------------------------------------------------------------- IndexBitsExplorer


def test_index_bits_slider_matches_container(quantized300):
    explorer = widgets.IndexBitsExplorer(quantized300, "ip1")
    explorer.sliders["index_bits"].value = 3

    encoded = container.encode_model_with_layout(quantized300, "quantized", index_bits={"ip1": 3})
    codes = models.compressible_layers(quantized300)["ip1"].weight_codes.numpy()
    positions = np.flatnonzero(codes.reshape(-1))

    assert explorer.fillers == sparse.count_fillers(positions, 3)
    assert explorer.result.entries == positions.size + explorer.fillers
    assert explorer.result.index_bytes == encoded.layout[("ip1", "index")]
    assert explorer.layer_bytes == sum(size for (owner, _), size in encoded.layout.items() if owner == "ip1")
    assert explorer.result.file_bytes == len(encoded.data)
    assert f"{explorer.fillers:,}" in explorer.readout.value


def test_index_bits_curve_covers_slider(quantized300):
    explorer = widgets.IndexBitsExplorer(quantized300, "ip2", bits=(2, 6), plot=False)
    assert [r.index_bits for r in explorer.curve] == [2, 3, 4, 5, 6]
    fillers = [r.fillers for r in explorer.curve]
    assert fillers == sorted(fillers, reverse=True)


def test_index_bits_pruned_mode(pruned300):
    explorer = widgets.IndexBitsExplorer(pruned300, "ip1", plot=False)
    assert explorer.mode == "pruned"
    encoded = container.encode_model_with_layout(pruned300, "pruned", index_bits={"ip1": 5})
    assert explorer.result.value_bytes == encoded.layout[("ip1", "weights")]


def test_index_bits_unknown_layer(quantized300):
    with pytest.raises(KeyError, match="fc6"):
        widgets.IndexBitsExplorer(quantized300, "fc6")


# ---------------------------------------------------------------- shared behaviour


def test_sliders_continuous_update_off(lenet300, pruned300, quantized300, bundled_mnist):
    explorers = [
        widgets.PruningExplorer(lenet300, bundled_mnist, plot=False),
        widgets.PruningExplorer(lenet300, bundled_mnist, kind="sparsity", per_layer=True, plot=False),
        widgets.BitWidthExplorer(pruned300, bundled_mnist, bits=(2, 3), precompute=False, plot=False),
        widgets.IndexBitsExplorer(quantized300, "ip3", plot=False),
    ]
    for explorer in explorers:
        for name, slider in explorer.sliders.items():
            assert slider.continuous_update is False, name


def test_explorer_widget_contains_sliders(lenet300, bundled_mnist):
    explorer = widgets.PruningExplorer(lenet300, bundled_mnist)
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    children = explorer.widget.children
    assert explorer.sliders["s"] in children[1].children
    assert explorer.readout in children[2].children
    assert explorer.image in children[2].children


# ---------------------------------------------------------------- data and baseline


def test_evaluation_batches_fixed_subset(bundled_mnist):
    batches = widgets.evaluation_batches(bundled_mnist.test, size=100, seed=3)
    images, labels = batches[0]
    expected = data.fixed_subset(bundled_mnist.test, 100, seed=3)
    expected_images, expected_labels = next(iter(data.make_loader(expected, 100)))
    assert torch.equal(images, expected_images)
    assert torch.equal(labels, expected_labels)
    # The bundled splits are sorted by class; a fixed random subset still contains every class.
    assert set(labels.tolist()) == set(range(10))


def test_lecture_setup_quick_shipped():
    setup = widgets.lecture_setup("lenet300", quick=True)
    shipped = models.build_model("lenet300", weights="trained")
    assert setup.quick
    assert setup.splits.source.startswith("bundled")
    assert setup.pipeline_baseline == "trained"
    for key, value in shipped.state_dict().items():
        assert torch.equal(setup.model.state_dict()[key], value), key


def test_lecture_setup_unknown_network():
    with pytest.raises(ValueError, match="alexnet"):
        widgets.lecture_setup("alexnet", quick=True)


@pytest.mark.slow
def test_lecture_setup_full_reads_cache(tmp_path, monkeypatch, quick_off):
    monkeypatch.setenv("DCLAB_DATA", str(tmp_path))
    try:
        splits = data.load_fashion_mnist(source="debian")
    except data.DatasetError as error:
        pytest.skip(f"Fashion-MNIST is not installed: {error}")
    cached = models.build_model("lenet300")
    path = widgets.baseline_path("lenet300", splits.name, 8)
    train.save_checkpoint(cached, path)

    setup = widgets.lecture_setup("lenet300")
    assert not setup.quick
    assert setup.checkpoint == path
    assert setup.pipeline_baseline == str(path)
    assert setup.splits.name == "Fashion-MNIST"
    for key, value in cached.state_dict().items():
        assert torch.equal(setup.model.state_dict()[key], value), key
