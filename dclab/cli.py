"""The ``dclab`` command line: ``dclab --help`` lists the commands."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["main", "build_parser", "register_command"]

log = logging.getLogger("dclab")

# Commands contributed by other modules: name -> function that adds a subparser.
_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def register_command(add_parser: Callable[[argparse._SubParsersAction], None]) -> None:
    """Register a function that adds one subcommand (it sets ``func`` on its parser)."""
    _EXTRA_COMMANDS.append(add_parser)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None,
                        help="torch device: cpu (default), cuda, cuda:1, or auto (cuda when present)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"),
                        help="dataset (default: mnist)")
    parser.add_argument("--source", default="auto",
                        help="mnist: auto, bundled or torchvision; fashion-mnist: auto, torchvision, debian or a "
                             "folder of IDX files (default: auto; quick mode forces the bundled MNIST subset)")


def load_dataset(name: str, source: str = "auto"):
    """Load ``mnist`` or ``fashion-mnist`` as train/validation/test splits."""
    from dclab import data

    if name == "mnist":
        return data.load_mnist(source)
    if name == "fashion-mnist":
        return data.load_fashion_mnist(source)
    raise ValueError(f"unknown dataset {name!r}; use mnist or fashion-mnist")


def _cmd_train(args: argparse.Namespace) -> int:
    from dclab import config, data, train

    device = config.resolve_device(args.device)
    splits = load_dataset(args.dataset, args.source)
    print(splits.describe())
    start = time.perf_counter()
    model, history = train.train_baseline(
        args.model, splits, seed=args.seed, epochs=args.epochs, lr=args.lr, device=device, progress=not args.quiet
    )
    elapsed = time.perf_counter() - start
    test = train.evaluate(model, data.make_loader(splits.test, 1000), device)
    last = history[-1] if history else {}
    print(f"{args.model} seed {args.seed}: {len(history)} epochs in {elapsed:.1f} s, "
          f"validation top-1 {100 * last.get('val_top1', float('nan')):.2f}%, "
          f"test top-1 {100 * test['top1']:.2f}% on {test['count']} images")
    if args.out:
        path = train.save_checkpoint(model, args.out)
        print(f"saved state dict to {path}")
    return 0


def _cmd_make_checkpoints(args: argparse.Namespace) -> int:
    from dclab import checkpoints

    for name in args.models:
        out_dir = Path(args.out_dir) if args.out_dir else None
        checkpoints.make_checkpoint(name, seed=args.seed, out_dir=out_dir, progress=not args.quiet)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from dclab import models

    for name in args.models:
        model = models.build_model(name, weights="random")
        print(f"{name}: {models.count_parameters(model):,} parameters")
        for paper_name, layer in models.compressible_layers(model).items():
            bias = layer.bias.numel() if layer.bias is not None else 0
            print(f"  {paper_name:8s} weight {tuple(layer.weight.shape)} = {layer.weight.numel():,}, bias {bias:,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="dclab",
        description="Deep Compression lab: pruning, trained quantization and Huffman coding.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="hide progress bars and info logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("train", help="train a dense LeNet and report test accuracy")
    p.add_argument("--model", default="lenet300", choices=("lenet300", "lenet5"), help="network (default: lenet300)")
    _add_dataset(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the model's baseline recipe)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: the recipe's)")
    p.add_argument("--out", default=None, help="write the trained state dict to this .pt file")
    _add_common(p)
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser("make-checkpoints",
                            help="retrain the LeNet checkpoints that ship with dclab on the bundled MNIST subset")
    p.add_argument("models", nargs="*", default=["lenet300", "lenet5"], help="models (default: both LeNets)")
    p.add_argument("--out-dir", default=None, help="folder to write to (default: the installed package's)")
    _add_common(p)
    p.set_defaults(func=_cmd_make_checkpoints)

    p = commands.add_parser("info", help="print each network's layers under the paper's names")
    p.add_argument("models", nargs="*", default=["lenet300", "lenet5", "alexnet", "vgg16"])
    p.set_defaults(func=_cmd_info)

    for add_parser in _EXTRA_COMMANDS:
        add_parser(commands)
    return parser


def _load_plugins() -> None:
    """Import the modules that register further commands; a missing one is skipped."""
    import importlib

    for module in ("dclab.pipeline_cli", "dclab.grading_cli", "dclab.course", "dclab.fullscale_cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    _load_plugins()
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    from dclab.data import DatasetError

    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, DatasetError) as error:
        # Expected user errors (bad names, missing files): one line, no traceback.
        print(f"dclab {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
