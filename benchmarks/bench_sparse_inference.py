"""Time pruned fully connected layers as CSR against dense at batch size 1 (AlexNet and VGG-16 shapes).

For fc6, fc7 and fc8 of both networks, a layer with random weights is pruned
by magnitude to the paper's kept fraction and timed twice on the same input
vector: dense ``nn.Linear`` (all weights, zeros included) and
:class:`dclab.sparse_inference.SparseLinear` (torch's CSR kernel on the kept
weights only, int32 indices). Each time is the median of
``torch.utils.benchmark.Timer.blocked_autorange``. Deep Compression (Han,
Mao, Dally, ICLR 2016) reported pruned fc layers about 3x faster than dense
on a CPU at batch size 1.

Usage:
    python benchmarks/bench_sparse_inference.py
    python benchmarks/bench_sparse_inference.py --threads 1 2 --results benchmarks/results/sparse_inference.md
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn
from torch.utils import benchmark

from dclab.fullscale import prune_tensor
from dclab.models import build_model, compressible_layers
from dclab.presets import get_preset
from dclab.sparse_inference import SparseLinear
from machine import cpu_model  # benchmarks/machine.py; scripts run from benchmarks/

LAYERS = ("fc6", "fc7", "fc8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["alexnet", "vgg16"], choices=("alexnet", "vgg16"))
    parser.add_argument("--threads", nargs="+", type=int, default=[torch.get_num_threads()],
                        help="torch thread counts to time (default: torch's default)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default: 1, as in the paper)")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per measurement")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the input")
    parser.add_argument("--results", default=None, help="write the markdown section to this file")
    return parser.parse_args(argv)


def layer_shapes(network: str) -> dict[str, tuple[int, int]]:
    """Return the (out, in) shapes of a network's fc layers, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = build_model(network, weights="random")
    layers = compressible_layers(model)
    return {name: tuple(layers[name].weight.shape) for name in LAYERS}


def median_seconds(module: nn.Module, x: torch.Tensor, min_time: float) -> float:
    timer = benchmark.Timer("module(x)", globals={"module": module, "x": x})
    return timer.blocked_autorange(min_run_time=min_time).median


@torch.no_grad()
def measure(network: str, name: str, shape: tuple[int, int], keep: float, args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(args.seed)
    dense = nn.Linear(shape[1], shape[0])
    prune_tensor(dense.weight.data, keep)
    sparse = SparseLinear.from_linear(dense)
    x = torch.randn(args.batch, shape[1])
    if not torch.allclose(sparse(x), dense(x), rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"{network} {name}: CSR output differs from dense")
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        dense_s = median_seconds(dense, x, args.min_time)
        sparse_s = median_seconds(sparse, x, args.min_time)
        rows.append({"network": network, "layer": name, "shape": shape, "keep": sparse.nnz / (shape[0] * shape[1]),
                     "threads": threads, "dense_s": dense_s, "sparse_s": sparse_s})
        print(f"{network} {name} {shape[0]}x{shape[1]} kept {100 * rows[-1]['keep']:.1f}%, {threads} threads: "
              f"dense {1e6 * dense_s:.0f} us, CSR {1e6 * sparse_s:.0f} us, {dense_s / sparse_s:.2f}x", flush=True)
    return rows




def format_section(rows: list[dict], args: argparse.Namespace, load: tuple[float, float]) -> str:
    lines = [
        "## Sparse (CSR) against dense fully connected layers at batch size 1",
        "",
        f"`python benchmarks/bench_sparse_inference.py --threads {' '.join(map(str, args.threads))}` on "
        f"{cpu_model()}, {os.cpu_count()} CPUs visible; torch {torch.__version__} "
        f"(MKL: {torch.backends.mkl.is_available()}). Random weights pruned by magnitude to the paper's kept "
        f"fractions; batch size {args.batch}; medians of `torch.utils.benchmark` (at least {args.min_time:g} s "
        f"each). 1-minute load average before / after: {load[0]:.1f} / {load[1]:.1f}. The paper measured about "
        "3x on a CPU.",
        "",
        "| Network | Layer | Shape | Kept | Threads | Dense µs | CSR µs | Speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['network']} | {row['layer']} | {row['shape'][0]}x{row['shape'][1]} | {100 * row['keep']:.1f}% "
            f"| {row['threads']} | {1e6 * row['dense_s']:.0f} | {1e6 * row['sparse_s']:.0f} "
            f"| {row['dense_s'] / row['sparse_s']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for network in args.networks:
        preset = get_preset(network, "paper")
        for name, shape in layer_shapes(network).items():
            rows += measure(network, name, shape, preset.layer(name).keep, args)
    text = format_section(rows, args, (load_before[0], os.getloadavg()[0]))
    print()
    print(text)
    if args.results:
        with open(args.results, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
