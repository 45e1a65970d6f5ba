"""``dclab compress``: the whole pipeline from the command line, and ``dclab demo``."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from dclab.cli import register_command
from dclab.presets import LayerSetting

__all__ = ["parse_layer_values", "config_from_args", "run_compress"]


def parse_layer_values(text: str | None, kind: type) -> dict[str, float | int]:
    """Parse ``"ip1=0.05,ip2=0.08"`` into ``{"ip1": 0.05, "ip2": 0.08}``.

    Raises:
        ValueError: an item is not ``name=value`` or the value does not parse.
    """
    if not text:
        return {}
    values = {}
    for item in text.split(","):
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"invalid per-layer setting {item!r}; write LAYER=VALUE, e.g. ip1=0.05")
        try:
            values[name.strip()] = kind(raw)
        except ValueError:
            raise ValueError(f"invalid value {raw!r} for layer {name.strip()!r}; expected {kind.__name__}") from None
    return values


def _override_preset(preset, keep: dict, bits: dict, index_bits: int | None):
    """Apply per-layer --keep/--bits and a global --index-bits to a preset."""
    layers = {}
    for name in {**keep, **bits}:
        preset.layer(name)  # raises KeyError listing the known layers
    for name, setting in preset.layers.items():
        layers[name] = LayerSetting(
            keep=keep.get(name, setting.keep),
            weight_bits=bits.get(name, setting.weight_bits),
            index_bits=index_bits if index_bits is not None else setting.index_bits,
        )
    changed = bool(keep or bits or index_bits is not None)
    return replace(preset, name=f"{preset.name}+overrides" if changed else preset.name, layers=layers)


def config_from_args(args: argparse.Namespace):
    """Build a :class:`~dclab.pipeline.PipelineConfig` from parsed ``compress`` options."""
    from dclab.pipeline import PipelineConfig

    cfg = PipelineConfig(
        network=args.model,
        dataset=args.dataset,
        source=args.source,
        preset=args.preset,
        seed=args.seed,
        baseline=args.baseline,
        prune_rounds=args.prune_rounds,
        prune_epochs=args.prune_epochs,
        prune_final_epochs=args.prune_final_epochs,
        prune_lr=args.prune_lr,
        prune_weight_decay=args.prune_weight_decay,
        quant_epochs=args.quant_epochs,
        quant_lr=args.quant_lr,
        reduction=args.reduction,
        init=args.init,
        device=args.device,
        out=Path(args.out),
        run_dir=Path(args.run_dir) if args.run_dir else None,
        resume_from=args.resume_from,
        progress=not args.quiet,
    )
    keep = parse_layer_values(args.keep, float)
    bits = parse_layer_values(args.bits, int)
    if keep or bits or args.index_bits is not None:
        cfg.preset = _override_preset(cfg.resolved_preset(), keep, bits, args.index_bits)
    return cfg


def run_compress(args: argparse.Namespace) -> int:
    """Run the pipeline and print the stage table and the per-layer table."""
    from dclab.pipeline import compress

    cfg = config_from_args(args)
    start = time.perf_counter()
    result = compress(cfg)
    elapsed = time.perf_counter() - start
    preset = cfg.resolved_preset()
    print()
    print(f"{cfg.network} on {result.data_source}, preset {preset.network}/{preset.name}, seed {cfg.seed}")
    print()
    print(result.stage_table())
    print()
    print(result.layer_table())
    print()
    final, dense = result.stage("huffman"), result.stage("dense")
    print(f"wrote {result.file_path} ({result.file_bytes:,} bytes, {final.ratio:.1f}x smaller than dense float32); "
          f"test top-1 {100 * dense.top1:.2f}% -> {100 * final.top1:.2f}% (read back from the file); "
          f"{elapsed:.0f} s in all")
    return 0


def _add_compress_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="lenet300", choices=("lenet300", "lenet5"), help="network")
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"), help="dataset")
    parser.add_argument("--source", default="auto", help="data source (see `dclab train --help`)")
    parser.add_argument("--preset", default="dclab",
                        help="per-layer settings from dclab.presets: paper or dclab (default: dclab)")
    parser.add_argument("--keep", default=None, help="per-layer kept fractions, e.g. ip1=0.05,ip2=0.08")
    parser.add_argument("--bits", default=None, help="per-layer codebook bits, e.g. ip1=5,ip3=6")
    parser.add_argument("--index-bits", type=int, default=None, help="relative-index bits for every layer")
    parser.add_argument("--baseline", default="trained",
                        help="trained (the shipped checkpoint, bundled MNIST only), train, or a state-dict path")
    parser.add_argument("--prune-rounds", type=int, default=3, help="iterative pruning rounds (default: 3)")
    parser.add_argument("--prune-epochs", type=int, default=3, help="retraining epochs per round (default: 3)")
    parser.add_argument("--prune-final-epochs", type=int, default=8,
                        help="retraining epochs in the last round, at the target sparsity (default: 8)")
    parser.add_argument("--prune-lr", type=float, default=0.02, help="retraining learning rate (default: 0.02)")
    parser.add_argument("--prune-weight-decay", type=float, default=5e-4,
                        help="retraining weight decay (default: 0.0005)")
    parser.add_argument("--quant-epochs", type=int, default=4, help="centroid fine-tuning epochs (default: 4)")
    parser.add_argument("--quant-lr", type=float, default=1e-3, help="fine-tuning learning rate (default: 0.001)")
    parser.add_argument("--reduction", default="sum", choices=("sum", "mean"),
                        help="centroid gradient: sum (the paper's rule) or mean")
    parser.add_argument("--init", default="linear", choices=("linear", "density", "random", "kmeans++"),
                        help="centroid initialization (default: linear)")
    parser.add_argument("--out", default="compressed.dcz", help="compressed file to write")
    parser.add_argument("--run-dir", default=None, help="folder for stage checkpoints (dense.pt, pruned.pt, ...)")
    parser.add_argument("--resume-from", default=None, choices=("dense", "pruned", "quantized"),
                        help="start from this stage's checkpoint in --run-dir")
    parser.add_argument("--device", default=None, help="cpu (default), cuda, or auto")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _cmd_demo(args: argparse.Namespace) -> int:
    defaults = argparse.Namespace(
        model="lenet300", dataset="mnist", source="bundled", preset="dclab", keep=None, bits=None,
        index_bits=None, baseline="trained", prune_rounds=3, prune_epochs=3, prune_final_epochs=8, prune_lr=0.02,
        prune_weight_decay=5e-4, quant_epochs=4,
        quant_lr=1e-3, reduction="sum", init="linear", out=args.out, run_dir=None, resume_from=None,
        device=args.device, seed=args.seed, quiet=args.quiet,
    )
    return run_compress(defaults)


def _add_parsers(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("compress", help="prune, quantize and Huffman-code a LeNet; write and verify the file")
    _add_compress_options(p)
    p.set_defaults(func=run_compress)

    p = commands.add_parser("demo", help="the main job: the whole pipeline on LeNet-300-100 with bundled MNIST")
    p.add_argument("--out", default="lenet300.dcz", help="compressed file to write (default: lenet300.dcz)")
    p.add_argument("--device", default=None, help="cpu (default), cuda, or auto")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_cmd_demo)


register_command(_add_parsers)
