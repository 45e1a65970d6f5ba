"""Tests for dclab.models: the four networks, the paper's layer names, weights choices."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dclab.models import (
    PretrainedWeightsMissing,
    build_model,
    compressible_layers,
    count_parameters,
    network_of,
    shipped_checkpoint_path,
)

# Parameter counts of the dense networks (weights and biases).
EXPECTED_PARAMETERS = {
    "lenet300": 266_610,
    "lenet5": 431_080,
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
}

PAPER_NAMES = {
    "lenet300": ["ip1", "ip2", "ip3"],
    "lenet5": ["conv1", "conv2", "ip1", "ip2"],
    "alexnet": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"],
    "vgg16": [
        "conv1_1", "conv1_2", "conv2_1", "conv2_2",
        "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2", "conv4_3",
        "conv5_1", "conv5_2", "conv5_3", "fc6", "fc7", "fc8",
    ],
}

# Smallest convenient input for each network (AlexNet and VGG-16 pool adaptively before their classifier).
INPUT_SHAPES = {
    "lenet300": (1, 1, 28, 28),
    "lenet5": (1, 1, 28, 28),
    "alexnet": (1, 3, 64, 64),
    "vgg16": (1, 3, 32, 32),
}

WEIGHT_SHAPES = [
    ("lenet300", "ip1", (300, 784)),
    ("lenet300", "ip2", (100, 300)),
    ("lenet300", "ip3", (10, 100)),
    ("lenet5", "conv1", (20, 1, 5, 5)),
    ("lenet5", "conv2", (50, 20, 5, 5)),
    ("lenet5", "ip1", (500, 800)),
    ("lenet5", "ip2", (10, 500)),
    ("alexnet", "conv1", (64, 3, 11, 11)),
    ("alexnet", "conv2", (192, 64, 5, 5)),
    ("alexnet", "conv3", (384, 192, 3, 3)),
    ("alexnet", "conv4", (256, 384, 3, 3)),
    ("alexnet", "conv5", (256, 256, 3, 3)),
    ("alexnet", "fc6", (4096, 9216)),
    ("alexnet", "fc7", (4096, 4096)),
    ("alexnet", "fc8", (1000, 4096)),
    ("vgg16", "conv1_1", (64, 3, 3, 3)),
    ("vgg16", "conv1_2", (64, 64, 3, 3)),
    ("vgg16", "conv2_1", (128, 64, 3, 3)),
    ("vgg16", "conv3_1", (256, 128, 3, 3)),
    ("vgg16", "conv4_1", (512, 256, 3, 3)),
    ("vgg16", "conv5_3", (512, 512, 3, 3)),
    ("vgg16", "fc6", (4096, 25088)),
    ("vgg16", "fc7", (4096, 4096)),
    ("vgg16", "fc8", (1000, 4096)),
]


@pytest.fixture(scope="module")
def networks() -> dict[str, nn.Module]:
    """All four networks with random weights, built once (AlexNet and VGG-16 take seconds)."""
    torch.manual_seed(0)
    return {name: build_model(name, weights="random") for name in EXPECTED_PARAMETERS}


@pytest.mark.parametrize("name", list(EXPECTED_PARAMETERS))
def test_parameter_count(networks, name):
    assert count_parameters(networks[name]) == EXPECTED_PARAMETERS[name]


@pytest.mark.parametrize("name", list(PAPER_NAMES))
def test_layer_names(networks, name):
    assert list(compressible_layers(networks[name])) == PAPER_NAMES[name]


@pytest.mark.parametrize("name", list(PAPER_NAMES))
def test_layers_forward_order(networks, name):
    model = networks[name]
    called: list[str] = []
    handles = [
        layer.register_forward_hook(lambda module, inputs, output, paper_name=paper_name: called.append(paper_name))
        for paper_name, layer in compressible_layers(model).items()
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(INPUT_SHAPES[name]))
    finally:
        for handle in handles:
            handle.remove()
    assert called == PAPER_NAMES[name]


@pytest.mark.parametrize("name, paper_name, shape", WEIGHT_SHAPES)
def test_layer_weight_shape(networks, name, paper_name, shape):
    layer = compressible_layers(networks[name])[paper_name]
    expected_type = nn.Conv2d if paper_name.startswith("conv") else nn.Linear
    assert isinstance(layer, expected_type)
    assert tuple(layer.weight.shape) == shape


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_lenet_forward_shape(networks, name):
    logits = networks[name](torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10)


def test_lenet_num_classes():
    model = build_model("lenet5", num_classes=3)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_lenet_default_random():
    assert network_of(build_model("lenet300")) == "lenet300"


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_imagenet_weights_none(name):
    with pytest.raises(ValueError, match="random"):
        build_model(name)


def test_pretrained_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedWeightsMissing) as excinfo:
        build_model("alexnet", weights="pretrained")
    assert str(tmp_path) in str(excinfo.value)
    assert isinstance(excinfo.value, FileNotFoundError)


def test_pretrained_lenet_rejected():
    with pytest.raises(ValueError, match="trained"):
        build_model("lenet300", weights="pretrained")


def test_weights_path_roundtrip(tmp_path):
    torch.manual_seed(1)
    original = build_model("lenet5")
    path = tmp_path / "lenet5.pt"
    torch.save(original.state_dict(), path)
    torch.manual_seed(2)
    loaded = build_model("lenet5", weights=path)
    for key, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_weights_path_missing(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError) as excinfo:
        build_model("lenet300", weights=path)
    assert str(path) in str(excinfo.value)


def test_weights_path_wrong_network(tmp_path):
    path = tmp_path / "lenet300.pt"
    torch.save(build_model("lenet300").state_dict(), path)
    with pytest.raises(RuntimeError):
        build_model("lenet5", weights=path)


def test_unknown_model():
    with pytest.raises(ValueError, match="'resnet50'"):
        build_model("resnet50")


def test_shipped_checkpoint_imagenet():
    with pytest.raises(ValueError, match="alexnet"):
        shipped_checkpoint_path("alexnet")


def test_network_of_foreign():
    with pytest.raises(ValueError, match="Sequential"):
        network_of(nn.Sequential(nn.Linear(4, 2)))


def test_network_of_deepcopy():
    model = copy.deepcopy(build_model("lenet5"))
    assert network_of(model) == "lenet5"
    assert list(compressible_layers(model)) == PAPER_NAMES["lenet5"]


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
def test_network_of_torchvision(networks, name):
    # A torchvision model built without build_model lacks the dclab_network tag.
    bare = copy.copy(networks[name])
    bare.__dict__.pop("dclab_network", None)
    assert not hasattr(bare, "dclab_network")
    assert network_of(bare) == name
