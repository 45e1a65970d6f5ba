"""Post-training compression of full-size AlexNet and VGG-16 on a CPU, one layer at a time.

The stages are the pipeline's (magnitude pruning to the preset's kept
fraction, k-means weight sharing with linear initialization, relative-index
storage, Huffman coding), without retraining, applied to tensors in place:

1. prune: the threshold is the ``round((1 - keep) * n)``-th smallest |w|,
   a weight is kept when ``|w| > threshold``, and pruned weights are set to
   0. This is :func:`dclab.prune.fraction_threshold`'s rule.
2. quantize: :func:`dclab.kmeans.cluster_1d` runs on the kept weights with
   at most ``2**bits - 1`` centroids. Codes are ``uint8`` (``int32`` above
   8 bits) with code 0 for pruned weights, and the weight becomes
   ``codebook[codes]``. This is :func:`dclab.quantize.quantize_layer`'s rule.
3. encode: the container's P, P+Q and P+Q+H files are encoded layer by
   layer (:mod:`dclab.fullscale_io`), and the P+Q+H file is written to disk.
4. verify: the file is read back layer by layer. Codebooks, codes, weights
   and biases must equal the model's bit for bit, and the model then has
   the weights read from the file.

Module-level pruning keeps a float mask and a recomputed weight beside
``weight_orig``, and :func:`dclab.quantize.quantize_layer` keeps int64
codes. For VGG-16 (138 million weights) that is an estimated 2 GB more than
the dense model. Here a layer costs its float32 weights (kept in the model),
one byte per weight of codes and one transient copy of |w| while its
threshold is selected.

Example:
    >>> result = run_fullscale("vgg16", weights="random", out="vgg16.dcz")
    >>> print(format_result(result))
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dclab import config
from dclab.analytic import PQSizeEstimate, expected_pq_size
from dclab.container import MODES, CompressedFileError, EncodedModel, LayerData
from dclab.fullscale_io import StreamingEncoder, iter_layer_entries
from dclab.kmeans import cluster_1d
from dclab.models import build_model, compressible_layers, network_of
from dclab.presets import PAPER_RESULTS, Preset, get_preset
from dclab.report import PARTS, LayerSizes, SizeReport, format_report

__all__ = [
    "FULL_SCALE_NETWORKS",
    "QUICK_IMAGENET_SUBSET",
    "LayerCompression",
    "FullScaleResult",
    "magnitude_threshold",
    "prune_tensor",
    "share_weights",
    "compress_model",
    "verify_file",
    "run_fullscale",
    "describe_weights",
    "peak_rss_bytes",
    "cpu_seconds",
    "format_result",
    "format_layer_table",
]

log = logging.getLogger(__name__)

FULL_SCALE_NETWORKS = ("alexnet", "vgg16")
# ImageNet images evaluated per stage in quick mode when no subset is given.
QUICK_IMAGENET_SUBSET = 256
# Stages at which accuracy is measured, in order.
STAGES = ("dense", "pruned", "quantized", "file")


# ---------------------------------------------------------------------------
# Tensor-level stages
# ---------------------------------------------------------------------------


def magnitude_threshold(weight: torch.Tensor, keep: float) -> float:
    """Return the threshold that keeps ``n - round((1 - keep) * n)`` weights when kept means ``|w| > threshold``.

    Same rule as :func:`dclab.prune.fraction_threshold` on an unpruned layer:
    the threshold is the ``round((1 - keep) * n)``-th smallest magnitude, so
    weights tied with it are pruned too. numpy's in-place introselect is
    used because ``torch.kthvalue`` on VGG-16's fc6 (103 million weights)
    needed 1.2 GB more peak memory and 1.7 times the CPU time (measured with
    torch 2.14 on a 2-core AMD EPYC machine).

    Returns:
        The threshold, or ``-inf`` when nothing is pruned.

    Raises:
        ValueError: keep outside [0, 1] or an empty weight.
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep={keep!r} is outside [0, 1]; it is the fraction of weights kept")
    numel = weight.numel()
    if numel == 0:
        raise ValueError("cannot prune an empty weight")
    pruned = round((1.0 - keep) * numel)  # Python's round(), as torch.nn.utils.prune uses
    if pruned <= 0:
        return -float("inf")
    magnitudes = weight.detach().abs().reshape(-1).cpu().numpy()  # the one transient full-size copy
    magnitudes.partition(pruned - 1)
    return float(magnitudes[pruned - 1])


