"""Tests of dclab.quantize: codebooks on layers, centroid fine-tuning, dequantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

from dclab.models import build_model, compressible_layers
from dclab.plots.quantize import plot_centroid_inits, plot_codebook_shift
from dclab.quantize import (
    codebook_parameters,
    codes_dtype,
    dequantize,
    fine_tune,
    finish_fine_tuning,
    is_fine_tuning,
    is_quantized,
    kept_weights,
    quantize_layer,
    quantize_model,
    shared_weights,
    sync_codebooks,
)
from dclab.train import train


def lookup(module: nn.Module) -> torch.Tensor:
    return module.weight_codebook[module.weight_codes.long()]


def assert_codebook_invariants(module: nn.Module, bits: int) -> None:
    codebook = module.weight_codebook
    assert codebook.dtype == torch.float32
    assert codebook[0].item() == 0.0
    assert codebook.numel() <= 2**bits
    assert module.weight_codes.dtype == codes_dtype(bits)
    assert module.weight_codes.shape == module.weight.shape
    assert torch.equal(module.weight, lookup(module))
    nonzero_values = torch.unique(module.weight[module.weight != 0])
    assert nonzero_values.numel() <= 2**bits - 1


def linear_with(weights: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]))
    return layer


def pruned_linear(amount: float, seed: int = 0, shape=(40, 50)) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(shape[1], shape[0])
    prune.l1_unstructured(layer, "weight", amount=amount)
    return layer


def random_loader(n: int = 64, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=16)


# --- quantize_layer ------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 4, 6])
def test_layer_codebook_invariants(bits):
    torch.manual_seed(bits)
    layer = nn.Linear(30, 20)
    summary = quantize_layer(layer, bits)
    assert_codebook_invariants(layer, bits)
    assert summary.kept == 600
    assert summary.centroids == layer.weight_codebook.numel() - 1
    assert (layer.weight_codes != 0).all()


def test_layer_codes_wide_dtype():
    torch.manual_seed(0)
    layer = nn.Linear(100, 100)
    quantize_layer(layer, 12, init="density")
    assert layer.weight_codes.dtype == torch.int32
    assert_codebook_invariants(layer, 12)


@pytest.mark.parametrize("init", ["linear", "density", "random", "kmeans++"])
def test_layer_pruned_stay_zero(init):
    layer = pruned_linear(0.9)
    mask = layer.weight_mask.bool()
    quantize_layer(layer, 3, init=init, seed=1)
    assert_codebook_invariants(layer, 3)
    assert torch.equal(layer.weight_codes != 0, mask)
    assert (layer.weight[~mask] == 0).all()
    assert (layer.weight_orig[~mask] == 0).all()
    assert torch.equal(layer.weight_orig, lookup(layer))


def test_layer_every_code_used():
    # Pruned weights leave a gap around zero, so linear init starts centroids
    # where no weight is; those empty clusters must not stay in the codebook.
    layer = pruned_linear(0.9)
    summary = quantize_layer(layer, 6, init="linear")
    counts = torch.bincount(layer.weight_codes.long().flatten(), minlength=layer.weight_codebook.numel())
    assert (counts[1:] > 0).all()
    assert summary.centroids < 63
    assert not torch.isnan(layer.weight_codebook).any()


def test_layer_plain_zeros_clustered():
    layer = linear_with([0.0, 0.5, 0.52, -0.5, 0.0])
    quantize_layer(layer, 1)
    # No mask: every weight is kept, so exact zeros share the single centroid.
    assert (layer.weight_codes != 0).all()
    assert layer.weight_codebook.numel() == 2
    assert torch.equal(layer.weight, lookup(layer))


def test_layer_few_distinct_unchanged():
    weights = [-0.5, 0.25, 1.0, 0.25, -0.5, 1.0]
    layer = linear_with(weights)
    summary = quantize_layer(layer, 6)
    assert torch.equal(layer.weight, torch.tensor([weights]))
    assert torch.equal(layer.weight_codebook, torch.tensor([0.0, -0.5, 0.25, 1.0]))
    assert summary.centroids == 3
    assert summary.n_iter == 0


def test_layer_fully_pruned():
    layer = pruned_linear(1.0)
    summary = quantize_layer(layer, 5)
    assert torch.equal(layer.weight_codebook, torch.zeros(1))
    assert (layer.weight_codes == 0).all()
    assert (layer.weight == 0).all()
    assert summary.kept == 0
    assert summary.centroids == 0


def test_layer_single_weight():
    layer = linear_with([0.375])
    quantize_layer(layer, 4, init="random")
    assert torch.equal(layer.weight_codebook, torch.tensor([0.0, 0.375]))
    assert layer.weight.item() == 0.375
    assert layer.weight_codes.item() == 1


def test_layer_nan_raises():
    layer = linear_with([0.1, float("nan"), 0.3])
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        quantize_layer(layer, 4, name="ip1")
    assert not is_quantized(layer)


def test_layer_inf_raises():
    layer = linear_with([0.1, float("inf"), -float("inf")])
    with pytest.raises(ValueError, match="layer ip2 has 2 NaN or infinite"):
        quantize_layer(layer, 4, name="ip2")


def test_layer_bad_bits_raises():
    layer = linear_with([0.1, 0.2])
    for bits in (0, 17, 2.0, True):
        with pytest.raises(ValueError, match="bits="):
            quantize_layer(layer, bits)


def test_layer_bad_init_raises():
    with pytest.raises(ValueError, match="unknown initialization 'forgy'"):
        quantize_layer(linear_with([0.1, 0.2]), 4, init="forgy")


def test_layer_conv_shape():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, kernel_size=3)
    prune.l1_unstructured(conv, "weight", amount=0.5)
    quantize_layer(conv, 4)
    assert conv.weight_codes.shape == (8, 3, 3, 3)
    assert_codebook_invariants(conv, 4)
    assert torch.equal(conv.weight_codes != 0, conv.weight_mask.bool())


def test_layer_requantize_fewer_bits():
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    quantize_layer(layer, 6)
    quantize_layer(layer, 2)
    assert_codebook_invariants(layer, 2)
    assert layer.weight_codebook.numel() == 4


def test_layer_seeded_random_init():
    layers = [pruned_linear(0.5, seed=3) for _ in range(3)]
    quantize_layer(layers[0], 3, init="random", seed=1)
    quantize_layer(layers[1], 3, init="random", seed=1)
    quantize_layer(layers[2], 3, init="random", seed=2)
    assert torch.equal(layers[0].weight_codebook, layers[1].weight_codebook)
    assert not torch.equal(layers[0].weight_codebook, layers[2].weight_codebook)


def test_layer_forward_uses_codebook():
    layer = pruned_linear(0.8)
    quantize_layer(layer, 3)
    x = torch.randn(5, 50)
    expected = x @ lookup(layer).T + layer.bias
    torch.testing.assert_close(layer(x), expected)


# --- quantize_model ------------------------------------------------------------


def test_model_paper_lenet300():
    model = build_model("lenet300")
    summaries = quantize_model(model, "paper")
    assert list(summaries) == ["ip1", "ip2", "ip3"]
    for module in compressible_layers(model).values():
        assert_codebook_invariants(module, 6)
        assert module.weight_codebook.numel() == 64  # dense random weights fill all 63 values


def test_model_paper_lenet5_bits():
    torch.manual_seed(0)
    model = build_model("lenet5")
    quantize_model(model, "paper", init="density")
    bits = {"conv1": 8, "conv2": 8, "ip1": 5, "ip2": 5}
    for name, module in compressible_layers(model).items():
        assert_codebook_invariants(module, bits[name])


def test_model_mapping_partial():
    model = build_model("lenet300")
    summaries = quantize_model(model, {"ip2": 3})
    assert list(summaries) == ["ip2"]
    assert is_quantized(model.ip2)
    assert not is_quantized(model.ip1)
    assert model.ip2.weight_codebook.numel() == 8


def test_model_unknown_layer_raises():
    with pytest.raises(KeyError, match="conv1"):
        quantize_model(build_model("lenet300"), {"conv1": 8})


def test_model_int_bits():
    model = build_model("lenet300")
    quantize_model(model, 2)
    for module in compressible_layers(model).values():
        assert_codebook_invariants(module, 2)


# --- fine-tuning: the weight-sharing gradient -------------------------------------


def test_finetune_hand_computed_sum():
    # Weights (-0.5, 1.0, 1.0) share two centroids; the loss w . g has dL/dw = g.
    layer = linear_with([-0.5, 1.0, 1.0])
    quantize_layer(layer, 2)
    assert torch.equal(layer.weight_codes, torch.tensor([[1, 2, 2]], dtype=torch.uint8))
    params = codebook_parameters(layer, reduction="sum")
    optimizer = torch.optim.SGD(params, lr=0.5)
    gradient = torch.tensor([[0.5, 0.25, 0.75]])
    layer(gradient).sum().backward()
    optimizer.step()
    sync_codebooks(layer)
    # c1 = -0.5 - 0.5 * 0.5; c2 = 1.0 - 0.5 * (0.25 + 0.75)
    assert torch.equal(layer.weight_codebook, torch.tensor([0.0, -0.75, 0.5]))
    assert torch.equal(layer.weight, torch.tensor([[-0.75, 0.5, 0.5]]))


def test_finetune_hand_computed_mean():
    layer = linear_with([-0.5, 1.0, 1.0])
    quantize_layer(layer, 2)
    optimizer = torch.optim.SGD(codebook_parameters(layer, reduction="mean"), lr=0.5)
    layer(torch.tensor([[0.5, 0.25, 0.75]])).sum().backward()
    optimizer.step()
    sync_codebooks(layer)
    # c1 = -0.5 - 0.5 * 0.5 / 1; c2 = 1.0 - 0.5 * (0.25 + 0.75) / 2
    assert torch.equal(layer.weight_codebook, torch.tensor([0.0, -0.75, 0.75]))
    assert torch.equal(layer.weight, torch.tensor([[-0.75, 0.75, 0.75]]))


def test_shared_weights_gradient_matches_indexing():
    torch.manual_seed(0)
    codes = torch.randint(0, 6, (7, 9))
    centroids = torch.randn(5, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(7, 9, dtype=torch.float64)
    (shared_weights(centroids, codes) * upstream).sum().backward()
    reference = torch.cat([torch.zeros(1, dtype=torch.float64), centroids.detach()]).requires_grad_()
    (reference[codes] * upstream).sum().backward()
    torch.testing.assert_close(centroids.grad, reference.grad[1:])


def test_shared_weights_mean_divides_counts():
    codes = torch.tensor([0, 1, 2, 2, 2, 0])
    centroids = torch.tensor([1.0, 2.0], requires_grad=True)
    shared_weights(centroids, codes, reduction="mean").sum().backward()
    assert torch.equal(centroids.grad, torch.tensor([1.0, 1.0]))


def test_shared_weights_bad_reduction_raises():
    with pytest.raises(ValueError, match="reduction='max'"):
        shared_weights(torch.ones(2), torch.zeros(3, dtype=torch.long), reduction="max")


# --- fine-tuning: state and integration with dclab.train -----------------------------


def test_finetune_parameters_plain():
    model = build_model("lenet300")
    quantize_model(model, 4)
    params = codebook_parameters(model)
    names = [name for name, _ in model.named_parameters()]
    assert names == [f"{layer}.{kind}" for layer in ("ip1", "ip2", "ip3") for kind in ("bias", "weight_centroids")]
    assert [p.numel() for p in params] == [15, 15, 15]
    assert all(is_fine_tuning(module) for module in compressible_layers(model).values())
    assert codebook_parameters(model) == params


def test_finetune_parameters_pruned():
    layer = pruned_linear(0.9)
    quantize_layer(layer, 3)
    params = codebook_parameters(layer)
    assert not layer.weight_orig.requires_grad
    assert [p for p in layer.parameters() if p.requires_grad] == [layer.bias, params[0]]


def test_finetune_unquantized_raises():
    with pytest.raises(ValueError, match="no quantized layers"):
        codebook_parameters(build_model("lenet300"))


def test_finetune_bad_reduction_raises():
    model = build_model("lenet300")
    quantize_model(model, 2)
    with pytest.raises(ValueError, match="reduction='avg'"):
        codebook_parameters(model, reduction="avg")


def test_finetune_requantize_raises():
    layer = linear_with([0.1, 0.2, 0.3])
    quantize_layer(layer, 1)
    codebook_parameters(layer)
    with pytest.raises(ValueError, match="finish_fine_tuning"):
        quantize_layer(layer, 2)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_finetune_train_keeps_invariants(optimizer):
    torch.manual_seed(0)
    model = build_model("lenet300")
    prune.l1_unstructured(model.ip1, "weight", amount=0.9)
    prune.l1_unstructured(model.ip2, "weight", amount=0.8)
    masks = {name: module.weight_mask.clone() for name, module in compressible_layers(model).items()
             if hasattr(module, "weight_mask")}
    quantize_model(model, 3)
    before = {name: module.weight_codebook.clone() for name, module in compressible_layers(model).items()}
    codes = {name: module.weight_codes.clone() for name, module in compressible_layers(model).items()}
    codebook_parameters(model)

    def check_step(model: nn.Module) -> None:
        sync_codebooks(model)
        for name, module in compressible_layers(model).items():
            assert module.weight_codebook[0].item() == 0.0
            assert torch.equal(module.weight, lookup(module))
            assert torch.unique(module.weight[module.weight != 0]).numel() <= 7
            if name in masks:
                assert (module.weight[masks[name] == 0] == 0).all()
                assert torch.equal(module.weight_orig, module.weight)

    train(model, random_loader(), epochs=1, lr=0.05, optimizer=optimizer, after_step=check_step, progress=False)
    finish_fine_tuning(model)
    for name, module in compressible_layers(model).items():
        assert torch.equal(module.weight_codes, codes[name])
        assert not torch.equal(module.weight_codebook, before[name])
        assert torch.equal(module.weight, lookup(module))
        assert not is_fine_tuning(module)


def test_finetune_finish_restores_parameters():
    model = build_model("lenet300")
    prune.l1_unstructured(model.ip1, "weight", amount=0.5)
    quantize_model(model, 4)
    names_before = [name for name, _ in model.named_parameters()]
    keys_before = list(model.state_dict())
    codebook_parameters(model)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    finish_fine_tuning(model)
    assert [name for name, _ in model.named_parameters()] == names_before
    assert list(model.state_dict()) == keys_before
    assert model.ip1.weight_orig.requires_grad
    assert isinstance(model.ip2.weight, nn.Parameter)
    assert len(model.ip2._forward_pre_hooks) == 0


def test_finetune_kept_weights_during():
    layer = pruned_linear(0.75)
    quantize_layer(layer, 3)
    kept = kept_weights(layer).clone()
    codebook_parameters(layer)
    assert torch.equal(kept_weights(layer), kept)
    assert kept.numel() == int(layer.weight_mask.sum())


def test_fine_tune_helper_improves_loss():
    torch.manual_seed(0)
    model = build_model("lenet300")
    quantize_model(model, 2)
    loader = random_loader(n=128)
    history = fine_tune(model, loader, epochs=2, lr=0.05, progress=False, lr_schedule="constant")
    assert history[-1]["loss"] < history[0]["loss"]
    assert not any(is_fine_tuning(module) for module in model.modules())
    for module in compressible_layers(model).values():
        assert_codebook_invariants(module, 2)


def test_fine_tune_after_step_raises():
    model = build_model("lenet300")
    quantize_model(model, 2)
    with pytest.raises(ValueError, match="after_step"):
        fine_tune(model, random_loader(), epochs=1, after_step=print)


# --- dequantize ---------------------------------------------------------------------


def test_dequantize_plain_model_loads():
    torch.manual_seed(0)
    model = build_model("lenet300")
    prune.l1_unstructured(model.ip1, "weight", amount=0.9)
    quantize_model(model, 3)
    codebook_parameters(model)
    x = torch.randn(4, 1, 28, 28)
    expected = model(x).detach()
    dequantize(model)
    assert not any(is_quantized(module) for module in model.modules())
    assert sorted(model.state_dict()) == sorted(build_model("lenet300").state_dict())
    fresh = build_model("lenet300")
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)
    assert torch.unique(fresh.ip1.weight[fresh.ip1.weight != 0]).numel() <= 7
    assert (fresh.ip1.weight == 0).float().mean().item() == pytest.approx(0.9, abs=1e-3)


def test_dequantize_keep_masks():
    layer = pruned_linear(0.5)
    mask = layer.weight_mask.clone()
    quantize_layer(layer, 2)
    weight = lookup(layer)
    dequantize(layer, keep_masks=True)
    assert torch.equal(layer.weight_mask, mask)
    assert torch.equal(layer.weight_orig, weight)
    assert "weight_codebook" not in layer.state_dict()


# --- plots ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_pruned_ip1() -> nn.Linear:
    """ip1 of the shipped trained LeNet-300-100 (real MNIST weights), pruned to Deep Compression's 8%."""
    layer = build_model("lenet300", weights="trained").ip1
    prune.l1_unstructured(layer, "weight", amount=0.92)
    return layer


