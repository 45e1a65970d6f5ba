"""Sweep how much a preset keeps and draw final accuracy against compression ratio.

Each point runs the whole pipeline from the same dense baseline with every
layer's kept fraction multiplied by one factor (bits and index bits as in
the preset). Example (LeNet-300-100 on the full Fashion-MNIST):

    python benchmarks/tradeoff_curve.py --dataset fashion-mnist --model lenet300 \
        --factors 3 2 1.5 1 0.7 0.5 --baseline-epochs 10 --prune-epochs 1 \
        --prune-final-epochs 3 --quant-epochs 1 --png docs/img/fashion-tradeoff.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from dclab import data, train  # noqa: E402
from dclab.pipeline import PipelineConfig, compress  # noqa: E402
from dclab.presets import get_preset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=("mnist", "fashion-mnist"))
    parser.add_argument("--source", default="auto")
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--preset", default="dclab")
    parser.add_argument("--factors", nargs="+", type=float, default=[3, 2, 1.5, 1, 0.7, 0.5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-epochs", type=int, default=None)
    parser.add_argument("--prune-epochs", type=int, default=3)
    parser.add_argument("--prune-final-epochs", type=int, default=8)
    parser.add_argument("--quant-epochs", type=int, default=4)
    parser.add_argument("--png", type=Path, required=True, help="where to write the figure")
    args = parser.parse_args(argv)

    splits = data.load_mnist(args.source) if args.dataset == "mnist" else data.load_fashion_mnist(args.source)
    work = Path(tempfile.mkdtemp(prefix="dclab-tradeoff-"))
    baseline, _ = train.train_baseline(args.model, splits, seed=args.seed, epochs=args.baseline_epochs,
                                       progress=False)
    baseline_path = train.save_checkpoint(baseline, work / "dense.pt")
    preset = get_preset(args.model, args.preset)

    points = []
    print("| Keep factor | Weights kept | Dense top-1 (%) | Final top-1 (%) | File (bytes) | Ratio |")
    print("|---|---|---|---|---|---|")
    for factor in args.factors:
        layers = {name: replace(s, keep=min(1.0, s.keep * factor)) for name, s in preset.layers.items()}
        scaled = replace(preset, name=f"{preset.name} x{factor:g}", layers=layers)
        cfg = PipelineConfig(
            network=args.model, dataset=args.dataset, source=args.source, preset=scaled, seed=args.seed,
            baseline=str(baseline_path), prune_epochs=args.prune_epochs, prune_final_epochs=args.prune_final_epochs,
            quant_epochs=args.quant_epochs, out=work / f"x{factor:g}.dcz", progress=False,
        )
        result = compress(cfg, splits=splits)
        dense, final = result.stage("dense"), result.stage("huffman")
        points.append((final.ratio, final.top1, dense.top1))
        print(f"| {factor:g} | {100 * final.keep:.1f}% | {100 * dense.top1:.2f} | {100 * final.top1:.2f} "
              f"| {result.file_bytes:,} | {final.ratio:.1f}x |", flush=True)

    figure = Figure(figsize=(6, 4), dpi=90)
    ax = figure.add_subplot()
    points.sort()
    ax.plot([p[0] for p in points], [100 * p[1] for p in points], "o-", label="pruned + quantized + Huffman")
    ax.axhline(100 * points[0][2], linestyle=":", color="gray", label="dense baseline")
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (dense float32 bytes / file bytes)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{args.model} on {splits.name}, preset {args.preset}, kept fractions scaled")
    ax.legend()
    figure.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
