"""Tests for the lecture figures in dclab.plots (course, sharing, storage, huffman), drawn from real data."""

from __future__ import annotations

import copy

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.container import BarContainer

from dclab import data, huffman, kmeans, models, plots, presets, prune, quantize, report, sensitivity, sparse, train
from dclab.plots.huffman import code_tree
from dclab.widgets import IndexBitsExplorer


@pytest.fixture(scope="module")
def dense() -> torch.nn.Module:
    return models.build_model("lenet300", weights="trained")


@pytest.fixture(scope="module")
def pruned(dense) -> torch.nn.Module:
    model = copy.deepcopy(dense)
    prune.prune_to_preset(model, "paper")
    return model


@pytest.fixture(scope="module")
def quantized(pruned) -> torch.nn.Module:
    model = prune.deepcopy_pruned(pruned)
    quantize.quantize_model(model, "paper")
    return model


@pytest.fixture(scope="module")
def ip1_entries(quantized) -> sparse.RelativeIndex:
    return sparse.encode_relative(models.compressible_layers(quantized)["ip1"].weight_codes.numpy(), 5)


def _bars(ax) -> list:
    return [patch for container in ax.containers if isinstance(container, BarContainer) for patch in container]


def _texts(figure) -> str:
    return "\n".join(text.get_text() for ax in figure.axes for text in ax.texts)


# ---------------------------------------------------------------- course


def test_layer_sizes_bars_per_layer():
    figure = plots.plot_layer_sizes({"LeNet-300-100": models.build_model("lenet300"),
                                     "LeNet-5": models.build_model("lenet5")})
    left, right = figure.axes
    assert len(_bars(left)) == 2 * 3  # weights and biases per layer
    assert len(_bars(right)) == 2 * 4
    assert "266,610 parameters" in left.get_title()
    assert "431,080 parameters" in right.get_title()
    assert [label.get_text() for label in left.get_yticklabels()] == ["ip3", "ip2", "ip1"]


def test_layer_sizes_empty():
    with pytest.raises(ValueError):
        plots.plot_layer_sizes({})


def test_stage_sizes_real_report(quantized):
    sizes = report.size_report(quantized)
    stages = [{"stage": "dense", "size_bytes": sizes.dense_bytes}] + [
        {"stage": mode, "size_bytes": sizes.total_bytes(mode), "top1": 0.9} for mode in ("pruned", "quantized", "huffman")]
    figure = plots.plot_stage_sizes(stages, paper_ratios={"pruned": 12, "quantized": 32, "huffman": 40})
    ax = figure.axes[0]
    heights = [bar.get_height() for bar in _bars(ax)]
    assert heights == pytest.approx([row["size_bytes"] / 1000 for row in stages])
    ratio = sizes.dense_bytes / sizes.total_bytes("huffman")
    assert f"{ratio:.1f}x" in _texts(figure)
    assert [line.get_label() for line in ax.get_lines()] == ["paper's ratio"]


def test_stage_sizes_pipeline_rows():
    rows = [_Row("dense", 1000, 0.95), _Row("pruned", 200, 0.94)]
    figure = plots.plot_stage_sizes(rows)
    assert "5.0x" in _texts(figure)
    assert "94.00%" in _texts(figure)


class _Row:
    """Stands in for dclab.pipeline.StageResult, which the figure reads by attribute."""

    def __init__(self, stage, size_bytes, top1):
        self.stage, self.size_bytes, self.top1 = stage, size_bytes, top1


def test_stage_sizes_empty():
    with pytest.raises(ValueError):
        plots.plot_stage_sizes([])


