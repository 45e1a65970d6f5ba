"""Slider explorers for the lecture notebooks: move a slider, see accuracy and the real encoded size.

Each explorer holds its ipywidgets (``.sliders``, ``.readout``, ``.image``
and the whole ``.widget``) and recomputes in :meth:`update` whenever a
slider is released (every slider has ``continuous_update=False``, so
dragging does not queue dozens of evaluations). After an update the
results are plain attributes (``.result``, ``.accuracy``, ``.size_bytes``,
``.latency_s``), so tests can set ``slider.value`` and compare them with
what the library computes for the same setting.

- Accuracy is top-1 on a fixed, seeded random subset of the test images
  (:func:`dclab.data.fixed_subset`), measured on the spot and without
  retraining. The bundled splits are sorted by class, so a prefix of them
  would contain only one or two classes.
- Sizes are the byte counts of the file that :mod:`dclab.container` writes
  for the current setting (:func:`dclab.report.size_report`), biases and
  headers included.

:func:`lecture_setup` gives the data and trained model the notebooks start
from: the shipped checkpoint on the bundled MNIST subset in quick mode, and
a baseline trained on a full-size dataset otherwise.

Example:
    >>> setup = lecture_setup("lenet300")
    >>> explorer = PruningExplorer(setup.model, setup.splits)
    >>> explorer                      # in a notebook: the sliders and the readout
    >>> explorer.sliders["s"].value = 1.2
    >>> explorer.accuracy, explorer.size_bytes["pruned"]
"""

from __future__ import annotations

import copy
import html
import io
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dclab import config, data, train
from dclab.container import encode_model_with_layout
from dclab.models import PAPER_LAYER_NAMES, build_model, compressible_layers, network_of
from dclab.presets import get_preset
from dclab.prune import deepcopy_pruned, prune_global, prune_model, sparsity_report
from dclab.quantize import is_quantized, quantize_layer
from dclab.report import size_report

__all__ = [
    "DEFAULT_EVAL_SIZE",
    "LectureSetup",
    "lecture_setup",
    "baseline_path",
    "evaluation_batches",
    "ExplorerResult",
    "PruningExplorer",
    "BitWidthExplorer",
    "IndexBitsResult",
    "IndexBitsExplorer",
]

log = logging.getLogger(__name__)

# Test images evaluated per slider update: the standard error of an
# accuracy near 90% on 2,000 images is sqrt(0.9 * 0.1 / 2000), about 0.7
# points, and LeNet-300-100 evaluates them in one small batch.
DEFAULT_EVAL_SIZE = 2000

# Epochs of the dense baselines trained on a full-size dataset (quick mode
# uses the shipped checkpoints instead). Short, so that a notebook's first
# full run trains its baseline within a few minutes on 2 CPU cores.
FULL_BASELINE_EPOCHS = {"lenet300": 8, "lenet5": 3}


# ---------------------------------------------------------------------------
# Data and baseline
# ---------------------------------------------------------------------------


@dataclass
class LectureSetup:
    """The data and trained dense model a lecture notebook starts from.

    Attributes:
        splits: train, validation and test sets.
        model: the trained dense network (a fresh copy; change it freely).
        baseline: where the weights came from (shipped checkpoint or a cached path).
        quick: whether quick mode chose the bundled data.
        checkpoint: the cached baseline's state-dict file; None for the shipped checkpoint.
    """

    splits: data.Splits
    model: nn.Module
    baseline: str
    quick: bool
    checkpoint: Path | None = None

    @property
    def pipeline_baseline(self) -> str:
        """The ``baseline`` value for :class:`dclab.pipeline.PipelineConfig`: ``"trained"`` or the cached file."""
        return "trained" if self.checkpoint is None else str(self.checkpoint)

    def describe(self) -> str:
        """Return one line naming the data and the baseline."""
        return f"{self.splits.describe()}; baseline: {self.baseline}"


