"""Prune LeNet-300-100 to 8% of its weights, quantize it to 6 bits and fine-tune the centroids.

For each seed, starting from dclab's shipped trained checkpoint:

1. prune to Deep Compression's kept fractions (ip1 8%, ip2 9%, ip3 26%: the
   "paper" preset) and retrain with the masks held;
2. quantize every layer to a 6-bit codebook (63 shared values plus the zero
   code), centroids initialized linearly;
3. fine-tune the centroids (and biases) with the summed-gradient rule.

It prints the test accuracy after each stage per seed and the mean over
seeds. The exit status is 1 when the mean fine-tuned accuracy is more than
``--max-drop`` percentage points below the dense accuracy.

Usage:
    python benchmarks/quantize_lenet300.py                     # seeds 0 1 2, bundled MNIST
    python benchmarks/quantize_lenet300.py --seeds 0 --prune-epochs 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from dclab.data import load_mnist, make_loader
from dclab.kmeans import INIT_METHODS
from dclab.models import build_model
from dclab.prune import enforce_masks, prune_to_preset, sparsity_report
from dclab.quantize import REDUCTIONS, fine_tune, quantize_model
from dclab.train import evaluate, set_seed, train

STAGES = ("dense", "pruned", "quantized", "fine-tuned")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the retraining batch order and of random k-means inits")
    parser.add_argument("--source", default="bundled", choices=["auto", "bundled", "torchvision"],
                        help="MNIST source (see dclab.data.load_mnist)")
    parser.add_argument("--weights", default="trained",
                        help="dense starting point: 'trained' (dclab's shipped checkpoint) or a state-dict file")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--prune-epochs", type=int, default=20, help="retraining epochs after pruning")
    parser.add_argument("--prune-lr", type=float, default=0.05, help="SGD learning rate after pruning")
    parser.add_argument("--weight-decay", type=float, default=5e-4,
                        help="L2 weight decay of both retraining stages (the checkpoint was trained with 5e-4)")
    parser.add_argument("--finetune-epochs", type=int, default=5, help="centroid fine-tuning epochs")
    parser.add_argument("--finetune-lr", type=float, default=1e-4, help="SGD learning rate of the centroids")
    parser.add_argument("--reduction", choices=REDUCTIONS, default="sum", help="centroid gradient: sum or mean")
    parser.add_argument("--init", choices=INIT_METHODS, default="linear", help="centroid initialization")
    parser.add_argument("--bits", default="paper", help="preset name (paper: 6 bits for every layer) or an int")
    parser.add_argument("--max-drop", type=float, default=0.5,
                        help="allowed drop of the mean fine-tuned accuracy below dense, in percentage points")
    return parser.parse_args(argv)


def run_seed(args: argparse.Namespace, seed: int, splits) -> dict[str, float]:
    set_seed(seed)
    train_loader = make_loader(splits.train, args.batch_size, shuffle=True, seed=seed)
    test_loader = make_loader(splits.test, batch_size=500)

    def accuracy() -> float:
        return 100 * evaluate(model, test_loader)["top1"]

    model = build_model("lenet300", weights=args.weights)
    row = {"dense": accuracy()}

    prune_to_preset(model, "paper")
    row["pruned, not retrained"] = accuracy()
    train(model, train_loader, epochs=args.prune_epochs, lr=args.prune_lr, weight_decay=args.weight_decay,
          after_step=enforce_masks, progress=False, desc=f"seed {seed} prune retrain")
    row["pruned"] = accuracy()
    row["kept % of params"] = 100 * sparsity_report(model).density

    bits = int(args.bits) if args.bits.isdigit() else args.bits
    quantize_model(model, bits, init=args.init, seed=seed)
    row["quantized"] = accuracy()
    fine_tune(model, train_loader, epochs=args.finetune_epochs, lr=args.finetune_lr, reduction=args.reduction,
              weight_decay=args.weight_decay, progress=False, desc=f"seed {seed} fine-tune")
    row["fine-tuned"] = accuracy()
    return row


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    splits = load_mnist(args.source)
    print(f"data: {splits.source}; {len(splits.train)} train / {len(splits.test)} test images")
    print(f"settings: {vars(args)}")
    print()

    columns = ["dense", "pruned, not retrained", "pruned", "quantized", "fine-tuned", "kept % of params"]
    print("| seed | " + " | ".join(columns) + " | seconds |")
    print("|---" * (len(columns) + 2) + "|")
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        row = run_seed(args, seed, splits)
        rows.append(row)
        cells = " | ".join(f"{row[c]:.2f}" for c in columns)
        print(f"| {seed} | {cells} | {time.perf_counter() - start:.0f} |", flush=True)
    mean = {c: float(np.mean([row[c] for row in rows])) for c in columns}
    print("| mean | " + " | ".join(f"{mean[c]:.2f}" for c in columns) + " | |")
    print()

    drop = mean["dense"] - mean["fine-tuned"]
    print(f"test accuracy in %; fine-tuned mean is {drop:+.2f} points below dense "
          f"(allowed: {args.max_drop:g}); quantization alone cost {mean['pruned'] - mean['quantized']:+.2f} points "
          "before fine-tuning")
    if drop > args.max_drop:
        print("FAIL")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