def test_tradeoff_curves_and_floor(dense, bundled_mnist):
    loader = data.make_loader(bundled_mnist.test, 1000)
    baseline = train.evaluate(dense, loader)["top1"]
    dense_bytes = report.size_report(dense, modes=("pruned",)).dense_bytes
    pruning = []
    for amount in (0.5, 0.9, 0.99):
        model = copy.deepcopy(dense)
        prune.prune_global(model, amount)
        size = report.size_report(model, modes=("pruned",)).total_bytes("pruned")
        pruning.append((size / dense_bytes, train.evaluate(model, loader)["top1"]))
    figure = plots.plot_tradeoff({"pruning": pruning}, baseline, {"pipeline": (0.03, baseline)}, floor=-20.0)
    ax = figure.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "pruning"
    assert "pipeline" in labels
    assert ax.get_ylim()[0] >= -21.0 - 1e-9
    plotted = ax.get_lines()[0].get_ydata()
    assert min(plotted) >= -20.0
    # A point below the floor is drawn at the floor and marked with a downward triangle.
    below_floor = any(100 * (accuracy - baseline) < -20.0 for _, accuracy in pruning)
    has_triangle = any(line.get_marker() == "v" for line in ax.get_lines())
    assert has_triangle == below_floor


def test_accuracy_vs_bits_series(pruned, bundled_mnist):
    loader = data.make_loader(bundled_mnist.test, 1000)
    series = {}
    for init in ("linear", "density"):
        points = []
        for bits in (2, 4):
            model = prune.deepcopy_pruned(pruned)
            quantize.quantize_model(model, bits, init=init)
            points.append((bits, train.evaluate(model, loader)["top1"]))
        series[init] = points
    figure = plots.plot_accuracy_vs_bits(series, baseline_accuracy=0.95)
    ax = figure.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["linear", "density", "float32"]
    assert list(ax.get_lines()[0].get_xdata()) == [2, 4]
    assert ax.get_xlabel() == "bits per weight"


def test_bits_panels_shared_axis():
    panels = {"conv": {"pruned": [(2, 0.9), (8, 0.97)]}, "fc": {"pruned": [(2, 0.95), (8, 0.97)]}}
    figure = plots.plot_bits_panels(panels, baseline_accuracy=0.97)
    assert [ax.get_title() for ax in figure.axes] == ["conv", "fc"]
    assert figure.axes[0].get_shared_y_axes().joined(figure.axes[0], figure.axes[1])


def test_layer_rates_ours_and_paper(quantized):
    sizes = report.size_report(quantized)
    figure = plots.plot_layer_rates(sizes)
    ax = figure.axes[0]
    heights = [bar.get_height() for bar in _bars(ax)]
    assert len(heights) == 2 * 2 * 3  # two modes, ours and the paper's, three layers
    paper_pq = [100 * presets.PAPER_RESULTS["lenet300"][name].rate_pq for name in ("ip1", "ip2", "ip3")]
    assert heights[3:6] == pytest.approx(paper_pq)
    assert heights[0:3] == pytest.approx([100 * layer.rate("quantized") for layer in sizes.layers])


def test_layer_rates_missing_mode(pruned):
    with pytest.raises(ValueError, match="huffman"):
        plots.plot_layer_rates(report.size_report(pruned, modes=("pruned",)))


def test_weight_stages_counts(dense, pruned):
    figure = plots.plot_weight_stages({"dense": dense, "pruned": pruned}, "ip2", bins=50)
    top, bottom = figure.axes
    assert len(top.patches) == 50
    assert len(bottom.patches) == 50
    assert sum(p.get_height() for p in top.patches) == 30_000
    assert sum(p.get_height() for p in bottom.patches) == 2_700
    assert "2,700 weights" in bottom.get_title()


def test_prune_history_rounds(dense, bundled_mnist):
    model = copy.deepcopy(dense)
    train.set_seed(0)
    history = sensitivity.iterative_prune(model, data.make_loader(bundled_mnist.train, 128, shuffle=True),
                                          data.make_loader(bundled_mnist.val, 500), "paper", rounds=2,
                                          epochs_per_round=1, progress=False)
    figure = plots.plot_prune_history(history)
    bars_ax = figure.axes[0]
    assert [round(bar.get_height(), 6) for bar in _bars(bars_ax)] == [round(100 * (1 - r["sparsity"]), 6) for r in history]
    accuracy_line = figure.axes[1].get_lines()[0]
    assert list(accuracy_line.get_ydata()) == pytest.approx([100 * r["val_top1"] for r in history])


