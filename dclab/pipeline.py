"""The three stages end to end: prune and retrain, quantize and fine-tune, Huffman-code.

:func:`compress` starts from a trained LeNet, runs every stage, writes the
compressed file, reads it back and evaluates the model it rebuilds, so the
accuracy reported for the last stage is the file's. After every stage it
records test accuracy, the weights kept and the size of a real encoding:

- pruned: float32 kept values + fixed-bit relative indices (+ dense biases);
- quantized: fixed-bit codes + fixed-bit indices + codebooks;
- Huffman: the file itself, whose bytes on disk give the final ratio.

Every stage saves its state dict in ``run_dir`` (loadable with
``weights_only=True``), so a later run can resume from it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dclab import config, data, models, prune, quantize, report, train
from dclab.container import load_compressed, save_compressed
from dclab.presets import Preset, get_preset
from dclab.sensitivity import iterative_prune

__all__ = [
    "STAGES",
    "PipelineConfig",
    "StageResult",
    "PipelineResult",
    "compress",
    "load_stage_checkpoint",
    "format_stage_table",
]

log = logging.getLogger(__name__)

STAGES = ("dense", "pruned", "quantized", "huffman")
# Stages that leave a checkpoint a later run can resume from.
RESUMABLE = ("dense", "pruned", "quantized")


@dataclass
class PipelineConfig:
    """Settings of one pipeline run; every field has a working default for LeNet-300-100.

    Attributes:
        network: ``lenet300`` or ``lenet5``.
        dataset: ``mnist`` or ``fashion-mnist``.
        source: data source (see :func:`dclab.data.load_mnist`).
        preset: preset name in :mod:`dclab.presets` or a :class:`Preset`;
            it gives the kept fraction, codebook bits and index bits per layer.
        baseline: ``"trained"`` starts from the shipped checkpoint (bundled
            MNIST only), ``"train"`` trains a dense model first, or a path to
            a state dict.
        prune_rounds, prune_epochs, prune_final_epochs, prune_lr,
            prune_weight_decay: iterative pruning: rounds, epochs of masked
            retraining per round and in the last round, learning rate and
            weight decay (SGD with momentum 0.9).
        quant_epochs, quant_lr, reduction, init: centroid fine-tuning epochs,
            learning rate, ``"sum"`` (Deep Compression's rule: a centroid's
            gradient is the sum of its weights' gradients) or ``"mean"``, and
            the centroid initialization.
        out: path of the compressed file.
        run_dir: folder for the stage checkpoints; None keeps none.
        resume_from: a stage in ``RESUMABLE`` whose checkpoint in ``run_dir``
            to start from, skipping the stages up to it.
    """

    network: str = "lenet300"
    dataset: str = "mnist"
    source: str = "auto"
    preset: str | Preset = "dclab"
    seed: int = 0
    baseline: str = "trained"
    batch_size: int = 64
    prune_rounds: int = 3
    prune_epochs: int = 3
    prune_final_epochs: int = 8
    prune_lr: float = 0.02
    prune_weight_decay: float = 5e-4
    quant_epochs: int = 4
    quant_lr: float = 1e-3
    reduction: str = "sum"
    init: str = "linear"
    device: str | None = None
    out: Path = Path("compressed.dcz")
    run_dir: Path | None = None
    resume_from: str | None = None
    progress: bool = True

    def resolved_preset(self) -> Preset:
        if isinstance(self.preset, Preset):
            if self.preset.network != self.network:
                raise ValueError(f"preset {self.preset.network}/{self.preset.name} is not for {self.network}")
            return self.preset
        return get_preset(self.network, self.preset)


@dataclass
class StageResult:
    """One row of the stage table, laid out like Tables 1 and 7 of Deep Compression (ICLR 2016)."""

    stage: str
    top1: float
    kept_weights: int
    total_weights: int
    size_bytes: int
    ratio: float
    seconds: float

    @property
    def keep(self) -> float:
        return self.kept_weights / self.total_weights if self.total_weights else 0.0


@dataclass
class PipelineResult:
    """Result of :func:`compress`: the stage rows, the size report and the model loaded from the file."""

    config: PipelineConfig
    data_source: str
    stages: list[StageResult]
    size_report: report.SizeReport
    file_path: Path
    file_bytes: int
    model: nn.Module
    histories: dict[str, list] = field(default_factory=dict)

    def stage(self, name: str) -> StageResult:
        for row in self.stages:
            if row.stage == name:
                return row
        raise KeyError(f"no stage {name!r}; stages: {', '.join(r.stage for r in self.stages)}")

    def stage_table(self) -> str:
        return format_stage_table(self.stages)

    def layer_table(self) -> str:
        return report.format_report(self.size_report, paper=True, style="markdown")


def format_stage_table(stages: list[StageResult]) -> str:
    """Format stage rows as a markdown table: accuracy, weights kept, bytes and ratio."""
    lines = [
        "| Stage | Test top-1 | Weights kept | Size (bytes) | Ratio | Time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in stages:
        lines.append(
            f"| {row.stage} | {100 * row.top1:.2f}% | {row.kept_weights:,} ({100 * row.keep:.1f}%) "
            f"| {row.size_bytes:,} | {row.ratio:.1f}x | {row.seconds:.1f} |"
        )
    return "\n".join(lines)


def _load_splits(cfg: PipelineConfig) -> data.Splits:
    if cfg.dataset == "mnist":
        return data.load_mnist(cfg.source)
    if cfg.dataset == "fashion-mnist":
        return data.load_fashion_mnist(cfg.source)
    raise ValueError(f"unknown dataset {cfg.dataset!r}; use mnist or fashion-mnist")


def _baseline(cfg: PipelineConfig, splits: data.Splits, device: torch.device) -> nn.Module:
    if cfg.baseline == "trained":
        if not splits.source.startswith("bundled"):
            raise ValueError(
                f"the shipped checkpoint was trained on the bundled MNIST subset, not on {splits.source}; "
                "use baseline='train' (CLI: --baseline train) or a state-dict path"
            )
        return models.build_model(cfg.network, weights="trained")
    if cfg.baseline == "train":
        model, _ = train.train_baseline(cfg.network, splits, seed=cfg.seed, device=device, progress=cfg.progress)
        return model
    return models.build_model(cfg.network, weights=cfg.baseline)


def load_stage_checkpoint(network: str, path: str | Path) -> nn.Module:
    """Rebuild a model from a stage checkpoint: dense, pruned (masks) or quantized (codebooks).

    The pruning reparametrization (``weight_orig``/``weight_mask``) and the
    quantization buffers (``weight_codebook``/``weight_codes``) are created
    from the keys present, then the state dict is loaded with
    ``weights_only=True``.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = models.build_model(network, weights="random")
    modules = dict(model.named_modules())
    for key, tensor in state.items():
        path_, _, buffer = key.rpartition(".")
        if buffer in ("weight_codebook", "weight_codes"):
            modules[path_].register_buffer(buffer, torch.empty_like(tensor))
    return prune.load_pruned_state_dict(model, state)


def _kept(model: nn.Module) -> tuple[int, int]:
    stats = prune.sparsity_report(model)
    kept = sum(layer.kept for layer in stats.layers)
    total = sum(layer.weights for layer in stats.layers)
    return kept, total


def _dense_bytes(model: nn.Module) -> int:
    """Bytes of the dense float32 model: every parameter and buffer once (masks and codes excluded)."""
    size = 0
    for name, tensor in model.state_dict().items():
        if name.endswith(("_mask", "weight_codebook", "weight_codes")):
            continue
        size += tensor.numel() * 4
    return size


def compress(cfg: PipelineConfig | None = None, splits: data.Splits | None = None) -> PipelineResult:
    """Run the whole pipeline and return the stage table, size report and the model loaded from the file.

    Args:
        cfg: the run's settings (default: LeNet-300-100, bundled MNIST
            under quick mode or offline, the ``dclab`` preset).
        splits: data to use instead of loading ``cfg.dataset``.

    Raises:
        ValueError: inconsistent settings (unknown stage to resume from, a
            preset for another network, a missing ``run_dir``).
    """
    cfg = cfg or PipelineConfig()
    preset = cfg.resolved_preset()
    device = config.resolve_device(cfg.device)
    if cfg.resume_from is not None and (cfg.resume_from not in RESUMABLE or cfg.run_dir is None):
        raise ValueError(f"resume_from={cfg.resume_from!r} needs run_dir and one of {', '.join(RESUMABLE)}")
    splits = splits or _load_splits(cfg)
    train_loader = data.make_loader(splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_loader = data.make_loader(splits.val, 1000)
    test_loader = data.make_loader(splits.test, 1000)
    log.info("compressing %s on %s with preset %s/%s", cfg.network, splits.describe(), preset.network, preset.name)

    result_stages: list[StageResult] = []
    histories: dict[str, list] = {}
    start_index = STAGES.index(cfg.resume_from) if cfg.resume_from else -1

    def checkpoint(stage: str, model: nn.Module) -> None:
        if cfg.run_dir is not None:
            train.save_checkpoint(model, Path(cfg.run_dir) / f"{stage}.pt")

    def record(stage: str, model: nn.Module, size_bytes: int, dense_bytes: int, seconds: float,
               masked: nn.Module | None = None) -> None:
        top1 = train.evaluate(model, test_loader, device)["top1"]
        kept, total = _kept(masked or model)  # a model loaded from the file has no masks to count
        row = StageResult(stage, top1, kept, total, size_bytes, dense_bytes / size_bytes, seconds)
        log.info("%s: test top-1 %.4f, %d of %d weights kept, %d bytes (%.1fx)",
                 stage, top1, kept, total, size_bytes, row.ratio)
        result_stages.append(row)

    # Stage 0: the dense baseline.
    tic = time.perf_counter()
    if start_index >= 0:
        model = load_stage_checkpoint(cfg.network, Path(cfg.run_dir) / f"{cfg.resume_from}.pt")
        log.info("resumed from the %s checkpoint in %s", cfg.resume_from, cfg.run_dir)
    else:
        train.set_seed(cfg.seed)
        model = _baseline(cfg, splits, device)
        checkpoint("dense", model)
    model.to(device)
    dense_bytes = _dense_bytes(model)
    if start_index < 0 or cfg.resume_from == "dense":
        record("dense", model, dense_bytes, dense_bytes, time.perf_counter() - tic)

    # Stage 1: prune and retrain with masks.
    if start_index < STAGES.index("pruned"):
        tic = time.perf_counter()
        train.set_seed(cfg.seed)
        histories["pruned"] = iterative_prune(
            model, train_loader, val_loader, preset, rounds=cfg.prune_rounds, epochs_per_round=cfg.prune_epochs,
            final_epochs=cfg.prune_final_epochs,
            lr=cfg.prune_lr, weight_decay=cfg.prune_weight_decay, device=device, progress=cfg.progress,
        )
        checkpoint("pruned", model)
        pruned_size = report.size_report(model, preset=preset, modes=("pruned",)).total_bytes("pruned")
        record("pruned", model, pruned_size, dense_bytes, time.perf_counter() - tic)

    # Stage 2: share weights through per-layer codebooks, then fine-tune the centroids.
    if start_index < STAGES.index("quantized"):
        tic = time.perf_counter()
        train.set_seed(cfg.seed)
        quantize.quantize_model(model, preset, init=cfg.init, seed=cfg.seed)
        histories["quantized"] = quantize.fine_tune(
            model, train_loader, epochs=cfg.quant_epochs, lr=cfg.quant_lr, reduction=cfg.reduction,
            device=device, progress=cfg.progress, desc="centroid fine-tuning",
        )
        checkpoint("quantized", model)
        quantized_size = report.size_report(model, preset=preset, modes=("quantized",)).total_bytes("quantized")
        record("quantized", model, quantized_size, dense_bytes, time.perf_counter() - tic)

    # Stage 3: Huffman-code codes and indices, write the file, read it back and evaluate that.
    tic = time.perf_counter()
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.cpu()
    file_bytes = save_compressed(model, out, mode="huffman", preset=preset)
    on_disk = out.stat().st_size
    loaded = load_compressed(out).to(device)
    record("huffman", loaded, on_disk, dense_bytes, time.perf_counter() - tic, masked=model)
    sizes = report.size_report(model, preset=preset)
    if sizes.total_bytes("huffman") != on_disk or file_bytes != on_disk:
        raise RuntimeError(
            f"size report counts {sizes.total_bytes('huffman')} bytes but {out} has {on_disk}; this is a bug in dclab"
        )

    return PipelineResult(cfg, splits.source, result_stages, sizes, out, on_disk, loaded, histories)