def test_plot_inits_draws(trained_pruned_ip1, tmp_path):
    figure = plot_centroid_inits(trained_pruned_ip1, bits=4, seed=0)
    assert isinstance(figure, Figure)
    histogram_ax, cdf_ax = figure.axes
    lines = {line.get_label(): line for line in cdf_ax.get_lines()}
    assert set(lines) == {"CDF", "random init (15)", "density init (15)", "linear init (15)"}
    kept = kept_weights(trained_pruned_ip1).double().numpy()
    linear_x = lines["linear init (15)"].get_xdata()
    assert linear_x[0] == pytest.approx(kept.min())
    assert linear_x[-1] == pytest.approx(kept.max())
    for label in ("random init (15)", "density init (15)", "linear init (15)"):
        assert ((lines[label].get_ydata() > 0) & (lines[label].get_ydata() <= 1)).all()
    assert len(histogram_ax.patches) == 100
    figure.savefig(tmp_path / "inits.png")
    assert (tmp_path / "inits.png").stat().st_size > 0


def test_plot_codebook_shift_draws(tmp_path):
    model = build_model("lenet300", weights="trained")
    prune.l1_unstructured(model.ip1, "weight", amount=0.92)
    kept_before = kept_weights(model.ip1).clone()
    quantize_model(model, {"ip1": 4})
    before = model.ip1.weight_codebook.clone()
    fine_tune(model, random_loader(n=32), epochs=1, lr=1e-3, progress=False)
    after = model.ip1.weight_codebook
    figure = plot_codebook_shift(kept_before, before, after)
    ax = figure.axes[0]
    markers = {line.get_label(): line for line in ax.get_lines() if line.get_label().startswith("codebook")}
    centroids = before.numel() - 1
    np.testing.assert_allclose(markers[f"codebook before ({centroids})"].get_xdata(), before[1:].numpy())
    np.testing.assert_allclose(markers["codebook after fine-tuning"].get_xdata(), after[1:].numpy())
    figure.savefig(tmp_path / "shift.png")
    assert (tmp_path / "shift.png").stat().st_size > 0


def test_plot_codebook_size_mismatch_raises():
    with pytest.raises(ValueError, match="3 and 4 entries"):
        plot_codebook_shift(torch.randn(50), torch.zeros(3), torch.zeros(4))


def test_plot_fully_pruned_raises():
    with pytest.raises(ValueError, match="no weights"):
        plot_centroid_inits(pruned_linear(1.0))