def baseline_path(network: str, dataset: str, epochs: int, seed: int = 0) -> Path:
    """Return where :func:`lecture_setup` caches a baseline trained on a full-size dataset."""
    slug = dataset.lower().replace(" ", "-")
    return config.data_dir() / "baselines" / f"{network}-{slug}-e{epochs}-s{seed}.pt"


def _full_size_splits(download: bool) -> data.Splits:
    """Return full MNIST when torchvision has it (or may download it), else Fashion-MNIST."""
    try:
        return data.load_mnist(source="torchvision", download=download)
    except data.DatasetError as error:
        log.info("full MNIST unavailable (%s); using Fashion-MNIST", error)
    return data.load_fashion_mnist(download=download)


def lecture_setup(
    network: str = "lenet300",
    *,
    quick: bool | None = None,
    download: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> LectureSetup:
    """Load the data and a trained dense LeNet for a lecture notebook.

    Quick mode: the bundled MNIST subset and the checkpoint that ships with
    dclab. Otherwise a full-size dataset and a baseline trained with
    :func:`dclab.train.train_baseline` for ``epochs`` epochs. The dataset is
    MNIST when torchvision has it cached (or may download it, with
    ``download=True``), else Fashion-MNIST. The baseline is saved under
    :func:`baseline_path` and reused by later notebooks.

    Args:
        network: ``lenet300`` or ``lenet5``.
        quick: force quick mode on or off; None reads ``DCLAB_QUICK``.
        download: let torchvision download MNIST (needs internet).
        epochs: baseline epochs on full-size data (default ``FULL_BASELINE_EPOCHS``).
        seed: training seed.
        progress: show training progress bars.

    Raises:
        ValueError: a network other than the two LeNets.
        dclab.data.DatasetError: no full-size dataset is available outside quick mode.
    """
    if network not in FULL_BASELINE_EPOCHS:
        raise ValueError(f"lecture_setup covers {', '.join(FULL_BASELINE_EPOCHS)}, not {network!r}")
    quick = config.quick_mode() if quick is None else quick
    if quick:
        splits = data.load_mnist(source="bundled")
        return LectureSetup(splits, build_model(network, weights="trained"), "shipped checkpoint", True)

    splits = _full_size_splits(download)
    epochs = FULL_BASELINE_EPOCHS[network] if epochs is None else epochs
    path = baseline_path(network, splits.name, epochs, seed)
    if path.is_file():
        model = train.load_checkpoint(build_model(network), path)
        return LectureSetup(splits, model, f"{epochs}-epoch baseline cached at {path}", False, path)
    log.info("training a %d-epoch %s baseline on %s", epochs, network, splits.name)
    model, _ = train.train_baseline(network, splits, seed=seed, epochs=epochs, progress=progress)
    train.save_checkpoint(model, path)
    return LectureSetup(splits, model, f"{epochs}-epoch baseline trained now, saved at {path}", False, path)


def evaluation_batches(dataset: Dataset, size: int = DEFAULT_EVAL_SIZE, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return a fixed, seeded subset of ``dataset`` as one in-memory batch for :func:`dclab.train.evaluate`.

    One stacked batch spares the DataLoader's per-image indexing and
    collation at every slider update.
    """
    subset = data.fixed_subset(dataset, size, seed)
    images, labels = next(iter(DataLoader(subset, batch_size=len(subset))))
    return [(images, labels)]


# ---------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplorerResult:
    """The results of one setting of a pruning or bit-width explorer.

    Attributes:
        setting: slider name -> value.
        accuracy: top-1 on the evaluation subset, as a fraction.
        size_bytes: storage mode (``pruned``, ``quantized``, ``huffman``) -> file bytes.
        dense_bytes: the dense float32 model's bytes.
        kept: layer -> fraction of its weights kept.
        compute_s: seconds spent computing (model, accuracy, sizes), without drawing.
    """

    setting: dict[str, float]
    accuracy: float
    size_bytes: dict[str, int]
    dense_bytes: int
    kept: dict[str, float]
    compute_s: float

    def ratio(self, mode: str) -> float:
        """Dense bytes over the file's bytes in ``mode``."""
        return self.dense_bytes / self.size_bytes[mode]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def _kilobytes(size: float) -> str:
    return f"{size / 1000:,.1f} KB"


class _Explorer:
    """Sliders, an HTML readout and an optional PNG figure, recomputed when a slider is released."""

    # Label shown for each storage mode.
    MODE_LABELS = {"pruned": "P (float32 values)", "quantized": "P+Q (fixed-width codes)", "huffman": "P+Q+H (Huffman)"}

    def __init__(self, sliders: Mapping[str, widgets.Widget], title: str, plot: bool) -> None:
        self.sliders = dict(sliders)
        self.title = widgets.HTML(f"<b>{html.escape(title)}</b>")
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png") if plot else None
        self.visited: list[ExplorerResult] = []
        self.references: dict[str, tuple[list[float], list[float]]] = {}
        self.result = None
        self.latency_s = float("nan")
        self.latency_cpu_s = float("nan")
        panels = [self.readout] + ([self.image] if self.image is not None else [])
        self.widget = widgets.VBox([self.title, widgets.VBox(list(self.sliders.values())), widgets.HBox(panels)])
        for slider in self.sliders.values():
            slider.observe(self._on_change, names="value")

    def _on_change(self, change: dict) -> None:
        self.update()

    def setting(self) -> dict[str, float]:
        """Return the sliders' current values."""
        return {name: slider.value for name, slider in self.sliders.items()}

    def update(self):
        """Recompute for the current slider values, refresh the display and return the result.

        ``latency_s`` is the wall-clock time of the whole update, computing
        and drawing. ``latency_cpu_s`` is the CPU time this process spent on
        it (all threads together), which other programs on a busy machine
        inflate far less.
        """
        start = time.perf_counter()
        start_cpu = time.process_time()
        self.result = self.evaluate_setting(self.setting())
        self._store(self.result)
        self.readout.value = self._render_readout(self.result)
        if self.image is not None:
            self.image.value = _png(self._render_figure(self.result))
        self.latency_s = time.perf_counter() - start
        self.latency_cpu_s = time.process_time() - start_cpu
        return self.result

    def _store(self, result) -> None:
        self.visited.append(result)

    def evaluate_setting(self, setting: Mapping[str, float]):
        raise NotImplementedError

    def _render_readout(self, result) -> str:
        raise NotImplementedError

    def _render_figure(self, result) -> Figure:
        raise NotImplementedError

    def figure(self) -> Figure:
        """Return the figure of the current setting, for a static copy in a saved notebook."""
        return self._render_figure(self.result)

    def describe(self) -> str:
        """Return one line with the current setting, its results and the last update's latency."""
        raise NotImplementedError

    def add_reference(self, label: str, sizes_bytes: Sequence[float], accuracies: Sequence[float]) -> None:
        """Draw a precomputed curve (for example a retrained one) beside the live points."""
        self.references[label] = (list(sizes_bytes), list(accuracies))
        if self.result is not None and self.image is not None:
            self.image.value = _png(self._render_figure(self.result))

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


class _ModelExplorer(_Explorer):
    """An explorer that changes a copy of a model and reports accuracy and file sizes."""

    MODES: tuple[str, ...] = ()
    PLOT_MODE = ""
    # How the readout names the unchanged base model.
    BASE_LABEL = "dense"

    def __init__(self, model: nn.Module, splits: data.Splits, sliders, title: str, *, eval_size: int,
                 index_bits, plot: bool) -> None:
        self.base = deepcopy_pruned(model).cpu().eval()
        self.network = network_of(self.base)
        self.index_bits = index_bits
        self.eval_batches = evaluation_batches(splits.test, eval_size)
        self.eval_count = len(self.eval_batches[0][1])
        self.base_accuracy = train.evaluate(self.base, self.eval_batches)["top1"]
        super().__init__(sliders, title, plot)

    def build(self, setting: Mapping[str, float]) -> nn.Module:
        """Return a new model with ``setting`` applied to a copy of the base model."""
        raise NotImplementedError

    def evaluate_setting(self, setting: Mapping[str, float]) -> ExplorerResult:
        """Build the model for ``setting``, measure its accuracy and encode it in every mode shown."""
        start = time.perf_counter()
        model = self.build(setting)
        accuracy = train.evaluate(model, self.eval_batches)["top1"]
        sizes = size_report(model, index_bits=self.index_bits, modes=self.MODES)
        kept = {layer.layer: layer.keep for layer in sparsity_report(model).layers}
        return ExplorerResult(
            setting=dict(setting),
            accuracy=accuracy,
            size_bytes={mode: sizes.total_bytes(mode) for mode in self.MODES},
            dense_bytes=sizes.dense_bytes,
            kept=kept,
            compute_s=time.perf_counter() - start,
        )

    def sweep(self, settings: Iterable[Mapping[str, float]]) -> list[ExplorerResult]:
        """Evaluate several settings without touching the sliders (for reference curves and figures)."""
        return [self.evaluate_setting(setting) for setting in settings]

    @property
    def accuracy(self) -> float:
        """Top-1 of the current setting on the evaluation subset (NaN before the first update)."""
        return self.result.accuracy if self.result is not None else float("nan")

    @property
    def size_bytes(self) -> dict[str, int]:
        """Mode -> file bytes of the current setting (empty before the first update)."""
        return dict(self.result.size_bytes) if self.result is not None else {}

    def describe(self) -> str:
        """Return one line with the current setting, its accuracy, file sizes and the last update's latency."""
        result = self.result
        setting = ", ".join(f"{name}={value:g}" for name, value in result.setting.items())
        sizes = ", ".join(f"{mode} {_kilobytes(size)} ({result.ratio(mode):.1f}x)" for mode, size in result.size_bytes.items())
        return (f"{setting}: accuracy {100 * result.accuracy:.2f}% on {self.eval_count:,} test images "
                f"({self.BASE_LABEL} {100 * self.base_accuracy:.2f}%, no retraining); file {sizes}; "
                f"update {self.latency_s:.2f} s wall, {self.latency_cpu_s:.2f} s CPU")

    def _render_readout(self, result: ExplorerResult) -> str:
        layer_rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td style='text-align:right'>{100 * keep:.1f}%</td></tr>"
            for name, keep in result.kept.items()
        )
        size_rows = "".join(
            f"<tr><td>{html.escape(self.MODE_LABELS[mode])}</td>"
            f"<td style='text-align:right'>{_kilobytes(size)}</td>"
            f"<td style='text-align:right'>{result.ratio(mode):.1f}x</td></tr>"
            for mode, size in result.size_bytes.items()
        )
        return (
            f"<p><b>accuracy {100 * result.accuracy:.2f}%</b> ({self.BASE_LABEL} {100 * self.base_accuracy:.2f}%), "
            f"measured now on {self.eval_count:,} test images, <i>without retraining</i></p>"
            f"<table><tr><th>file</th><th>size</th><th>vs dense</th></tr>{size_rows}"
            f"<tr><td>dense float32</td><td style='text-align:right'>{_kilobytes(result.dense_bytes)}</td>"
            f"<td style='text-align:right'>1.0x</td></tr></table>"
            f"<table><tr><th>layer</th><th>kept</th></tr>{layer_rows}</table>"
        )

    def _render_figure(self, result: ExplorerResult) -> Figure:
        mode = self.PLOT_MODE
        # Fixed margins: constrained layout about doubled the CPU time of drawing one update.
        figure = Figure(figsize=(4.6, 3.2))
        figure.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.97)
        ax = figure.add_subplot()
        for label, (sizes, accuracies) in self.references.items():
            style = {"marker": "D", "markersize": 6, "linestyle": "none"} if len(sizes) == 1 else {"marker": "."}
            ax.plot(np.asarray(sizes) / 1000, 100 * np.asarray(accuracies), linewidth=1, label=label, **style)
        visited = [r for r in self.visited[:-1] if mode in r.size_bytes]
        if visited:
            ax.plot([r.size_bytes[mode] / 1000 for r in visited], [100 * r.accuracy for r in visited],
                    linestyle="none", marker="o", color="0.7", markersize=4, label="earlier settings")
        ax.plot([result.size_bytes[mode] / 1000], [100 * result.accuracy], linestyle="none", marker="*",
                color="tab:red", markersize=12, label="current (no retraining)")
        ax.axhline(100 * self.base_accuracy, color="0.5", linestyle=":", linewidth=1, label=self.BASE_LABEL)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{self.MODE_LABELS[mode]} file (KB)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
        return figure


