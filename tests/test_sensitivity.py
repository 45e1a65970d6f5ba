"""Tests for dclab.sensitivity (scan, iterative pruning) and dclab.plots.prune, on the bundled MNIST subset."""

from __future__ import annotations

import copy
import io

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.figure import Figure
from torch.nn.utils import prune as torch_prune

from dclab.data import fixed_subset, load_mnist, make_loader
from dclab.models import PretrainedWeightsMissing, build_model
from dclab.plots.prune import plot_sensitivity, plot_weight_distributions, plot_weight_histogram
from dclab.prune import enforce_masks, layer_mask, prune_model, prune_to_preset, sparsity_report
from dclab.sensitivity import iterative_prune, round_keeps, sensitivity_scan
from dclab.train import evaluate, set_seed, train


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(source="bundled")


@pytest.fixture(scope="module")
def val_loader(mnist):
    return make_loader(mnist.val, batch_size=500)


@pytest.fixture(scope="module")
def trained(mnist):
    """The shipped LeNet-300-100, or one trained for two epochs when the checkpoint is absent."""
    try:
        return build_model("lenet300", weights="trained")
    except PretrainedWeightsMissing:
        set_seed(0)
        model = build_model("lenet300")
        train(model, make_loader(mnist.train, 64, shuffle=True), epochs=2, lr=0.05, progress=False)
        return model


# ---------------------------------------------------------------- sensitivity scan


@pytest.fixture(scope="module")
def scan(trained, val_loader):
    return sensitivity_scan(trained, val_loader, sparsities=(0.0, 0.5, 0.9, 1.0), progress=False)


def test_scan_table_shape(scan):
    assert len(scan) == 3 * 4
    assert [row["layer"] for row in scan[::4]] == ["ip1", "ip2", "ip3"]
    assert set(scan[0]) == {"layer", "sparsity", "achieved", "accuracy"}


def test_scan_zero_is_dense(scan, trained, val_loader):
    dense = evaluate(trained, val_loader)["top1"]
    for row in scan:
        if row["sparsity"] == 0.0:
            assert row["accuracy"] == dense


def test_scan_full_prune_hurts(scan):
    by_layer = {(row["layer"], row["sparsity"]): row for row in scan}
    for layer in ("ip1", "ip2", "ip3"):
        assert by_layer[(layer, 1.0)]["achieved"] == 1.0
        assert by_layer[(layer, 1.0)]["accuracy"] < by_layer[(layer, 0.0)]["accuracy"] - 0.5


def test_scan_achieved_matches(scan):
    for row in scan:
        assert row["achieved"] == pytest.approx(row["sparsity"], abs=1e-3)


def test_scan_leaves_model(trained, val_loader):
    before = copy.deepcopy(trained.state_dict())
    sensitivity_scan(trained, val_loader, sparsities=(0.5,), layers=["ip3"], progress=False)
    assert not torch_prune.is_pruned(trained)
    for key, value in trained.state_dict().items():
        assert torch.equal(value, before[key])


def test_scan_pruned_model(trained, val_loader):
    model = copy.deepcopy(trained)
    prune_model(model, {"ip3": 0.5})
    mask = model.ip3.weight_mask.clone()
    rows = sensitivity_scan(model, val_loader, sparsities=(0.2, 0.8), layers=["ip3"], progress=False)
    assert rows[0]["achieved"] == pytest.approx(0.5)  # less than already pruned: the old mask is measured
    assert rows[1]["achieved"] == pytest.approx(0.8)
    assert torch.equal(model.ip3.weight_mask, mask)


def test_scan_unknown_layer(trained, val_loader):
    with pytest.raises(KeyError, match="conv1.*ip1, ip2, ip3"):
        sensitivity_scan(trained, val_loader, layers=["conv1"], progress=False)


def test_scan_invalid_sparsity(trained, val_loader):
    with pytest.raises(ValueError, match="amount=1.1"):
        sensitivity_scan(trained, val_loader, sparsities=(0.5, 1.1), progress=False)


# ---------------------------------------------------------------- plots


def test_plot_sensitivity_lines(scan):
    figure = plot_sensitivity(scan)
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    assert len(ax.lines) == 3
    assert [line.get_label() for line in ax.lines] == ["ip1", "ip2", "ip3"]
    assert list(ax.lines[0].get_xdata()) == [0.0, 50.0, 90.0, 100.0]
    figure.savefig(io.BytesIO(), format="png")  # renders without a display


