"""Tests for dclab.prune: masks, thresholds, re-pruning, masked retraining, storage, statistics."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

from dclab.models import build_model, compressible_layers
from dclab.presets import get_preset
from dclab.prune import (
    MagnitudeThreshold,
    PruneSetting,
    deepcopy_pruned,
    effective_weight,
    enforce_masks,
    fraction_threshold,
    layer_mask,
    load_pruned_state_dict,
    make_permanent,
    prune_global,
    prune_layer,
    prune_model,
    prune_to_preset,
    sparsity_report,
    std_threshold,
)
from dclab.train import save_checkpoint, train

# Six distinct magnitudes: 0.05 < 0.1 < 0.2 < 0.3 < 0.4 < 0.5.
HAND_WEIGHT = [[0.1, -0.5, 0.3], [-0.2, 0.4, -0.05]]


def hand_layer(values=HAND_WEIGHT) -> nn.Linear:
    values = torch.tensor(values, dtype=torch.float32)
    layer = nn.Linear(values.shape[1], values.shape[0])
    with torch.no_grad():
        layer.weight.copy_(values)
        layer.bias.fill_(0.7)
    return layer


def toy_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))


def toy_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(64, 20, generator=generator), torch.randint(0, 5, (64,), generator=generator)


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch) -> None:
    images, labels = batch
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()


# ---------------------------------------------------------------- hand-computed masks


def test_amount_hand_mask():
    layer = hand_layer()
    threshold = prune_layer(layer, amount=0.5)
    assert threshold == pytest.approx(0.2)
    assert layer.weight_mask.tolist() == [[0, 1, 1], [0, 1, 0]]


def test_keep_equals_amount():
    by_keep, by_amount = hand_layer(), hand_layer()
    prune_layer(by_keep, keep=0.5)
    prune_layer(by_amount, amount=0.5)
    assert torch.equal(by_keep.weight_mask, by_amount.weight_mask)


def test_absolute_threshold_tie_pruned():
    layer = hand_layer()
    prune_layer(layer, threshold=0.3)  # 0.3 sits exactly at the threshold
    assert layer.weight_mask.tolist() == [[0, 1, 0], [0, 1, 0]]


def test_fraction_tie_prunes_all_tied():
    layer = hand_layer([[0.1, 0.2, -0.2, 0.3]])
    threshold = prune_layer(layer, amount=0.5)  # round(0.5 * 4) = 2, but 0.2 and -0.2 tie
    assert threshold == pytest.approx(0.2)
    assert layer.weight_mask.tolist() == [[0, 0, 0, 1]]


def test_fraction_prunes_exact_count():
    torch.manual_seed(0)
    layer = nn.Linear(37, 11)
    prune_layer(layer, amount=0.3)
    assert int((layer.weight_mask == 0).sum()) == round(0.3 * 37 * 11)


def test_std_threshold_rule():
    layer = hand_layer([[-2.0, 2.0], [-1.0, 1.0]])  # population std = sqrt(2.5)
    threshold = prune_layer(layer, s=1.0)
    assert threshold == pytest.approx(math.sqrt(2.5))
    assert layer.weight_mask.tolist() == [[1, 1], [0, 0]]


def test_std_threshold_scales_with_s():
    weight = torch.tensor([-2.0, 2.0, -1.0, 1.0])
    assert std_threshold(weight, 0.5) == pytest.approx(0.5 * math.sqrt(2.5))


def test_sign_preserved():
    layer = hand_layer()
    original = layer.weight.detach().clone()
    prune_layer(layer, amount=0.5)
    kept = layer.weight_mask.bool()
    assert torch.equal(effective_weight(layer)[kept], original[kept])
    assert (effective_weight(layer)[kept] < 0).any()


def test_bias_never_pruned():
    layer = hand_layer()
    prune_layer(layer, amount=1.0)
    assert "bias_orig" not in dict(layer.named_parameters())
    assert torch.all(layer.bias == 0.7)


def test_zero_percent_keeps_all():
    layer = hand_layer([[0.0, 0.2], [-0.3, 0.4]])
    threshold = prune_layer(layer, amount=0.0)
    assert threshold == -math.inf
    assert torch.all(layer.weight_mask == 1)  # even the exact zero stays unmasked
    assert torch_prune.is_pruned(layer)


def test_hundred_percent_prunes_all():
    layer = hand_layer()
    prune_layer(layer, amount=1.0)
    assert torch.all(layer.weight_mask == 0)
    assert torch.equal(layer(torch.ones(1, 3)), torch.full((1, 2), 0.7))


def test_fraction_matches_torch_l1():
    torch.manual_seed(3)
    ours, theirs = nn.Linear(50, 40), nn.Linear(50, 40)
    theirs.load_state_dict(ours.state_dict())
    prune_layer(ours, amount=0.73)
    torch_prune.l1_unstructured(theirs, "weight", amount=0.73)
    assert torch.equal(ours.weight_mask, theirs.weight_mask)


def test_fraction_threshold_counts_existing():
    weight = torch.tensor([0.1, 0.2, 0.3, 0.4])
    mask = torch.tensor([0.0, 1.0, 1.0, 1.0])
    assert fraction_threshold(weight, mask, 0.5) == pytest.approx(0.2)
    assert fraction_threshold(weight, mask, 0.25) == -math.inf


def test_method_composes_with_torch():
    layer = hand_layer()
    torch_prune.l1_unstructured(layer, "weight", amount=2)  # prunes 0.05 and 0.1
    MagnitudeThreshold.apply(layer, "weight", threshold=0.35)
    assert isinstance(next(iter(layer._forward_pre_hooks.values())), torch_prune.PruningContainer)
    assert layer.weight_mask.tolist() == [[0, 1, 0], [0, 1, 0]]


# ---------------------------------------------------------------- re-pruning


def test_reprune_more():
    layer = hand_layer()
    prune_layer(layer, amount=0.5)
    first = layer.weight_mask.clone()
    prune_layer(layer, amount=2 / 3)  # 4 of 6 pruned in total: 0.3 goes next
    assert layer.weight_mask.tolist() == [[0, 1, 0], [0, 1, 0]]
    assert torch.all(layer.weight_mask <= first)


def test_reprune_less_is_noop():
    layer = hand_layer()
    prune_layer(layer, amount=0.5)
    first = layer.weight_mask.clone()
    threshold = prune_layer(layer, amount=1 / 6)
    assert threshold == -math.inf
    assert torch.equal(layer.weight_mask, first)


def test_reprune_lower_threshold_noop():
    layer = hand_layer()
    prune_layer(layer, threshold=0.35)
    first = layer.weight_mask.clone()
    prune_layer(layer, threshold=0.01)
    assert torch.equal(layer.weight_mask, first)


def test_reprune_never_restores():
    layer = hand_layer()
    prune_layer(layer, amount=0.5)
    with torch.no_grad():
        layer.weight_orig[0, 0] = 10.0  # a pruned position that grew large underneath
    prune_layer(layer, amount=0.5)
    assert layer.weight_mask[0, 0] == 0
    assert int((layer.weight_mask == 0).sum()) == 3


def test_reprune_counts_once():
    model = build_model("lenet300")
    prune_model(model, {"ip1": 0.5})
    prune_model(model, {"ip1": 0.5})
    report = sparsity_report(model)
    assert report.layers[0].pruned == 235_200 // 2
    assert report.pruned_params == 235_200 // 2


# ---------------------------------------------------------------- plans, presets, global


def distinct_model(name: str, seed: int = 0) -> nn.Module:
    """A dclab network whose weights have distinct magnitudes, so fractions prune exact counts."""
    torch.manual_seed(seed)
    model = build_model(name)
    with torch.no_grad():
        for layer in compressible_layers(model).values():
            n = layer.weight.numel()
            magnitudes = (torch.randperm(n) + 1).float() / n
            signs = torch.randint(0, 2, (n,)).float() * 2 - 1
            layer.weight.copy_((magnitudes * signs).reshape(layer.weight.shape) * 0.1)
    return model


def test_random_init_tie_prunes_extra():
    # float32 initial weights repeat, so the exact count can be exceeded by ties.
    torch.manual_seed(0)
    model = build_model("lenet300")
    magnitudes = model.ip1.weight.detach().abs().flatten()
    threshold = prune_to_preset(model, "paper")["ip1"]
    tied = int((magnitudes == threshold).sum())
    assert sparsity_report(model).layers[0].pruned == round(0.92 * 235_200) + tied - 1


def test_preset_paper_keeps():
    model = distinct_model("lenet300")
    prune_to_preset(model, "paper")
    preset = get_preset("lenet300")
    for layer in sparsity_report(model).layers:
        assert layer.kept == layer.weights - round((1 - preset.layers[layer.layer].keep) * layer.weights)
    assert sparsity_report(model).layers[0].kept == 18_816


def test_preset_lenet5_conv():
    model = distinct_model("lenet5")
    prune_to_preset(model, "paper")
    kept = {layer.layer: layer.kept for layer in sparsity_report(model).layers}
    assert kept == {"conv1": 330, "conv2": 3_000, "ip1": 32_000, "ip2": 950}
    assert model.conv2.weight_mask.shape == (50, 20, 5, 5)
    magnitudes = model.conv2.weight_orig.abs()
    kept_mask = model.conv2.weight_mask.bool()
    assert magnitudes[kept_mask].min() > magnitudes[~kept_mask].max()


def test_plan_mixed_settings():
    torch.manual_seed(0)
    model = build_model("lenet300")
    thresholds = prune_model(model, {"ip1": 0.1, "ip2": {"s": 1.0}, "ip3": {"threshold": 0.05}})
    assert thresholds["ip2"] == pytest.approx(std_threshold(model.ip2.weight_orig, 1.0))
    assert thresholds["ip3"] == 0.05
    assert sparsity_report(model).layers[0].kept == round(0.1 * 235_200)
    assert torch.equal(model.ip3.weight_mask, (model.ip3.weight_orig.abs() > 0.05).float())


def test_plan_unknown_layer():
    model = build_model("lenet300")
    with pytest.raises(KeyError, match=r"'fc6'.*ip1, ip2, ip3"):
        prune_model(model, {"fc6": 0.1})
    assert not torch_prune.is_pruned(model)


def test_global_threshold_hand():
    model = nn.Sequential(hand_layer([[0.1, 0.2], [0.3, 0.4]]), hand_layer([[0.5, 0.6], [-0.7, 0.8]]))
    threshold = prune_global(model, amount=0.5)
    assert threshold == pytest.approx(0.4)
    assert torch.all(model[0].weight_mask == 0)
    assert torch.all(model[1].weight_mask == 1)


def test_global_matches_torch():
    ours, theirs = toy_model(4), toy_model(4)
    prune_global(ours, amount=0.7)
    torch_prune.global_unstructured(
        [(theirs[0], "weight"), (theirs[2], "weight")], pruning_method=torch_prune.L1Unstructured, amount=0.7
    )
    assert torch.equal(ours[0].weight_mask, theirs[0].weight_mask)
    assert torch.equal(ours[2].weight_mask, theirs[2].weight_mask)


def test_global_subset_of_layers():
    model = build_model("lenet300")
    prune_global(model, amount=0.5, layers=["ip2", "ip3"])
    report = {layer.layer: layer for layer in sparsity_report(model).layers}
    assert report["ip1"].pruned == 0
    assert report["ip2"].pruned + report["ip3"].pruned == round(0.5 * 31_000)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"amount": 1.5}, "amount=1.5"),
        ({"amount": -0.1}, "amount=-0.1"),
        ({"keep": 2.0}, "keep=2.0"),
        ({"amount": float("nan")}, "amount=nan"),
        ({"s": -1.0}, "s=-1.0"),
        ({"threshold": -0.5}, "threshold=-0.5"),
        ({}, "exactly one"),
        ({"amount": 0.5, "s": 1.0}, "exactly one"),
    ],
)
def test_setting_invalid(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        prune_layer(hand_layer(), **kwargs)


def test_setting_of_forms():
    assert PruneSetting.of(0.08) == PruneSetting(keep=0.08)
    assert PruneSetting.of({"s": 1.5}) == PruneSetting(s=1.5)
    assert PruneSetting.of(get_preset("lenet300").layers["ip3"]) == PruneSetting(keep=0.26)


def test_setting_of_unknown_key():
    with pytest.raises(ValueError, match="sigma"):
        PruneSetting.of({"sigma": 1.0})


def test_setting_of_bad_type():
    with pytest.raises(TypeError, match="'ten'"):
        PruneSetting.of("ten")


def test_layer_without_weight():
    with pytest.raises(ValueError, match="ReLU"):
        prune_layer(nn.ReLU(), amount=0.5)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_layer_empty_weight():
    with pytest.raises(ValueError, match="numel 0"):
        prune_layer(nn.Linear(0, 3), amount=0.5)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_plan_empty_layer_named():
    model = nn.Sequential(nn.Linear(0, 3))
    with pytest.raises(ValueError, match=r"^0 \(Linear\) has an empty weight"):
        prune_model(model, {"0": 0.5})


def test_global_invalid_amount():
    with pytest.raises(ValueError, match="amount=1.2"):
        prune_global(build_model("lenet300"), amount=1.2)


# ---------------------------------------------------------------- masked retraining


OPTIMIZERS = {
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    "sgd_weight_decay": lambda params: torch.optim.SGD(params, lr=0.1, weight_decay=0.1),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_masked_training_no_regrowth(name):
    model = toy_model()
    optimizer = OPTIMIZERS[name](model.parameters())
    batch = toy_batch()
    for _ in range(3):  # optimizer state exists before pruning
        sgd_step(model, optimizer, batch)
    prune_model(model, {"0": {"amount": 0.6}, "2": {"amount": 0.6}})
    masks = [layer_mask(model[0]).clone(), layer_mask(model[2]).clone()]
    nonzeros = [int(effective_weight(m).count_nonzero()) for m in (model[0], model[2])]

    for _ in range(5):
        sgd_step(model, optimizer, batch)
        enforce_masks(model, optimizer)
        for layer, mask, before in zip((model[0], model[2]), masks, nonzeros):
            pruned = mask == 0
            assert torch.all(effective_weight(layer)[pruned] == 0)
            assert torch.all(layer.weight_orig[pruned] == 0)
            assert torch.all(layer.weight[pruned] == 0)
            assert int(effective_weight(layer).count_nonzero()) <= before
            assert torch.equal(layer_mask(layer), mask)
        nonzeros = [int(effective_weight(m).count_nonzero()) for m in (model[0], model[2])]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_regrowth_without_enforce(name):
    # The hazard that enforce_masks removes: stale state moves weight_orig at pruned positions.
    model = toy_model()
    optimizer = OPTIMIZERS[name](model.parameters())
    batch = toy_batch()
    for _ in range(3):
        sgd_step(model, optimizer, batch)
    prune_model(model, {"0": {"amount": 0.6}})
    enforce_masks(model)  # zero weight_orig but keep the optimizer state
    sgd_step(model, optimizer, batch)
    pruned = model[0].weight_mask == 0
    if name == "sgd_weight_decay":
        assert torch.all(model[0].weight_orig[pruned] == 0)  # decay of a zero weight is zero
    else:
        assert model[0].weight_orig[pruned].abs().max() > 0


@pytest.mark.parametrize("name", ["sgd_momentum", "adam"])  # plain SGD keeps no per-weight state
def test_enforce_clears_optimizer_state(name):
    model = toy_model()
    optimizer = OPTIMIZERS[name](model.parameters())
    sgd_step(model, optimizer, toy_batch())
    prune_model(model, {"0": {"amount": 0.5}})
    enforce_masks(model, optimizer)
    pruned = model[0].weight_mask == 0
    state = optimizer.state[model[0].weight_orig]
    tensors = [value for value in state.values() if torch.is_tensor(value) and value.shape == pruned.shape]
    assert tensors
    for value in tensors:
        assert torch.all(value[pruned] == 0)


def test_enforce_through_train():
    model = toy_model()
    images, labels = toy_batch()
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, loader, epochs=1, optimizer=optimizer, progress=False)
    prune_model(model, {"0": {"amount": 0.8}})
    mask = model[0].weight_mask.clone()
    train(model, loader, epochs=2, optimizer=optimizer, progress=False,
          after_step=functools.partial(enforce_masks, optimizer=optimizer))
    assert torch.equal(model[0].weight_mask, mask)
    assert torch.all(model[0].weight_orig[mask == 0] == 0)


def test_unmasked_zero_trainable():
    layer = hand_layer([[0.0, 0.2], [-0.3, 0.4]])
    prune_layer(layer, amount=0.0)
    report = sparsity_report(nn.Sequential(layer))
    assert report.layers[0].kept == 4
    assert report.pruned_params == 0
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    enforce_masks(nn.Sequential(layer))
    assert layer.weight_orig[0, 0] != 0


# ---------------------------------------------------------------- copying, devices, storage


def test_deepcopy_keeps_masks():
    model = toy_model()
    prune_model(model, {"0": {"amount": 0.5}})
    clone = copy.deepcopy(model)
    assert torch.equal(clone[0].weight_mask, model[0].weight_mask)
    clone[0].weight_mask.zero_()
    assert model[0].weight_mask.sum() > 0  # the copy owns its mask


def test_deepcopy_after_forward():
    model = toy_model()
    prune_model(model, {"0": {"amount": 0.5}})
    images, _ = toy_batch()
    expected = model(images)  # leaves a non-leaf model[0].weight behind
    clone = deepcopy_pruned(model)
    assert torch.equal(clone(images), expected)
    prune_model(clone, {"0": {"amount": 0.9}})  # re-prunes the copy only
    assert int(model[0].weight_mask.sum()) == 300


def test_deepcopy_after_enforce():
    model = toy_model()
    prune_model(model, {"0": {"amount": 0.5}})
    model(toy_batch()[0]).sum().backward()
    enforce_masks(model)
    assert torch.equal(copy.deepcopy(model)[0].weight_mask, model[0].weight_mask)


def test_to_dtype_moves_masks():
    model = toy_model()
    prune_model(model, {"0": {"amount": 0.5}})
    images, _ = toy_batch()
    expected = model(images)
    model.to(torch.float64)
    assert model[0].weight_mask.dtype == torch.float64
    assert model[0].weight_orig.dtype == torch.float64
    assert model[0].weight_mask.device == model[0].weight_orig.device
    output = model(images.double())
    assert output.dtype == torch.float64
    assert torch.allclose(output.float(), expected, atol=1e-5)


def test_state_dict_fresh_model(tmp_path):
    model = build_model("lenet300")
    prune_to_preset(model, "paper")
    path = save_checkpoint(model, tmp_path / "pruned.pt")
    fresh = build_model("lenet300")
    load_pruned_state_dict(fresh, torch.load(path, weights_only=True))
    images = torch.randn(4, 1, 28, 28)
    assert torch.equal(fresh(images), model(images))
    for name in ("ip1", "ip2", "ip3"):
        assert torch.equal(getattr(fresh, name).weight_mask, getattr(model, name).weight_mask)
    assert sparsity_report(fresh).pruned_params == sparsity_report(model).pruned_params


def test_state_dict_reprune_after_load():
    model = build_model("lenet300")
    prune_model(model, {"ip1": 0.5})
    fresh = build_model("lenet300")
    load_pruned_state_dict(fresh, model.state_dict())
    prune_model(fresh, {"ip1": 0.25})
    assert sparsity_report(fresh).layers[0].kept == round(0.25 * 235_200)
    assert torch.all(fresh.ip1.weight_mask <= model.ip1.weight_mask)


def test_state_dict_missing_key():
    model = build_model("lenet300")
    prune_model(model, {"ip1": 0.5})
    state = model.state_dict()
    del state["ip2.bias"]
    with pytest.raises(RuntimeError, match="ip2.bias"):
        load_pruned_state_dict(build_model("lenet300"), state)


def test_make_permanent():
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    prune_model(model, {"0": {"amount": 0.5}})
    orig = model[0].weight_orig
    mask = model[0].weight_mask.clone()
    make_permanent(model)
    assert not torch_prune.is_pruned(model)
    assert model[0].weight is orig  # the optimizer still holds this Parameter
    assert torch.all(model[0].weight[mask == 0] == 0)
    assert "weight_mask" not in dict(model[0].named_buffers())
    sgd_step(model, optimizer, toy_batch())


# ---------------------------------------------------------------- statistics


def test_report_counts():
    model = build_model("lenet300")
    prune_to_preset(model, "paper")
    report = sparsity_report(model)
    assert report.total_params == 266_610
    assert report.pruned_params == sum(layer.pruned for layer in report.layers)
    assert [layer.biases for layer in report.layers] == [300, 100, 10]
    assert report.kept_params == 266_610 - report.pruned_params
    assert report.compression_ratio == pytest.approx(266_610 / report.kept_params)


def test_report_unpruned():
    report = sparsity_report(build_model("lenet300"))
    assert report.pruned_params == 0
    assert report.density == 1.0


def test_report_rows_total():
    model = build_model("lenet300")
    prune_model(model, {"ip3": 0.5})
    rows = sparsity_report(model).rows()
    assert [row["layer"] for row in rows] == ["ip1", "ip2", "ip3", "total"]
    assert rows[-1]["pruned"] == 500
    assert rows[-1]["biases"] == 410
    assert "ip3" in str(sparsity_report(model))


def test_report_shared_module_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    prune_layer(shared, amount=0.5)
    report = sparsity_report(model)
    assert report.total_params == 20
    assert report.pruned_params == 8


def test_report_from_masks_not_values():
    model = build_model("lenet300")
    prune_model(model, {"ip1": 0.5})
    with torch.no_grad():
        model.ip2.weight[:10].zero_()  # zeros without a mask stay "kept"
    report = sparsity_report(model)
    assert report.layers[1].pruned == 0
    assert report.pruned_params == 117_600