def test_fine_tune_curves_two_panels(pruned, bundled_mnist):
    model = prune.deepcopy_pruned(pruned)
    quantize.quantize_model(model, 2)
    history = quantize.fine_tune(model, data.make_loader(bundled_mnist.train, 256, shuffle=True), epochs=1,
                                 val_loader=data.make_loader(bundled_mnist.val, 500), progress=False)
    figure = plots.plot_fine_tune_curves({"sum": history}, start={"loss": 1.0, "val_top1": 0.5})
    loss_ax, accuracy_ax = figure.axes
    assert list(loss_ax.get_lines()[0].get_xdata()) == [0, 1]
    assert loss_ax.get_lines()[0].get_ydata()[1] == pytest.approx(history[0]["loss"])
    assert accuracy_ax.get_lines()[0].get_ydata()[1] == pytest.approx(100 * history[0]["val_top1"])
    assert accuracy_ax.get_ylabel() == "validation accuracy (%)"


def test_history_plots_empty():
    with pytest.raises(ValueError):
        plots.plot_prune_history([])
    with pytest.raises(ValueError):
        plots.plot_fine_tune_curves({})


# ---------------------------------------------------------------- sharing


def test_weight_sharing_example_paper_matrix():
    weights = np.array([[2.09, -0.98, 1.48, 0.09], [0.05, -0.14, -1.08, 2.12],
                        [-0.91, 1.92, 0.0, -1.03], [1.87, 0.0, 1.53, 1.49]])
    gradient = np.full((4, 4), 0.01)
    clusters = kmeans.cluster_1d(weights, 4, "linear")
    codes = clusters.labels.reshape(4, 4)
    centroids = torch.tensor(clusters.centroids, requires_grad=True)
    quantize.shared_weights(centroids, torch.as_tensor(codes) + 1).backward(torch.as_tensor(gradient))
    figure = plots.plot_weight_sharing_example(weights, codes, clusters.centroids, gradient, centroids.grad, lr=1.0)
    titles = [ax.get_title() for ax in figure.axes]
    assert "cluster index (2-bit)" in titles
    assert "sum per cluster" in titles
    text = _texts(figure)
    assert "3: 2.00" in text
    assert "0: -1.00" in text
    # Each cluster's summed gradient is 0.01 times its size: 4, 5, 3 and 4 weights.
    assert "0.05" in text
    assert "0.03" in text


def test_weight_sharing_example_bad_codes():
    with pytest.raises(ValueError, match="codes"):
        plots.plot_weight_sharing_example(np.zeros((2, 2)), np.full((2, 2), 3), np.zeros(2), np.zeros((2, 2)),
                                          np.zeros(2), lr=1.0)


# ---------------------------------------------------------------- storage


def test_relative_index_example_fillers():
    row = np.zeros(24)
    row[[2, 20]] = [3.0, 5.0]
    figure = plots.plot_relative_index_example(row, index_bits=3)
    relative = sparse.encode_relative(row, 3)
    ax = figure.axes[0]
    assert relative.fillers == 2
    assert f"{relative.entries} entries, {relative.fillers} fillers" in ax.get_title()
    filler_cells = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb("#fdd0a2"))]
    assert len(filler_cells) == 2 * relative.fillers  # index and value cell per filler


def test_relative_index_example_2d():
    with pytest.raises(ValueError, match="row"):
        plots.plot_relative_index_example(np.zeros((2, 2)), 3)


def test_index_histogram_real_layer(ip1_entries):
    figure = plots.plot_index_histogram(ip1_entries.index, 5, ip1_entries.fillers)
    ax = figure.axes[0]
    heights = [bar.get_height() for bar in _bars(ax)]
    assert len(heights) == 32
    assert heights == list(np.bincount(ip1_entries.index.astype(np.int64), minlength=32))
    assert f"{ip1_entries.fillers:,} of these are fillers" in ax.get_legend().get_texts()[0].get_text()


def test_index_histogram_out_of_range():
    with pytest.raises(ValueError, match="3 bits"):
        plots.plot_index_histogram(np.array([0, 9]), 3)


