"""Per-network compression settings: the paper's and dclab's own, both named.

Every stage (pruning, quantization, sparse storage, the pipeline, the
full-scale runs) reads its per-layer settings from here, keyed by the paper's
layer names (ip1..ip3; conv1, conv2, ip1, ip2; conv1..fc8; conv1_1..fc8).

Source of the paper's numbers: S. Han, H. Mao, W. J. Dally, "Deep Compression:
Compressing Deep Neural Networks with Pruning, Trained Quantization and
Huffman Coding", ICLR 2016 (arXiv:1510.00149 v5), Tables 1-5.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "LayerSetting",
    "Preset",
    "PaperLayerResult",
    "PAPER_RESULTS",
    "PAPER_HEADLINE",
    "NETWORKS",
    "get_preset",
    "list_presets",
    "register_preset",
]

NETWORKS = ("lenet300", "lenet5", "alexnet", "vgg16")


@dataclass(frozen=True)
class LayerSetting:
    """Compression settings for one layer.

    Attributes:
        keep: fraction of the layer's weights kept by pruning, in [0, 1]
            (torch's ``amount`` is ``1 - keep``).
        weight_bits: bits per weight code; the codebook has at most
            ``2**weight_bits - 1`` shared nonzero values because code 0 is
            reserved for zero.
        index_bits: bits per relative-index entry; a gap of more than
            ``2**index_bits - 1`` zeros needs a filler entry.
    """

    keep: float
    weight_bits: int
    index_bits: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep <= 1.0:
            raise ValueError(f"keep={self.keep!r} is outside [0, 1]; it is the fraction of weights kept")
        if not 1 <= self.weight_bits <= 16:
            raise ValueError(f"weight_bits={self.weight_bits!r} is outside 1..16")
        if not 1 <= self.index_bits <= 16:
            raise ValueError(f"index_bits={self.index_bits!r} is outside 1..16")

    @property
    def amount(self) -> float:
        """Fraction of weights pruned (torch.nn.utils.prune's meaning)."""
        return 1.0 - self.keep


@dataclass(frozen=True)
class Preset:
    """A named set of per-layer settings for one network.

    Attributes:
        network: one of ``NETWORKS``.
        name: ``"paper"`` for the published settings, ``"dclab"`` for ours.
        layers: paper layer name -> settings, in forward order.
        source: where the numbers come from, shown in reports.
    """

    network: str
    name: str
    layers: dict[str, LayerSetting]
    source: str

    def layer(self, paper_name: str) -> LayerSetting:
        """Return the settings of one layer, with an error naming the known layers."""
        try:
            return self.layers[paper_name]
        except KeyError:
            known = ", ".join(self.layers)
            raise KeyError(
                f"layer {paper_name!r} is not in preset {self.network}/{self.name}; known layers: {known}"
            ) from None

    def with_overrides(self, name: str | None = None, **per_layer: LayerSetting) -> "Preset":
        """Return a copy with some layers' settings replaced."""
        for paper_name in per_layer:
            self.layer(paper_name)
        layers = {**self.layers, **per_layer}
        return replace(self, name=name or self.name, layers=layers)


def _settings(keep: dict[str, float], conv_bits: int, fc_bits: int, index_bits: int) -> dict[str, LayerSetting]:
    layers = {}
    for paper_name, kept in keep.items():
        bits = conv_bits if paper_name.startswith("conv") else fc_bits
        layers[paper_name] = LayerSetting(keep=kept, weight_bits=bits, index_bits=index_bits)
    return layers


_PAPER_SOURCE = "Han, Mao, Dally, Deep Compression, ICLR 2016, Tables 2-5"

_PAPER_KEEP = {
    "lenet300": {"ip1": 0.08, "ip2": 0.09, "ip3": 0.26},
    "lenet5": {"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19},
    "alexnet": {
        "conv1": 0.84, "conv2": 0.38, "conv3": 0.35, "conv4": 0.37, "conv5": 0.37,
        "fc6": 0.09, "fc7": 0.09, "fc8": 0.25,
    },
    "vgg16": {
        "conv1_1": 0.58, "conv1_2": 0.22,
        "conv2_1": 0.34, "conv2_2": 0.36,
        "conv3_1": 0.53, "conv3_2": 0.24, "conv3_3": 0.42,
        "conv4_1": 0.32, "conv4_2": 0.27, "conv4_3": 0.34,
        "conv5_1": 0.35, "conv5_2": 0.29, "conv5_3": 0.36,
        "fc6": 0.04, "fc7": 0.04, "fc8": 0.23,
    },
}

# (conv bits, fc bits, index bits) as used in the paper's tables. LeNet-300-100
# has no conv layers and uses 6-bit codebooks throughout.
_PAPER_BITS = {
    "lenet300": (6, 6, 5),
    "lenet5": (8, 5, 5),
    "alexnet": (8, 5, 4),
    "vgg16": (8, 5, 5),
}

_PRESETS: dict[tuple[str, str], Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Add a preset to the registry (replacing one of the same network and name)."""
    if preset.network not in NETWORKS:
        raise ValueError(f"unknown network {preset.network!r}; expected one of {', '.join(NETWORKS)}")
    _PRESETS[(preset.network, preset.name)] = preset
    return preset


for _network, _keep in _PAPER_KEEP.items():
    register_preset(Preset(_network, "paper", _settings(_keep, *_PAPER_BITS[_network]), _PAPER_SOURCE))


def get_preset(network: str, name: str = "paper") -> Preset:
    """Return the preset ``name`` for ``network``.

    Raises:
        KeyError: the network or preset is unknown; the message lists the known ones.
    """
    if network not in NETWORKS:
        raise KeyError(f"unknown network {network!r}; expected one of {', '.join(NETWORKS)}")
    try:
        return _PRESETS[(network, name)]
    except KeyError:
        known = ", ".join(n for (net, n) in _PRESETS if net == network)
        raise KeyError(f"no preset {name!r} for {network}; known presets: {known}") from None


def list_presets(network: str | None = None) -> list[tuple[str, str]]:
    """Return the registered (network, name) pairs, optionally for one network."""
    return [key for key in _PRESETS if network is None or key[0] == network]


@dataclass(frozen=True)
class PaperLayerResult:
    """One row of the paper's per-layer tables (Tables 2-5).

    ``weight_bits_huffman`` and ``index_bits_huffman`` are average bits per
    entry after Huffman coding; the rates are stored size over dense float32
    size, as fractions (0.031 means 3.1%).
    """

    weights: int
    keep: float
    weight_bits: float
    weight_bits_huffman: float
    index_bits: int
    index_bits_huffman: float
    rate_pq: float
    rate_pqh: float


def _rows(table: dict[str, tuple]) -> dict[str, PaperLayerResult]:
    return {name: PaperLayerResult(*row) for name, row in table.items()}


# Weights are the paper's rounded counts (235K is printed for ip1).
PAPER_RESULTS: dict[str, dict[str, PaperLayerResult]] = {
    "lenet300": _rows({
        "ip1": (235_000, 0.08, 6, 4.4, 5, 3.7, 0.031, 0.0232),
        "ip2": (30_000, 0.09, 6, 4.4, 5, 4.3, 0.038, 0.0304),
        "ip3": (1_000, 0.26, 6, 4.3, 5, 3.2, 0.157, 0.1270),
        "total": (266_000, 0.08, 6, 5.1, 5, 3.7, 0.031, 0.0249),
    }),
    "lenet5": _rows({
        "conv1": (500, 0.66, 8, 7.2, 5, 1.5, 0.785, 0.6745),
        "conv2": (25_000, 0.12, 8, 7.2, 5, 3.9, 0.060, 0.0528),
        "ip1": (400_000, 0.08, 5, 4.5, 5, 4.5, 0.027, 0.0245),
        "ip2": (5_000, 0.19, 5, 5.2, 5, 3.7, 0.069, 0.0613),
        "total": (431_000, 0.08, 5.3, 4.1, 5, 4.4, 0.0305, 0.0255),
    }),
    "alexnet": _rows({
        "conv1": (35_000, 0.84, 8, 6.3, 4, 1.2, 0.326, 0.2053),
        "conv2": (307_000, 0.38, 8, 5.5, 4, 2.3, 0.145, 0.0943),
        "conv3": (885_000, 0.35, 8, 5.1, 4, 2.6, 0.131, 0.0844),
        "conv4": (663_000, 0.37, 8, 5.2, 4, 2.5, 0.141, 0.0911),
        "conv5": (442_000, 0.37, 8, 5.6, 4, 2.5, 0.140, 0.0943),
        "fc6": (38_000_000, 0.09, 5, 3.9, 4, 3.2, 0.030, 0.0239),
        "fc7": (17_000_000, 0.09, 5, 3.6, 4, 3.7, 0.030, 0.0246),
        "fc8": (4_000_000, 0.25, 5, 4.0, 4, 3.2, 0.073, 0.0585),
        "total": (61_000_000, 0.11, 5.4, 4.0, 4, 3.2, 0.037, 0.0288),
    }),
    "vgg16": _rows({
        "conv1_1": (2_000, 0.58, 8, 6.8, 5, 1.7, 0.400, 0.2997),
        "conv1_2": (37_000, 0.22, 8, 6.5, 5, 2.6, 0.098, 0.0699),
        "conv2_1": (74_000, 0.34, 8, 5.6, 5, 2.4, 0.143, 0.0891),
        "conv2_2": (148_000, 0.36, 8, 5.9, 5, 2.3, 0.147, 0.0931),
        "conv3_1": (295_000, 0.53, 8, 4.8, 5, 1.8, 0.217, 0.1115),
        "conv3_2": (590_000, 0.24, 8, 4.6, 5, 2.9, 0.097, 0.0567),
        "conv3_3": (590_000, 0.42, 8, 4.6, 5, 2.2, 0.170, 0.0896),
        "conv4_1": (1_000_000, 0.32, 8, 4.6, 5, 2.6, 0.131, 0.0729),
        "conv4_2": (2_000_000, 0.27, 8, 4.2, 5, 2.9, 0.109, 0.0593),
        "conv4_3": (2_000_000, 0.34, 8, 4.4, 5, 2.5, 0.140, 0.0747),
        "conv5_1": (2_000_000, 0.35, 8, 4.7, 5, 2.5, 0.143, 0.0800),
        "conv5_2": (2_000_000, 0.29, 8, 4.6, 5, 2.7, 0.117, 0.0652),
        "conv5_3": (2_000_000, 0.36, 8, 4.6, 5, 2.3, 0.148, 0.0779),
        "fc6": (103_000_000, 0.04, 5, 3.6, 5, 3.5, 0.016, 0.0110),
        "fc7": (17_000_000, 0.04, 5, 4.0, 5, 4.3, 0.015, 0.0125),
        "fc8": (4_000_000, 0.23, 5, 4.0, 5, 3.4, 0.071, 0.0524),
        "total": (138_000_000, 0.075, 6.4, 4.1, 5, 3.1, 0.032, 0.0205),
    }),
}

# Paper Table 1: error rates in percent (top-1, or top-1 / top-5), sizes in bytes as printed.
PAPER_HEADLINE = {
    "lenet300": {"error_before": 1.64, "error_after": 1.58, "size_before": 1070e3, "size_after": 27e3, "ratio": 40},
    "lenet5": {"error_before": 0.80, "error_after": 0.74, "size_before": 1720e3, "size_after": 44e3, "ratio": 39},
    "alexnet": {"error_before": (42.78, 19.73), "error_after": (42.78, 19.70),
                "size_before": 240e6, "size_after": 6.9e6, "ratio": 35},
    "vgg16": {"error_before": (31.50, 11.32), "error_after": (31.17, 10.91),
              "size_before": 552e6, "size_after": 11.3e6, "ratio": 49},
}


# dclab's own settings for the LeNets, tuned on the bundled MNIST subset's
# validation images. They keep fewer weights in the large fc layers and use
# 5-bit codebooks where the paper used 6. With the pipeline's retraining the
# test accuracy stays within 0.5 points of the dense baseline on that subset
# (mean of 3 seeds, docs/results.md), but not on Fashion-MNIST.
_DCLAB_SOURCE = "dclab, tuned on the bundled MNIST subset's validation split"

register_preset(Preset(
    "lenet300", "dclab",
    {
        "ip1": LayerSetting(keep=0.05, weight_bits=5, index_bits=5),
        "ip2": LayerSetting(keep=0.07, weight_bits=5, index_bits=5),
        "ip3": LayerSetting(keep=0.25, weight_bits=5, index_bits=4),
    },
    _DCLAB_SOURCE,
))

register_preset(Preset(
    "lenet5", "dclab",
    {
        "conv1": LayerSetting(keep=0.60, weight_bits=6, index_bits=3),
        "conv2": LayerSetting(keep=0.10, weight_bits=5, index_bits=5),
        "ip1": LayerSetting(keep=0.04, weight_bits=4, index_bits=5),
        "ip2": LayerSetting(keep=0.15, weight_bits=5, index_bits=5),
    },
    _DCLAB_SOURCE,
))