def test_plot_sensitivity_empty():
    with pytest.raises(ValueError, match="empty"):
        plot_sensitivity([])


def test_plot_histogram_counts(trained):
    dense = copy.deepcopy(trained)
    pruned = copy.deepcopy(trained)
    prune_to_preset(pruned, "paper")
    figure = plot_weight_histogram(dense.ip2, pruned.ip2, bins=40)
    before, after = figure.axes[0].containers
    assert sum(patch.get_height() for patch in before) == 30_000
    kept = int(layer_mask(pruned.ip2).sum())
    in_range = sum(patch.get_height() for patch in after)
    assert in_range == kept
    assert len(before) == 40


def test_plot_histogram_tensor_nonzeros():
    weight = torch.tensor([0.0, 0.0, 0.5, -0.5, 0.25])
    figure = plot_weight_histogram(weight, weight, bins=4)
    assert sum(patch.get_height() for patch in figure.axes[0].containers[1]) == 3


def test_plot_distributions_axes(trained):
    pruned = copy.deepcopy(trained)
    prune_to_preset(pruned, "paper")
    figure = plot_weight_distributions(trained, pruned)
    assert [ax.get_title() for ax in figure.axes] == ["ip1", "ip2", "ip3"]


# ---------------------------------------------------------------- iterative pruning


def test_round_keeps_geometric():
    keeps = round_keeps(0.08, 3)
    assert keeps[-1] == pytest.approx(0.08)
    assert keeps[0] == pytest.approx(0.08 ** (1 / 3))
    assert keeps == sorted(keeps, reverse=True)


def test_round_keeps_linear():
    assert round_keeps(0.2, 4, "linear") == pytest.approx([0.8, 0.6, 0.4, 0.2])


@pytest.mark.parametrize("rounds, schedule, pattern", [(0, "geometric", "rounds=0"), (2, "cubic", "'cubic'")])
def test_round_keeps_invalid(rounds, schedule, pattern):
    with pytest.raises(ValueError, match=pattern):
        round_keeps(0.5, rounds, schedule)


def test_iterative_prune_history(trained, mnist, val_loader):
    model = copy.deepcopy(trained)
    train_loader = make_loader(fixed_subset(mnist.train, 1000), 64, shuffle=True)
    set_seed(0)
    history = iterative_prune(model, train_loader, val_loader, "paper", rounds=2, epochs_per_round=1,
                              lr=0.01, progress=False)
    assert [row["round"] for row in history] == [0, 1, 2]
    assert history[0]["sparsity"] == 0.0
    assert history[1]["sparsity"] < history[2]["sparsity"]
    final = {layer.layer: layer.keep for layer in sparsity_report(model).layers}
    assert final == pytest.approx({"ip1": 0.08, "ip2": 0.09, "ip3": 0.26}, abs=1e-4)
    assert history[2]["keep"] == final
    one_shot = copy.deepcopy(trained)
    prune_to_preset(one_shot, "paper")
    assert history[2]["val_top1"] > evaluate(one_shot, val_loader)["top1"]  # retraining recovers accuracy
    assert torch.all(model.ip1.weight_orig[model.ip1.weight_mask == 0] == 0)


def test_iterative_prune_rejects_s(trained, mnist, val_loader):
    with pytest.raises(ValueError, match="'ip1'.*kept fraction"):
        iterative_prune(copy.deepcopy(trained), val_loader, val_loader, {"ip1": {"s": 1.0}}, progress=False)


def test_iterative_prune_unknown_layer(trained, val_loader):
    model = copy.deepcopy(trained)
    with pytest.raises(KeyError, match="fc6"):
        iterative_prune(model, val_loader, val_loader, {"fc6": 0.1}, progress=False)
    assert not torch_prune.is_pruned(model)


def test_iterative_keeps_earlier_masks(trained, mnist, val_loader):
    # A second schedule on an already pruned model keeps the earlier masks.
    model = copy.deepcopy(trained)
    prune_model(model, {"ip1": 0.5})
    enforce_masks(model)
    earlier = model.ip1.weight_mask.clone()
    loader = make_loader(fixed_subset(mnist.train, 500), 64)
    iterative_prune(model, loader, val_loader, {"ip1": 0.25}, rounds=2, epochs_per_round=1, progress=False)
    assert torch.all(model.ip1.weight_mask <= earlier)
    assert sparsity_report(model).layers[0].kept == round(0.25 * 235_200)
