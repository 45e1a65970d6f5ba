"""The four networks of Deep Compression (Han, Mao, Dally, ICLR 2016), with its layer names.

dclab's LeNets use the paper's names as module names (``ip1``..``ip3``;
``conv1``, ``conv2``, ``ip1``, ``ip2``). AlexNet and VGG-16 keep
torchvision's module structure, so torchvision's pretrained state dicts load
unchanged, and :data:`PAPER_LAYER_NAMES` maps the paper's names onto their
modules. :func:`compressible_layers` gives every network's weight layers under
the paper's names, which is what plans, reports and the compressed file use.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LeNet300",
    "LeNet5",
    "MODEL_NAMES",
    "PAPER_LAYER_NAMES",
    "build_model",
    "compressible_layers",
    "network_of",
    "count_parameters",
    "shipped_checkpoint_path",
    "PretrainedWeightsMissing",
]

log = logging.getLogger(__name__)

MODEL_NAMES = ("lenet300", "lenet5", "alexnet", "vgg16")


class PretrainedWeightsMissing(FileNotFoundError):
    """Pretrained weights were requested but are neither cached nor given as a file."""


class LeNet300(nn.Module):
    """LeNet-300-100: a 784-300-100-10 fully connected network with ReLU (266,610 parameters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.ip1 = nn.Linear(28 * 28, 300)
        self.ip2 = nn.Linear(300, 100)
        self.ip3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (N, 1, 28, 28) -> (N, 784)
        x = F.relu(self.ip1(x))
        x = F.relu(self.ip2(x))
        return self.ip3(x)


class LeNet5(nn.Module):
    """Caffe's LeNet-5 as used by the paper (431,080 parameters).

    conv 20@5x5, max-pool 2x2, conv 50@5x5, max-pool 2x2, fc 500 with ReLU,
    fc 10. As in Caffe's ``lenet_train_test.prototxt``, only ip1 is followed
    by a ReLU.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.ip1 = nn.Linear(50 * 4 * 4, 500)
        self.ip2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)  # (N, 1, 28, 28) -> (N, 20, 12, 12)
        x = F.max_pool2d(self.conv2(x), 2)  # -> (N, 50, 4, 4)
        x = F.relu(self.ip1(x.flatten(1)))  # -> (N, 500)
        return self.ip2(x)


# Paper layer name -> module path inside the model, in forward order.
PAPER_LAYER_NAMES: dict[str, dict[str, str]] = {
    "lenet300": {"ip1": "ip1", "ip2": "ip2", "ip3": "ip3"},
    "lenet5": {"conv1": "conv1", "conv2": "conv2", "ip1": "ip1", "ip2": "ip2"},
    "alexnet": {
        "conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
        "conv4": "features.8", "conv5": "features.10",
        "fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6",
    },
    "vgg16": {
        "conv1_1": "features.0", "conv1_2": "features.2",
        "conv2_1": "features.5", "conv2_2": "features.7",
        "conv3_1": "features.10", "conv3_2": "features.12", "conv3_3": "features.14",
        "conv4_1": "features.17", "conv4_2": "features.19", "conv4_3": "features.21",
        "conv5_1": "features.24", "conv5_2": "features.26", "conv5_3": "features.28",
        "fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6",
    },
}

# torchvision weight enums; the file names are those torchvision caches under
# torch.hub.get_dir()/checkpoints (torchvision 0.29).
_TORCHVISION_WEIGHTS = {
    "alexnet": ("AlexNet_Weights", "IMAGENET1K_V1"),
    "vgg16": ("VGG16_Weights", "IMAGENET1K_V1"),
}


def network_of(model: nn.Module) -> str:
    """Return the network name (one of ``MODEL_NAMES``) of a dclab or torchvision model.

    Raises:
        ValueError: the model is not one of the four networks.
    """
    name = getattr(model, "dclab_network", None)
    if name in MODEL_NAMES:
        return name
    if isinstance(model, LeNet300):
        return "lenet300"
    if isinstance(model, LeNet5):
        return "lenet5"
    class_name = type(model).__name__
    if class_name == "AlexNet":
        return "alexnet"
    if class_name == "VGG":
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        if convs == 13:
            return "vgg16"
    raise ValueError(f"{class_name} is not one of dclab's networks ({', '.join(MODEL_NAMES)})")


def compressible_layers(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """Return the model's weight layers keyed by the paper's layer names, in forward order."""
    network = network_of(model)
    modules = dict(model.named_modules())
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for paper_name, module_path in PAPER_LAYER_NAMES[network].items():
        layers[paper_name] = modules[module_path]
    return layers


def count_parameters(model: nn.Module) -> int:
    """Return the number of parameters, counting pruned weights once (``weight_orig``)."""
    return sum(p.numel() for p in model.parameters())


def shipped_checkpoint_path(name: str) -> Path:
    """Return the path of the trained LeNet state dict that ships inside dclab."""
    if name not in ("lenet300", "lenet5"):
        raise ValueError(f"dclab ships trained checkpoints for lenet300 and lenet5 only, not {name!r}")
    return Path(str(resources.files("dclab") / "checkpoints" / f"{name}.pt"))


def build_model(name: str, weights: str | Path | None = None, num_classes: int = 10) -> nn.Module:
    """Build one of the paper's networks.

    Args:
        name: ``lenet300``, ``lenet5``, ``alexnet`` or ``vgg16``.
        weights: ``"random"`` for a fresh initialization; ``"trained"`` for
            the LeNet checkpoint that ships with dclab; ``"pretrained"`` for
            torchvision's ImageNet weights, which must already be in torch's
            cache (nothing is downloaded); or a path to a state-dict file.
            LeNets default to ``"random"``; AlexNet and VGG-16 need an
            explicit choice, so that no result is silently from random weights.
        num_classes: output classes (LeNets only; AlexNet and VGG-16 have 1000).

    Raises:
        ValueError: unknown name or weights choice.
        PretrainedWeightsMissing: the pretrained or shipped weights are absent.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if weights is None:
        if name in ("alexnet", "vgg16"):
            raise ValueError(
                f"{name} needs an explicit weights choice: weights='pretrained' (torchvision's ImageNet "
                "weights from torch's cache), a path to a state-dict file, or weights='random'"
            )
        weights = "random"

    model = _architecture(name, num_classes)
    model.dclab_network = name

    if isinstance(weights, str) and weights == "random":
        return model
    if isinstance(weights, str) and weights == "trained":
        path = shipped_checkpoint_path(name)
        if not path.is_file():
            raise PretrainedWeightsMissing(
                f"the shipped checkpoint {path} is missing; regenerate it with `dclab make-checkpoints`"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
    elif isinstance(weights, str) and weights == "pretrained":
        state = _cached_torchvision_state(name)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist; give a state-dict file or weights='random'")
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


def _architecture(name: str, num_classes: int) -> nn.Module:
    if name == "lenet300":
        return LeNet300(num_classes)
    if name == "lenet5":
        return LeNet5(num_classes)
    import torchvision

    if name == "alexnet":
        return torchvision.models.alexnet(weights=None)
    return torchvision.models.vgg16(weights=None)


def _cached_torchvision_state(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    if name not in _TORCHVISION_WEIGHTS:
        raise ValueError(f"{name} has no torchvision pretrained weights; use weights='trained' for the LeNets")
    enum_name, member = _TORCHVISION_WEIGHTS[name]
    weight_enum = getattr(torchvision.models, enum_name)[member]
    file_name = Path(weight_enum.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not cached.is_file():
        raise PretrainedWeightsMissing(
            f"pretrained {name} weights are not cached at {cached}. Download {weight_enum.url} on a machine "
            f"with internet and copy it there, pass the file as weights=PATH, or use weights='random'"
        )
    log.info("loading pretrained %s weights from %s", name, cached)
    return torch.load(cached, map_location="cpu", weights_only=True)