# ---------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------


def _slider(description: str, value: float, low: float, high: float, step: float, integer: bool = False):
    kind = widgets.IntSlider if integer else widgets.FloatSlider
    options = {} if integer else {"readout_format": ".2f"}
    return kind(value=value, min=low, max=high, step=step, description=description, continuous_update=False,
                style={"description_width": "initial"}, layout=widgets.Layout(width="420px"), **options)


class PruningExplorer(_ModelExplorer):
    """Prune a copy of a trained model by magnitude; show accuracy without retraining and the pruned file's size.

    Args:
        model: a trained dclab network (left unchanged).
        splits: its data; a fixed subset of ``splits.test`` is evaluated.
        kind: ``"s"``: threshold = s times each layer's standard deviation
            (Han et al., NIPS 2015); ``"sparsity"``: the fraction of weights pruned.
        per_layer: one slider per layer; otherwise one slider for all layers.
            With ``kind="sparsity"`` a single slider sets one global magnitude
            threshold (:func:`dclab.prune.prune_global`), so layers with small
            weights lose more of them.
        eval_size: test images evaluated per update.
        index_bits: relative-index bits of the pruned file (None: the paper's).
        plot: draw accuracy against file size.

    Attributes:
        sliders: ``{"s": ...}`` or ``{"sparsity": ...}``, or one per layer name.
        result: the last :class:`ExplorerResult`; also ``accuracy``,
            ``size_bytes["pruned"]`` and ``latency_s``.
    """

    MODES = ("pruned",)
    PLOT_MODE = "pruned"

    def __init__(self, model: nn.Module, splits: data.Splits, *, kind: str = "s", per_layer: bool = False,
                 eval_size: int = DEFAULT_EVAL_SIZE, index_bits: int | Mapping[str, int] | None = None,
                 plot: bool = True, value: float | None = None) -> None:
        if kind not in ("s", "sparsity"):
            raise ValueError(f"kind={kind!r}; use 's' (threshold = s * std) or 'sparsity' (fraction pruned)")
        self.kind = kind
        self.per_layer = per_layer
        layers = list(compressible_layers(model))
        if kind == "s":
            default = 1.0 if value is None else value
            make = lambda label: _slider(label, default, 0.0, 2.5, 0.05)  # noqa: E731
        else:
            default = 0.8 if value is None else value
            make = lambda label: _slider(label, default, 0.0, 0.99, 0.01)  # noqa: E731
        if per_layer:
            sliders = {name: make(f"{name}: {'s' if kind == 's' else 'pruned'}") for name in layers}
        else:
            sliders = {kind: make("s (threshold = s x std)" if kind == "s" else "fraction pruned")}
        title = ("Magnitude pruning: threshold = s x std of each layer" if kind == "s"
                 else "Magnitude pruning: fraction of weights pruned")
        super().__init__(model, splits, sliders, title, eval_size=eval_size, index_bits=index_bits, plot=plot)
        self.update()

    def build(self, setting: Mapping[str, float]) -> nn.Module:
        """Return a pruned copy of the base model for a slider setting."""
        model = deepcopy_pruned(self.base)
        layers = list(compressible_layers(model))
        if self.kind == "sparsity" and not self.per_layer:
            prune_global(model, float(setting["sparsity"]))
            return model
        field_name = "s" if self.kind == "s" else "amount"
        if self.per_layer:
            plan = {name: {field_name: float(setting[name])} for name in layers}
        else:
            plan = {name: {field_name: float(setting[self.kind])} for name in layers}
        prune_model(model, plan)
        return model