def test_index_bits_sweep_marks_smallest(quantized):
    curve = IndexBitsExplorer(quantized, "ip1", bits=(2, 8), plot=False).curve
    figure = plots.plot_index_bits_sweep(curve)
    ax = figure.axes[0]
    best = min(curve, key=lambda r: r.layer_bytes)
    assert any(line.get_label() == f"smallest: {best.index_bits} bits" for line in ax.get_lines())
    assert list(ax.get_lines()[0].get_xdata()) == list(range(2, 9))


# ---------------------------------------------------------------- huffman


def test_code_tree_depths_match_code_lengths(ip1_entries):
    counts = np.bincount(ip1_entries.values, minlength=64)
    root = code_tree(counts)
    lengths = huffman.code_lengths(counts)
    leaves = root.leaves()
    assert len(leaves) == np.count_nonzero(counts)
    assert root.count == counts.sum()
    for leaf in leaves:
        assert len(leaf.code) == lengths[leaf.symbol]
        assert leaf.count == counts[leaf.symbol]
    codes = huffman.canonical_codes(lengths)
    assert {leaf.symbol: int(leaf.code, 2) for leaf in leaves} == {s: int(codes[s]) for s in np.flatnonzero(counts)}


def test_code_tree_single_symbol():
    root = code_tree(np.array([0, 7, 0]))
    assert [leaf.symbol for leaf in root.leaves()] == [1]
    assert root.leaves()[0].code == "0"


def test_code_tree_all_zero():
    with pytest.raises(ValueError, match="zero"):
        code_tree(np.zeros(4, dtype=np.int64))


def test_huffman_tree_leaf_labels():
    counts = np.bincount(np.frombuffer(b"abracadabra", dtype=np.uint8) - ord("a"))
    figure = plots.plot_huffman_tree(counts, labels={0: "a", 1: "b"})
    text = _texts(figure)
    assert "a\n5\n0" in text  # the most frequent letter gets the one-bit code 0
    assert "b\n2\n" in text
    assert "5 symbols, 11 occurrences" in figure.axes[0].get_title()


def test_code_lengths_plot(ip1_entries):
    counts = np.bincount(ip1_entries.values, minlength=64)
    figure = plots.plot_code_lengths(counts)
    bars_ax, lengths_ax = figure.axes
    present = np.count_nonzero(counts)
    assert len(_bars(bars_ax)) == present
    step_line = lengths_ax.get_lines()[0]
    assert sorted(step_line.get_ydata()) == sorted(huffman.code_lengths(counts)[counts > 0])


def test_entropy_bits_cases():
    assert plots.entropy_bits([1, 1, 1, 1]) == pytest.approx(2.0)
    assert plots.entropy_bits([5, 0, 0]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        plots.entropy_bits([0, 0])


def test_bits_vs_entropy_bars(quantized, ip1_entries):
    sizes = report.size_report(quantized)
    layer = sizes.layers[0]
    rows = [{"label": "ip1 codes", "fixed_bits": layer.weight_bits, "huffman_bits": layer.bits_per_entry("huffman", "weights"),
             "entropy_bits": plots.entropy_bits(np.bincount(ip1_entries.values))}]
    figure = plots.plot_bits_vs_entropy(rows)
    heights = [bar.get_height() for bar in _bars(figure.axes[0])]
    assert heights[0] == 6
    # Huffman's average lies between the entropy and the entropy plus one bit.
    assert heights[2] <= heights[1] < heights[2] + 1


def test_symbol_distributions_panels(ip1_entries):
    figure = plots.plot_symbol_distributions(ip1_entries.values, ip1_entries.index, 6, 5, "ip1")
    codes_ax, index_ax = figure.axes
    assert len(_bars(codes_ax)) == 64
    assert len(_bars(index_ax)) == 32
    assert codes_ax.get_title().startswith("ip1 weight codes\n")
    assert f"{ip1_entries.entries:,} entries" in index_ax.get_title()
    assert "entropy" in index_ax.get_title()


def test_symbol_distributions_out_of_range():
    with pytest.raises(ValueError, match="4 bits"):
        plots.plot_symbol_distributions(np.array([0, 20]), np.array([0, 1]), 4, 5)
