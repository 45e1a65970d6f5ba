"""``dclab fullscale``: post-training compression of full-size AlexNet or VGG-16 on a CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dclab.cli import register_command

__all__ = ["run_fullscale_command"]


def run_fullscale_command(args: argparse.Namespace) -> int:
    """Compress, write, read back and verify; print the per-layer tables (and write them with --report)."""
    from dclab.fullscale import cpu_seconds, format_result, peak_rss_bytes, run_fullscale

    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = run_fullscale(
        args.model,
        weights=args.weights,
        out=args.out,
        imagenet=args.imagenet,
        subset=args.subset,
        preset=args.preset,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.quiet,
    )
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    text = format_result(result)
    print(text)
    print()
    print(f"{args.model}: {elapsed:.1f} s wall, {cpu:.1f} s CPU, peak resident memory "
          f"{peak_rss_bytes() / 2**30:.2f} GiB")
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"wrote the tables to {path}")
    return 0


def _add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "fullscale",
        help="prune, quantize and Huffman-code full-size AlexNet or VGG-16 without retraining; verify the file",
    )
    p.add_argument("--model", default="alexnet", choices=("alexnet", "vgg16"), help="network (default: alexnet)")
    p.add_argument("--weights", required=True,
                   help="random (torchvision's initialization), pretrained (torchvision's ImageNet weights, "
                        "from torch's cache) or a state-dict file")
    p.add_argument("--out", default=None, help="compressed file to write (default: keep it in memory)")
    p.add_argument("--imagenet", default=None,
                   help="ImageNet validation folder (ImageFolder layout); measures top-1/top-5 after every stage")
    p.add_argument("--subset", type=int, default=None,
                   help="evaluate on a fixed, seeded subset of this many images (default: all; 256 in quick mode)")
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size (default: 32)")
    p.add_argument("--preset", default="paper", help="per-layer settings from dclab.presets (default: paper)")
    p.add_argument("--report", default=None, help="also write the markdown tables to this file")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and the subset (default: 0)")
    p.set_defaults(func=run_fullscale_command)


register_command(_add_parser)