# ---------------------------------------------------------------------------
# Weight sharing
# ---------------------------------------------------------------------------


def _layer_type(name: str) -> str:
    return "conv" if name.startswith("conv") else "fc"


class BitWidthExplorer(_ModelExplorer):
    """Quantize a copy of a (pruned) model with k-means codebooks; show accuracy and the P+Q and P+Q+H sizes.

    k-means per (layer, bits) is computed once and cached, so moving back to
    a bit width already seen costs only the evaluation and the encoding.
    ``precompute=True`` fills the cache for every bit width at start.

    Args:
        model: a trained dclab network, pruned or dense (left unchanged).
        splits: its data; a fixed subset of ``splits.test`` is evaluated.
        per_layer: one slider per layer; otherwise one per layer type
            (``conv`` and ``fc``, as the paper sets them).
        bits: (lowest, highest) bits on the sliders.
        init: centroid initialization (``dclab.kmeans.INIT_METHODS``).
        eval_size: test images evaluated per update.
        index_bits: relative-index bits (None: the paper's).
        precompute: run k-means for every bit width now.
        plot: draw accuracy against file size.

    Attributes:
        sliders: ``{"conv": ..., "fc": ...}`` (the types present) or one per layer.
        result: the last :class:`ExplorerResult`; ``size_bytes`` has
            ``"quantized"`` and ``"huffman"``.
    """

    MODES = ("quantized", "huffman")
    PLOT_MODE = "huffman"
    BASE_LABEL = "unquantized"

    def __init__(self, model: nn.Module, splits: data.Splits, *, per_layer: bool = False,
                 bits: tuple[int, int] = (1, 8), init: str = "linear", seed: int = 0,
                 eval_size: int = DEFAULT_EVAL_SIZE, index_bits: int | Mapping[str, int] | None = None,
                 precompute: bool = True, plot: bool = True) -> None:
        low, high = bits
        if not 1 <= low <= high <= 16:
            raise ValueError(f"bits={bits!r} must satisfy 1 <= lowest <= highest <= 16")
        self.init = init
        self.seed = seed
        self.bit_range = (low, high)
        preset = get_preset(network_of(model), "paper")
        layers = list(compressible_layers(model))
        self.groups = {name: (name if per_layer else _layer_type(name)) for name in layers}
        sliders = {}
        for name in layers:
            group = self.groups[name]
            if group not in sliders:
                default = min(max(preset.layer(name).weight_bits, low), high)
                label = f"{group} bits" if per_layer else f"{group} layers: bits per weight"
                sliders[group] = _slider(label, default, low, high, 1, integer=True)
        self._cache: dict[tuple[str, int], nn.Module] = {}
        super().__init__(model, splits, sliders, "Weight sharing: bits per weight code",
                         eval_size=eval_size, index_bits=index_bits, plot=plot)
        if precompute:
            for name in layers:
                for width in range(low, high + 1):
                    self._quantized_layer(name, width)
        self.update()

    def layer_bits(self, setting: Mapping[str, float]) -> dict[str, int]:
        """Return layer -> bits for a slider setting."""
        return {name: int(setting[group]) for name, group in self.groups.items()}

    def _quantized_layer(self, name: str, bits: int) -> nn.Module:
        key = (name, bits)
        if key not in self._cache:
            module = deepcopy_pruned(compressible_layers(self.base)[name])
            quantize_layer(module, bits, self.init, self.seed, name=name)
            self._cache[key] = module
        return self._cache[key]

    def build(self, setting: Mapping[str, float]) -> nn.Module:
        """Return a copy of the base model whose layers are the cached quantized layers for ``setting``.

        Equal to ``quantize_model(copy, layer_bits(setting), init, seed)``,
        because each layer's k-means depends only on that layer.
        """
        model = deepcopy_pruned(self.base)
        for name, bits in self.layer_bits(setting).items():
            path = PAPER_LAYER_NAMES[self.network][name]
            parent_path, _, attribute = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, attribute, deepcopy_pruned(self._quantized_layer(name, bits)))
        return model


