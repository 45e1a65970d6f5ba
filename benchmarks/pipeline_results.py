"""Run the whole pipeline over seeds and presets and print the results table of docs/results.md.

For each seed a dense baseline is trained once (with that seed) and then
compressed with every preset, so the presets are compared on the same
baselines. Example (the bundled MNIST subset, both LeNets, 3 seeds):

    python benchmarks/pipeline_results.py --dataset mnist --source bundled \
        --models lenet300 lenet5 --seeds 0 1 2 --out benchmarks/results/pipeline_mnist.md

Full-size datasets take many more steps per epoch, so ``--baseline-epochs``,
``--prune-epochs`` and ``--quant-epochs`` scale the recipes down there.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dclab import data, train
from dclab.pipeline import PipelineConfig, compress
from dclab.presets import PAPER_HEADLINE
from machine import cpu_model  # benchmarks/machine.py; scripts run from benchmarks/




def _load(dataset: str, source: str) -> data.Splits:
    if dataset == "mnist":
        return data.load_mnist(source)
    return data.load_fashion_mnist(source)


def _mean_spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))
    parser.add_argument("--source", default="auto")
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    parser.add_argument("--presets", nargs="+", default=["paper", "dclab"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--baseline-epochs", type=int, default=None, help="dense epochs (default: the recipe's)")
    parser.add_argument("--prune-rounds", type=int, default=3)
    parser.add_argument("--prune-epochs", type=int, default=3)
    parser.add_argument("--prune-final-epochs", type=int, default=8)
    parser.add_argument("--quant-epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    args = parser.parse_args(argv)

    splits = _load(args.dataset, args.source)
    runs = []
    work = Path(tempfile.mkdtemp(prefix="dclab-results-"))
    for model_name in args.models:
        for seed in args.seeds:
            tic = time.perf_counter()
            baseline, _ = train.train_baseline(model_name, splits, seed=seed, epochs=args.baseline_epochs,
                                               progress=False)
            baseline_path = train.save_checkpoint(baseline, work / f"{model_name}-{seed}.pt")
            baseline_seconds = time.perf_counter() - tic
            for preset in args.presets:
                cfg = PipelineConfig(
                    network=model_name, dataset=args.dataset, source=args.source, preset=preset, seed=seed,
                    baseline=str(baseline_path), prune_rounds=args.prune_rounds, prune_epochs=args.prune_epochs,
                    prune_final_epochs=args.prune_final_epochs,
                    quant_epochs=args.quant_epochs, out=work / f"{model_name}-{preset}-{seed}.dcz", progress=False,
                )
                tic = time.perf_counter()
                result = compress(cfg, splits=splits)
                seconds = time.perf_counter() - tic
                row = {
                    "model": model_name, "preset": preset, "seed": seed,
                    "dense_top1": result.stage("dense").top1,
                    "pruned_top1": result.stage("pruned").top1,
                    "final_top1": result.stage("huffman").top1,
                    "file_bytes": result.file_bytes,
                    "ratio": result.stage("huffman").ratio,
                    "ratio_pq": result.stage("quantized").ratio,
                    "baseline_seconds": baseline_seconds,
                    "compress_seconds": seconds,
                }
                runs.append(row)
                print(json.dumps(row), flush=True)

    lines = [
        f"Data: {splits.describe()}. Machine: {cpu_model()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}.",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        "| Network | Preset | Seeds | Dense top-1 (%) | Final top-1 (%) | Drop (points) | File (bytes) | Ratio "
        "| Paper ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model_name in args.models:
        for preset in args.presets:
            rows = [r for r in runs if r["model"] == model_name and r["preset"] == preset]
            drops = [r["dense_top1"] - r["final_top1"] for r in rows]
            lines.append(
                f"| {model_name} | {preset} | {', '.join(str(r['seed']) for r in rows)} "
                f"| {_mean_spread([r['dense_top1'] for r in rows])} | {_mean_spread([r['final_top1'] for r in rows])} "
                f"| {100 * statistics.mean(drops):.2f} | {statistics.mean(r['file_bytes'] for r in rows):,.0f} "
                f"| {statistics.mean(r['ratio'] for r in rows):.1f}x "
                f"(min {min(r['ratio'] for r in rows):.1f}x) | {PAPER_HEADLINE[model_name]['ratio']}x |"
            )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
