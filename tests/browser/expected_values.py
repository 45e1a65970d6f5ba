"""The accuracy and sizes a lecture notebook's slider readout should show, computed with dclab's stage functions.

These helpers do not use the explorer classes of ``dclab.widgets``: they
prune or quantize a copy of the model with ``dclab.prune`` and
``dclab.quantize``, evaluate it on the same fixed subset of the test images
and encode it with ``dclab.report.size_report``. The formatting follows the
readout the notebooks show ("accuracy 97.60%", "12.3 KB", "20.1x").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from dclab.data import Splits
from dclab.models import compressible_layers
from dclab.prune import deepcopy_pruned, prune_model
from dclab.quantize import quantize_layer
from dclab.report import size_report
from dclab.train import evaluate
from dclab.widgets import DEFAULT_EVAL_SIZE, evaluation_batches


@dataclass(frozen=True)
class Expected:
    """One setting's accuracy and file sizes.

    Attributes:
        accuracy: top-1 on the evaluation subset, as a fraction.
        size_bytes: storage mode (``pruned``, ``quantized``, ``huffman``) -> file bytes.
        dense_bytes: the dense float32 model's bytes.
    """

    accuracy: float
    size_bytes: dict[str, int]
    dense_bytes: int

    def texts(self) -> list[str]:
        """Return the strings the readout shows for this setting: the accuracy, each size and each ratio."""
        texts = [f"accuracy {100 * self.accuracy:.2f}%"]
        for size in self.size_bytes.values():
            texts.append(f"{size / 1000:,.1f} KB")
            texts.append(f"{self.dense_bytes / size:.1f}x")
        return texts


def _measure(model: nn.Module, splits: Splits, modes: Sequence[str], eval_size: int) -> Expected:
    accuracy = evaluate(model, evaluation_batches(splits.test, eval_size))["top1"]
    report = size_report(model, modes=modes)
    return Expected(accuracy, {mode: report.total_bytes(mode) for mode in modes}, report.dense_bytes)


def expected_pruning(
    model: nn.Module, splits: Splits, plan: Mapping[str, Mapping[str, float]], eval_size: int = DEFAULT_EVAL_SIZE
) -> Expected:
    """Prune a copy of ``model`` with ``plan`` (layer -> ``{"s": ...}`` or ``{"amount": ...}``); measure it."""
    pruned = deepcopy_pruned(model).cpu().eval()
    prune_model(pruned, plan)
    return _measure(pruned, splits, ("pruned",), eval_size)


def expected_weight_sharing(
    model: nn.Module,
    splits: Splits,
    bits: Mapping[str, int],
    init: str = "linear",
    seed: int = 0,
    eval_size: int = DEFAULT_EVAL_SIZE,
) -> Expected:
    """Quantize each layer of a copy of ``model`` by k-means to ``bits[layer]`` bits; measure it."""
    quantized = deepcopy_pruned(model).cpu().eval()
    for name, module in compressible_layers(quantized).items():
        quantize_layer(module, bits[name], init, seed, name=name)
    return _measure(quantized, splits, ("quantized", "huffman"), eval_size)