# ---------------------------------------------------------------------------
# Relative-index bits
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexBitsResult:
    """One layer stored with a given number of relative-index bits.

    Attributes:
        index_bits: bits per index entry.
        kept: kept weights in the layer.
        fillers: filler entries added because a gap of zeros did not fit.
        entries: stored entries (kept + fillers).
        index_bytes: the layer's index stream in the file.
        value_bytes: the layer's weight stream (codes or float32 values).
        layer_bytes: all of the layer's bytes (streams, codebook, bias, headers).
        file_bytes: the whole file.
        compute_s: seconds spent encoding.
    """

    index_bits: int
    kept: int
    fillers: int
    entries: int
    index_bytes: int
    value_bytes: int
    layer_bytes: int
    file_bytes: int
    compute_s: float


class IndexBitsExplorer(_Explorer):
    """Store one layer of a pruned model with b-bit relative indices; show fillers and bytes.

    Index bits change only the storage, never the weights, so accuracy is
    the same at every setting and is not measured here.

    Args:
        model: a pruned dclab network, quantized or not (left unchanged).
        layer: the paper's name of the layer the slider controls; the other
            layers keep the preset's index bits.
        mode: ``"quantized"`` (fixed-width codes) or ``"pruned"`` (float32
            values); default: quantized when the model is.
        bits: (lowest, highest) index bits on the slider.
        plot: draw the layer's bytes against index bits.

    Attributes:
        sliders: ``{"index_bits": IntSlider}``.
        result: the last :class:`IndexBitsResult`; also ``fillers``,
            ``layer_bytes`` and ``latency_s``.
        curve: results for every bit width on the slider (drawn as the reference).
    """

    def __init__(self, model: nn.Module, layer: str, *, mode: str | None = None, bits: tuple[int, int] = (1, 12),
                 value: int | None = None, plot: bool = True) -> None:
        self.model = deepcopy_pruned(model).cpu()
        layers = compressible_layers(self.model)
        if layer not in layers:
            raise KeyError(f"unknown layer {layer!r}; layers are {', '.join(layers)}")
        quantized = all(is_quantized(module) for module in layers.values())
        self.mode = mode or ("quantized" if quantized else "pruned")
        if self.mode not in ("pruned", "quantized", "huffman"):
            raise ValueError(f"mode={self.mode!r}; use 'pruned', 'quantized' or 'huffman'")
        self.layer = layer
        low, high = bits
        default = get_preset(network_of(self.model), "paper").layer(layer).index_bits if value is None else value
        sliders = {"index_bits": _slider(f"{layer}: index bits", min(max(default, low), high), low, high, 1,
                                         integer=True)}
        super().__init__(sliders, f"Relative index of {layer}: bits per index entry", plot)
        self.curve = [self.evaluate_setting({"index_bits": b}) for b in range(low, high + 1)]
        self.update()

    def evaluate_setting(self, setting: Mapping[str, float]) -> IndexBitsResult:
        """Encode the model with ``setting["index_bits"]`` for the chosen layer and count its bytes."""
        start = time.perf_counter()
        bits = int(setting["index_bits"])
        encoded = encode_model_with_layout(self.model, self.mode, index_bits={self.layer: bits})
        layer_bytes = sum(size for (owner, _), size in encoded.layout.items() if owner == self.layer)
        stats = encoded.layers[self.layer]
        return IndexBitsResult(
            index_bits=bits,
            kept=int(stats["kept"]),
            fillers=int(stats["fillers"]),
            entries=int(stats["entries"]),
            index_bytes=encoded.layout.get((self.layer, "index"), 0),
            value_bytes=encoded.layout.get((self.layer, "weights"), 0),
            layer_bytes=layer_bytes,
            file_bytes=len(encoded.data),
            compute_s=time.perf_counter() - start,
        )

    @property
    def fillers(self) -> int:
        """Filler entries at the current setting."""
        return self.result.fillers

    @property
    def layer_bytes(self) -> int:
        """The layer's bytes at the current setting."""
        return self.result.layer_bytes

    def _store(self, result) -> None:
        pass

    def describe(self) -> str:
        """Return one line with the current index bits, fillers, bytes and the last update's latency."""
        r = self.result
        return (f"{self.layer} with {r.index_bits}-bit indices: {r.fillers:,} fillers, {r.entries:,} entries, "
                f"index {r.index_bytes:,} B, layer {r.layer_bytes:,} B, file {r.file_bytes:,} B; "
                f"update {self.latency_s:.2f} s wall, {self.latency_cpu_s:.2f} s CPU")

    def _render_readout(self, result: IndexBitsResult) -> str:
        return (
            f"<p><b>{html.escape(self.layer)}</b>, {html.escape(self.mode)} file, "
            f"{result.index_bits}-bit index: one entry skips at most {2**result.index_bits - 1} zeros</p>"
            f"<table>"
            f"<tr><td>kept weights</td><td style='text-align:right'>{result.kept:,}</td></tr>"
            f"<tr><td>filler entries</td><td style='text-align:right'>{result.fillers:,}</td></tr>"
            f"<tr><td>stored entries</td><td style='text-align:right'>{result.entries:,}</td></tr>"
            f"<tr><td>index stream</td><td style='text-align:right'>{result.index_bytes:,} B</td></tr>"
            f"<tr><td>value stream</td><td style='text-align:right'>{result.value_bytes:,} B</td></tr>"
            f"<tr><td>layer total</td><td style='text-align:right'><b>{result.layer_bytes:,} B</b></td></tr>"
            f"<tr><td>whole file</td><td style='text-align:right'>{result.file_bytes:,} B</td></tr>"
            f"</table><p>Accuracy does not change: the weights decode exactly at every index width.</p>"
        )

    def _render_figure(self, result: IndexBitsResult) -> Figure:
        figure = Figure(figsize=(4.6, 3.2))
        figure.subplots_adjust(left=0.13, right=0.85, bottom=0.15, top=0.97)
        ax = figure.add_subplot()
        widths = [r.index_bits for r in self.curve]
        ax.plot(widths, [r.layer_bytes / 1000 for r in self.curve], marker=".", label="layer bytes")
        ax.plot(widths, [r.index_bytes / 1000 for r in self.curve], marker=".", label="index stream")
        ax.plot([result.index_bits], [result.layer_bytes / 1000], marker="*", markersize=12, color="tab:red",
                linestyle="none", label="current")
        fillers_ax = ax.twinx()
        fillers_ax.plot(widths, [r.fillers for r in self.curve], color="0.5", linestyle="--", label="fillers")
        fillers_ax.set_yscale("symlog")
        fillers_ax.set_ylabel("filler entries")
        ax.set_xlabel("index bits")
        ax.set_ylabel("KB")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        more_handles, more_labels = fillers_ax.get_legend_handles_labels()
        ax.legend(handles + more_handles, labels + more_labels, fontsize="x-small")
        return figure