@torch.no_grad()
def prune_tensor(weight: torch.Tensor, keep: float) -> tuple[torch.Tensor, float]:
    """Prune a weight tensor in place by magnitude.

    Args:
        weight: a layer's weights (modified in place: pruned entries become 0.0).
        keep: fraction of the weights to keep.

    Returns:
        (mask, threshold): a bool tensor of the weight's shape, True where
        ``|w| > threshold``, and the threshold.

    Raises:
        ValueError: see :func:`magnitude_threshold`.
    """
    threshold = magnitude_threshold(weight, keep)
    mask = torch.empty(weight.shape, dtype=torch.bool)
    _gt_abs_chunked(weight, threshold, mask)
    weight.masked_fill_(mask.logical_not(), 0.0)
    return mask, threshold


def _gt_abs_chunked(weight: torch.Tensor, threshold: float, out: torch.Tensor) -> None:
    """Set ``out = |weight| > threshold`` in chunks of rows, so no full-size float temporary is made."""
    rows = weight.reshape(weight.shape[0], -1)
    flags = out.reshape(out.shape[0], -1)
    step = max(1, (1 << 20) // rows.shape[1])
    for start in range(0, rows.shape[0], step):
        torch.gt(rows[start : start + step].abs(), threshold, out=flags[start : start + step])


@dataclass(frozen=True)
class SharedWeights:
    """The result of :func:`share_weights` on one layer.

    Attributes:
        codebook: float32 (K + 1,), entry 0 is 0.0, the rest ascending.
        codes: codes of the weight's shape (uint8 up to 8 bits, else int32); 0 = pruned.
        iterations: k-means iterations run.
        converged: whether k-means settled before its iteration limit.
    """

    codebook: torch.Tensor
    codes: torch.Tensor
    iterations: int
    converged: bool


@torch.no_grad()
def share_weights(
    weight: torch.Tensor, mask: torch.Tensor, bits: int, init: str = "linear", seed: int = 0, max_iter: int = 300
) -> SharedWeights:
    """Cluster a layer's kept weights into at most ``2**bits - 1`` shared values and write them back in place.

    The rule is that of :func:`dclab.quantize.quantize_layer`. k-means runs
    on the kept weights, empty clusters are dropped and the used ones are
    numbered 1..K in ascending order, with code 0 for pruned weights.
    Afterwards ``weight == codebook[codes]`` exactly.

    Args:
        weight: the layer's weights, pruned entries already 0 (modified in place).
        mask: bool tensor of the weight's shape, True for kept weights.
        bits: code width b in 1..16.
        init: centroid initialization (``dclab.kmeans.INIT_METHODS``).
        seed: seed of the random initializations.
        max_iter: maximum k-means iterations.

    Raises:
        ValueError: bits out of range, a mask of another shape, or non-finite weights.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits={bits!r} must be an integer in 1..16")
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from the weight's {tuple(weight.shape)}")
    code_dtype = torch.uint8 if bits <= 8 else torch.int32
    codes = torch.zeros(weight.shape, dtype=code_dtype)
    kept_values = weight[mask]
    if kept_values.numel() == 0:
        return SharedWeights(torch.zeros(1), codes, 0, True)

    result = cluster_1d(kept_values.double().numpy(), 2**bits - 1, init, seed=seed, max_iter=max_iter)
    used = torch.from_numpy(result.counts > 0)
    new_code = torch.cumsum(used.long(), 0)  # used clusters become codes 1..K, ascending
    kept_codes = new_code[torch.from_numpy(result.labels)]
    centroids = torch.from_numpy(result.centroids)[used]
    codebook = torch.cat([torch.zeros(1, dtype=torch.float64), centroids]).float()

    codes[mask] = kept_codes.to(code_dtype)
    weight[mask] = codebook[kept_codes]  # pruned entries are already 0.0 == codebook[0]
    return SharedWeights(codebook, codes, result.n_iter, result.converged)


# ---------------------------------------------------------------------------
# Whole model
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCompression:
    """What the post-training stages did to one layer.

    Attributes:
        name: the paper's layer name.
        shape: the weight's shape.
        keep_target: the preset's kept fraction.
        kept: weights kept by pruning.
        threshold: the magnitude threshold (kept when |w| > threshold).
        weight_bits: bits per code.
        index_bits: bits per relative-index entry.
        codebook_size: codebook entries, code 0 included.
        kmeans_iterations: Lloyd iterations run.
        kmeans_converged: whether k-means settled.
    """

    name: str
    shape: tuple[int, ...]
    keep_target: float
    kept: int
    threshold: float
    weight_bits: int
    index_bits: int
    codebook_size: int
    kmeans_iterations: int
    kmeans_converged: bool

    @property
    def numel(self) -> int:
        """Weights in the layer."""
        return int(np.prod(self.shape))

    @property
    def keep(self) -> float:
        """Fraction of the weights kept."""
        return self.kept / self.numel


@dataclass
class FullScaleResult:
    """The outcome of compressing one full-size network.

    Attributes:
        network: ``alexnet`` or ``vgg16``.
        weights: which weights were compressed (see :func:`describe_weights`).
        preset: the preset's name.
        path: where the P+Q+H file was written, or None.
        layers: per-layer settings and counts, in forward order.
        report: byte counts of the P, P+Q and P+Q+H files.
        accuracy: stage (``STAGES``) -> ``{"top1", "top5", "loss", "count"}`` when evaluated.
        seconds: wall-clock seconds per step (``prune``, ``quantize``, ``encode``, ``write``, ``verify``, ...).
        verified: whether the file read back equal to the model bit for bit.
        peak_rss: step -> this process's peak resident memory in bytes at the end of that step.
        model: the compressed model, its weights as read back from the file.
    """

    network: str
    weights: str
    preset: str
    path: Path | None
    layers: dict[str, LayerCompression]
    report: SizeReport
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    verified: bool = False
    peak_rss: dict[str, int] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def file_bytes(self) -> int:
        """Size of the P+Q+H file."""
        return self.report.total_bytes("huffman")

    def analytic(self, name: str) -> PQSizeEstimate:
        """Return the expected P+Q size of a layer for randomly placed kept weights.

        The placement-independent bytes (codebook, bias, headers) are the
        file's, so the estimate differs from the file only through the
        number of filler entries.
        """
        layer = self.layers[name]
        sizes = next(s for s in self.report.layers if s.name == name)
        fixed = sum(sizes.bytes["quantized"][part] for part in ("codebook", "bias", "header", "tables"))
        return expected_pq_size(
            layer.numel, layer.kept, layer.index_bits, layer.weight_bits, bias=sizes.bias, fixed_bytes=fixed
        )


def _layer_data(name: str, module: nn.Module, shared: SharedWeights, setting) -> LayerData:
    """Build the container's layer record from views of the module's tensors (no full copies)."""
    weight = module.weight.detach().reshape(-1).numpy()
    bias = module.bias.detach().numpy() if module.bias is not None else None
    codes = shared.codes.reshape(-1).numpy()
    codebook = shared.codebook.numpy()
    kept = codes != 0
    return LayerData(
        name, tuple(module.weight.shape), weight, kept, codebook, codes, bias, setting.weight_bits, setting.index_bits
    )


def _size_report(network: str, encoded: dict[str, EncodedModel], dense_bytes: int) -> SizeReport:
    """Tabulate the encoded files like :func:`dclab.report.size_report`."""
    modes = tuple(mode for mode in MODES if mode in encoded)
    first = encoded[modes[0]]
    layers = []
    for name, stats in first.layers.items():
        per_mode = {mode: {part: encoded[mode].layout.get((name, part), 0) for part in PARTS} for mode in modes}
        weight_bits = next((encoded[m].layers[name]["weight_bits"] for m in modes if m != "pruned"), None)
        layers.append(LayerSizes(
            name=name, weights=stats["numel"], kept=stats["kept"], entries=stats["entries"],
            fillers=stats["fillers"], bias=stats["bias"], weight_bits=weight_bits,
            index_bits=stats["index_bits"], bytes=per_mode,
        ))
    file_parts = ("header", "tensors", "checksum")
    file_bytes = {mode: {part: encoded[mode].layout.get(("file", part), 0) for part in file_parts} for mode in modes}
    report = SizeReport(network, modes, layers, file_bytes, dense_bytes)
    for mode in modes:
        if report.total_bytes(mode) != len(encoded[mode].data):
            raise RuntimeError(f"size accounting for mode {mode} misses bytes; the layer layout is incomplete")
    return report


def _dense_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _evaluate(model: nn.Module, loader: DataLoader | None, stage: str, result: dict, steps: "_Steps") -> None:
    if loader is None:
        return
    from dclab.train import evaluate

    with steps.timed(f"eval_{stage}"):
        result[stage] = evaluate(model, loader, topk=(1, 5))
    log.info("%s: top-1 %.2f%%, top-5 %.2f%% on %d images", stage, 100 * result[stage]["top1"],
             100 * result[stage]["top5"], result[stage]["count"])


def compress_model(
    model: nn.Module,
    preset: str | Preset = "paper",
    *,
    out: str | Path | None = None,
    eval_loader: DataLoader | None = None,
    init: str = "linear",
    seed: int = 0,
    weights_label: str = "unknown",
    progress: bool = True,
) -> FullScaleResult:
    """Prune, quantize, encode, write and verify a dense model in place, one layer at a time.

    Args:
        model: a dense dclab network (any of the four; AlexNet and VGG-16 are
            what this path is for). Its weights are overwritten with the
            quantized weights read back from the file.
        preset: preset name or object giving each layer's keep, weight bits
            and index bits.
        out: where to write the P+Q+H file; None keeps it in memory only.
        eval_loader: when given, top-1 and top-5 are measured after each
            stage (dense, pruned, quantized, read back from the file).
        init: k-means initialization. ``"linear"`` gave the best accuracy in
            Deep Compression (Han, Mao, Dally, ICLR 2016).
        seed: seed of random k-means initializations.
        weights_label: description of the weights, stored in the result.
        progress: show a progress bar over layers.

    Returns:
        A :class:`FullScaleResult`.

    Raises:
        ValueError: the model is already pruned or quantized, or the preset
            is for another network.
        CompressedFileError: the file read back differs from the model.
    """
    network = network_of(model)
    chosen = preset if isinstance(preset, Preset) else get_preset(network, preset)
    if chosen.network != network:
        raise ValueError(f"preset {chosen.network}/{chosen.name} is for {chosen.network}, not {network}")
    layers = compressible_layers(model)
    for name, module in layers.items():
        if "weight" not in module._parameters:
            raise ValueError(f"layer {name} is already pruned or quantized; compress_model needs a dense model")
    steps = _Steps()
    accuracy: dict[str, dict[str, float]] = {}
    _evaluate(model, eval_loader, "dense", accuracy, steps)

    with steps.timed("prune"):
        pruned = _prune_layers(layers, chosen, progress)
    _evaluate(model, eval_loader, "pruned", accuracy, steps)

    with steps.timed("quantize"):
        shared, summaries = _quantize_layers(layers, chosen, pruned, init, seed, progress)
    _evaluate(model, eval_loader, "quantized", accuracy, steps)

    with steps.timed("encode"):
        encoded = _encode_layers(model, layers, chosen, shared, progress)
        report = _size_report(network, encoded, _dense_bytes(model))
        data = encoded["huffman"].data
        del encoded

    path = None
    if out is not None:
        with steps.timed("write"):
            path = Path(out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            data = path.read_bytes()  # verify what is on disk
        log.info("wrote %s (%d bytes)", path, len(data))

    with steps.timed("verify"):
        codes = {name: layer.codes for name, layer in shared.items()}
        codebooks = {name: layer.codebook for name, layer in shared.items()}
        verify_file(data, model, codes, codebooks)
    _evaluate(model, eval_loader, "file", accuracy, steps)

    return FullScaleResult(
        network, weights_label, chosen.name, path, summaries, report, accuracy, steps.seconds, True,
        steps.peak_rss, model,
    )


class _Steps:
    """Wall-clock seconds and peak memory at the end of each named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss: dict[str, int] = {"start": peak_rss_bytes()}

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[step] = time.perf_counter() - start
        self.peak_rss[step] = peak_rss_bytes()


def _prune_layers(layers, preset: Preset, progress: bool) -> dict[str, tuple[torch.Tensor, float]]:
    """Prune every layer in place; return each layer's (mask, threshold)."""
    pruned = {}
    for name, module in tqdm(layers.items(), desc="prune", disable=not progress, leave=False):
        pruned[name] = prune_tensor(module.weight.data, preset.layer(name).keep)
    return pruned


def _quantize_layers(layers, preset: Preset, pruned: dict, init: str, seed: int, progress: bool):
    """Share each layer's kept weights in place; return the codebooks and codes, and the per-layer summaries.

    Each mask is dropped from ``pruned`` once its layer has codes, which mark the same kept weights.
    """
    shared: dict[str, SharedWeights] = {}
    summaries: dict[str, LayerCompression] = OrderedDict()
    for name, module in tqdm(layers.items(), desc="quantize", disable=not progress, leave=False):
        setting = preset.layer(name)
        mask, threshold = pruned.pop(name)
        layer = share_weights(module.weight.data, mask, setting.weight_bits, init, seed)
        del mask
        shared[name] = layer
        summaries[name] = LayerCompression(
            name, tuple(module.weight.shape), setting.keep, int(layer.codes.count_nonzero()), threshold,
            setting.weight_bits, setting.index_bits, layer.codebook.numel(), layer.iterations, layer.converged,
        )
    return shared, summaries


def _encode_layers(model: nn.Module, layers, preset: Preset, shared: dict, progress: bool) -> dict[str, EncodedModel]:
    """Encode the P, P+Q and P+Q+H files in one pass over the layers."""
    encoders = {mode: StreamingEncoder(network_of(model), mode, len(layers)) for mode in MODES}
    for name, module in tqdm(layers.items(), desc="encode", disable=not progress, leave=False):
        record = _layer_data(name, module, shared[name], preset.layer(name))
        for encoder in encoders.values():
            encoder.add_layer(record)
    return {mode: encoder.finish(model) for mode, encoder in encoders.items()}


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Return whether two float32 arrays are equal bit for bit (so -0.0 differs from 0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return np.array_equal(a.view(np.uint32), b.view(np.uint32))


@torch.no_grad()
def verify_file(
    data: bytes, model: nn.Module, codes: dict[str, torch.Tensor], codebooks: dict[str, torch.Tensor]
) -> None:
    """Read a P+Q or P+Q+H file layer by layer and check it against the model bit for bit.

    For every layer the file's codebook and codes must equal ``codebooks``
    and ``codes``. The weights it decodes to, ``codebook[codes]``, must
    equal the model's weights, and the biases must match too. The model's
    weights are then overwritten with the decoded ones, so the model has
    exactly the file's weights.

    Raises:
        CompressedFileError: the file is malformed or differs from the model;
            the message names the layer and what differs.
    """
    modules = compressible_layers(model)
    tensors: dict[str, torch.Tensor] = {}
    for entries in iter_layer_entries(data, tensors):
        name = entries.name
        module = modules[name]
        if entries.codebook is None:
            raise CompressedFileError(f"layer {name} is stored without a codebook; expected a quantized file")
        if not _same_bits(entries.codebook, codebooks[name].numpy()):
            raise CompressedFileError(f"layer {name}: the codebook read back differs from the one written")
        file_codes = entries.dense_codes()
        if not np.array_equal(file_codes, codes[name].reshape(-1).numpy()):
            raise CompressedFileError(f"layer {name}: the codes read back differ from the ones written")
        weight = entries.codebook[file_codes].reshape(entries.shape)
        del file_codes
        current = module.weight.detach().numpy()
        if not _same_bits(weight, current):
            raise CompressedFileError(f"layer {name}: the weights read back differ from the model's")
        if module.bias is not None and not _same_bits(entries.bias, module.bias.detach().numpy()):
            raise CompressedFileError(f"layer {name}: the bias read back differs from the model's")
        module.weight.copy_(torch.from_numpy(weight))
        del weight
    state = model.state_dict()
    for key, tensor in tensors.items():
        if not torch.equal(tensor, state[key]):
            raise CompressedFileError(f"tensor {key} read back differs from the model's")
    log.info("verified the file against the model: codebooks, codes, weights and biases equal bit for bit")


# ---------------------------------------------------------------------------
# Command-level entry
# ---------------------------------------------------------------------------


def describe_weights(network: str, weights: str | Path, seed: int) -> str:
    """Return the line that every result prints about which weights were compressed."""
    if weights == "random":
        return f"random (torchvision's initialization of {network}, seed {seed}); accuracy is meaningless"
    if weights == "pretrained":
        return f"pretrained (torchvision's ImageNet IMAGENET1K_V1 weights for {network})"
    return f"state dict from {weights}"


def _imagenet_loader(folder: str | Path, subset: int | None, batch_size: int, seed: int) -> DataLoader:
    from dclab.data import load_imagenet_val, make_loader

    if subset is None and config.quick_mode():
        subset = QUICK_IMAGENET_SUBSET
    dataset = load_imagenet_val(folder, subset=subset, seed=seed)
    return make_loader(dataset, batch_size=batch_size)


def run_fullscale(
    network: str,
    weights: str | Path = "random",
    *,
    out: str | Path | None = None,
    imagenet: str | Path | None = None,
    subset: int | None = None,
    preset: str = "paper",
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> FullScaleResult:
    """Build a full-size network and compress it with :func:`compress_model`.

    Args:
        network: ``alexnet`` or ``vgg16``. Quick mode (``DCLAB_QUICK=1``)
            allows AlexNet only.
        weights: ``"random"``, ``"pretrained"`` (torchvision's cache) or a state-dict path.
        out: where to write the compressed file.
        imagenet: an ImageNet validation folder in ImageFolder layout; when
            given, top-1 and top-5 are measured after every stage.
        subset: evaluate on a fixed, seeded subset of this many images
            (quick mode's default: ``QUICK_IMAGENET_SUBSET``).
        preset: the preset's name (``"paper"``).
        batch_size: evaluation batch size.
        seed: seed of the random initialization and of the subset.
        progress: show progress bars.

    Raises:
        ValueError: an unknown network, or VGG-16 in quick mode.
        dclab.models.PretrainedWeightsMissing: pretrained weights are not cached.
    """
    if network not in FULL_SCALE_NETWORKS:
        raise ValueError(f"full-scale compression is for {' and '.join(FULL_SCALE_NETWORKS)}, not {network!r}")
    if config.quick_mode() and network != "alexnet":
        raise ValueError(f"quick mode (DCLAB_QUICK=1) runs AlexNet only at full scale; unset DCLAB_QUICK to compress {network}")
    seconds = {}
    loader = _imagenet_loader(imagenet, subset, batch_size, seed) if imagenet is not None else None
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(network, weights=weights)
    seconds["build"] = time.perf_counter() - start
    label = describe_weights(network, weights, seed)
    log.info("compressing %s with %s weights", network, label)
    result = compress_model(model, preset, out=out, eval_loader=loader, seed=seed, weights_label=label, progress=progress)
    result.seconds = {**seconds, **result.seconds}
    return result


def peak_rss_bytes() -> int:
    """Return this process's peak resident set size in bytes (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def cpu_seconds() -> float:
    """Return the user plus system CPU time of this process."""
    times = os.times()
    return times.user + times.system


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _percent(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f}%"


def format_layer_table(result: FullScaleResult) -> str:
    """Return a markdown table: per layer, the file's P+Q rate beside the analytic and the paper's.

    Columns: kept fraction (preset), stored entries and fillers (measured,
    and expected for random placement), P+Q rate measured / analytic /
    paper, and the P+Q+H rate measured / paper.
    """
    published = PAPER_RESULTS.get(result.network, {})
    header = ("| Layer | Shape | Kept | Fillers (expected) | P+Q rate | analytic | paper | vs paper "
              "| P+Q+H rate | paper |")
    lines = [header, "|" + "---|" * 10]
    for sizes in result.report.layers:
        layer = result.layers[sizes.name]
        estimate = result.analytic(sizes.name)
        paper = published.get(sizes.name)
        rate = sizes.rate("quantized")
        paper_pq = _percent(paper.rate_pq, 1) if paper else "-"
        versus = f"{100 * (rate / paper.rate_pq - 1):+.1f}%" if paper else "-"
        paper_pqh = _percent(paper.rate_pqh) if paper else "-"
        shape = "x".join(str(n) for n in layer.shape)
        lines.append(
            f"| {sizes.name} | {shape} | {_percent(layer.keep, 1)} | {sizes.fillers:,} ({estimate.fillers:,.0f}) "
            f"| {_percent(rate)} | {_percent(estimate.rate)} | {paper_pq} | {versus} "
            f"| {_percent(sizes.rate('huffman'))} | {paper_pqh} |"
        )
    total = result.report
    kept = sum(layer.kept for layer in result.layers.values())
    weights = sum(layer.numel for layer in result.layers.values())
    paper = published.get("total")
    rate = total.total_bytes("quantized") / total.dense_bytes
    lines.append(
        f"| total | {weights:,} | {_percent(kept / weights, 1)} | "
        f"{sum(s.fillers for s in total.layers):,} | {_percent(rate)} | - | "
        f"{_percent(paper.rate_pq, 1) if paper else '-'} | "
        f"{f'{100 * (rate / paper.rate_pq - 1):+.1f}%' if paper else '-'} | "
        f"{_percent(total.total_bytes('huffman') / total.dense_bytes)} | "
        f"{_percent(paper.rate_pqh) if paper else '-'} |"
    )
    return "\n".join(lines)


def format_result(result: FullScaleResult, report_tables: bool = True) -> str:
    """Return the whole result as markdown: weights used, sizes, accuracy, timings and tables."""
    report = result.report
    lines = [
        f"## {result.network}: post-training compression, preset {result.preset!r}",
        "",
        f"- weights: {result.weights}",
        f"- dense float32: {report.dense_bytes:,} bytes",
    ]
    labels = {"pruned": "P", "quantized": "P+Q", "huffman": "P+Q+H"}
    for mode in report.modes:
        lines.append(f"- {labels[mode]} file: {report.total_bytes(mode):,} bytes ({report.ratio(mode):.1f}x smaller)")
    if result.path is not None:
        lines.append(f"- written to {result.path}, read back and verified bit for bit: {result.verified}")
    if result.accuracy:
        lines.append("")
        lines.append("| Stage | top-1 | top-5 | images |")
        lines.append("|---|---|---|---|")
        for stage in STAGES:
            if stage in result.accuracy:
                row = result.accuracy[stage]
                lines.append(f"| {stage} | {_percent(row['top1'])} | {_percent(row['top5'])} | {row['count']} |")
    lines.append("")
    lines.append("Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    lines.append("")
    lines.append(format_layer_table(result))
    if report_tables:
        lines.append("")
        lines.append(format_report(report))
    return "\n".join(lines)
