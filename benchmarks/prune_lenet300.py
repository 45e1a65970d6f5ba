"""Prune LeNet-300-100 to the paper's kept fractions, retrain, and compare test accuracy with the dense model.

Deep Compression (Han, Mao, Dally, ICLR 2016) keeps 8% of ip1, 9% of ip2 and
26% of ip3 (Table 2), and its compressed LeNet-300-100 has 1.58% test error
against 1.64% dense (Table 1). This script starts from the
trained LeNet-300-100 that ships with dclab, or with ``--start fresh`` trains
a dense one per seed. It prunes the model iteratively with masked retraining
on the bundled MNIST subset (3,500 train / 500 validation / 1,000 test
images) and prints the dense and pruned test accuracy per seed and their means.

Usage:
    python benchmarks/prune_lenet300.py --seeds 0 1 2 --rounds 3 --epochs 3 --final-epochs 8 --lr 0.02
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

from dclab.data import load_mnist, make_loader
from dclab.models import PretrainedWeightsMissing, build_model
from dclab.prune import sparsity_report
from dclab.sensitivity import iterative_prune
from dclab.train import evaluate, set_seed, train


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds, one run each (default: 0 1 2)")
    parser.add_argument("--rounds", type=int, default=3, help="pruning rounds (default: 3)")
    parser.add_argument("--epochs", type=int, default=3, help="retraining epochs per round (default: 3)")
    parser.add_argument("--final-epochs", type=int, default=8,
                        help="retraining epochs of the last round, at the target sparsity (default: 8)")
    parser.add_argument("--lr", type=float, default=0.02,
                        help="SGD learning rate at the start of each round, cosine-annealed to 0 (default: 0.02)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    parser.add_argument("--weight-decay", type=float, default=5e-4,
                        help="L2 weight decay during retraining (default: 5e-4)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    parser.add_argument("--schedule", choices=["geometric", "linear"], default="geometric",
                        help="how the kept fraction falls over the rounds (default: geometric)")
    parser.add_argument("--start", choices=["auto", "trained", "fresh"], default="auto",
                        help="dense model: the shipped checkpoint (trained), one trained per seed (fresh), "
                             "or the checkpoint when it exists (auto, the default)")
    parser.add_argument("--dense-epochs", type=int, default=30, help="epochs for --start fresh (default: 30)")
    parser.add_argument("--dense-lr", type=float, default=0.05, help="learning rate for --start fresh (default: 0.05)")
    parser.add_argument("--dense-weight-decay", type=float, default=5e-4,
                        help="L2 weight decay for --start fresh, as for the shipped checkpoint (default: 5e-4)")
    return parser.parse_args()


def dense_model(start: str, seed: int, train_loader, args: argparse.Namespace):
    """Return (model, description) for the chosen starting point."""
    if start in ("auto", "trained"):
        try:
            return build_model("lenet300", weights="trained"), "shipped checkpoint"
        except PretrainedWeightsMissing:
            if start == "trained":
                raise
    set_seed(seed)
    model = build_model("lenet300")
    train(model, train_loader, epochs=args.dense_epochs, lr=args.dense_lr, weight_decay=args.dense_weight_decay,
          progress=False, desc="dense")
    return model, f"trained here for {args.dense_epochs} epochs"


def main() -> None:
    args = parse_args()
    splits = load_mnist(source="bundled")
    print(splits.describe())
    val_loader = make_loader(splits.val, batch_size=500)
    test_loader = make_loader(splits.test, batch_size=500)

    results = []
    for seed in args.seeds:
        started = time.perf_counter()
        train_loader = make_loader(splits.train, batch_size=args.batch_size, shuffle=True, seed=seed)
        dense, origin = dense_model(args.start, seed, train_loader, args)
        dense_top1 = evaluate(dense, test_loader)["top1"]

        pruned = copy.deepcopy(dense)
        set_seed(seed)
        history = iterative_prune(
            pruned, train_loader, val_loader, "paper", rounds=args.rounds, epochs_per_round=args.epochs,
            final_epochs=args.final_epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
            schedule=args.schedule, progress=False,
        )
        pruned_top1 = evaluate(pruned, test_loader)["top1"]
        report = sparsity_report(pruned)
        seconds = time.perf_counter() - started
        rounds = ", ".join(f"{row['val_top1']:.3f}" for row in history)
        print(f"seed {seed}: dense ({origin}) {100 * dense_top1:.2f}%, pruned {100 * pruned_top1:.2f}% "
              f"(kept {100 * report.density:.2f}% of parameters, {report.compression_ratio:.1f}x), "
              f"val per round [{rounds}], {seconds:.0f} s")
        results.append((dense_top1, pruned_top1))

    dense_mean = statistics.mean(d for d, _ in results)
    pruned_mean = statistics.mean(p for _, p in results)
    print(f"mean over {len(results)} seeds: dense {100 * dense_mean:.2f}%, pruned {100 * pruned_mean:.2f}%, "
          f"difference {100 * (pruned_mean - dense_mean):+.2f} percentage points")
    print(sparsity_report(pruned))


if __name__ == "__main__":
    main()
