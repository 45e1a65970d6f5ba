"""Benchmark dclab.huffman against the pure-Python dahuffman package.

Both code the same seeded stream: symbols from a discretized Laplace
distribution over 32 values (the shape of quantized weight codes). The
report gives encode and decode throughput, coded size, and bits per symbol
beside the stream's Shannon entropy. dclab's times are the best of
``--repeats`` runs; dahuffman runs once, because it takes seconds.

Run from the repository root::

    python benchmarks/bench_huffman.py --output benchmarks/results/huffman.md

``--dahuffman-symbols N`` times dahuffman on the first N symbols only and
scales its times linearly to the full stream; the output states the scaling.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from dclab import huffman


def laplace_symbols(count: int, alphabet: int, scale: float, seed: int) -> np.ndarray:
    """Return ``count`` symbols in ``[0, alphabet)``: a rounded Laplace(0, scale) centred in the alphabet."""
    rng = np.random.default_rng(seed)
    half = alphabet // 2
    values = np.clip(np.round(rng.laplace(0.0, scale, count)), -half, alphabet - half - 1)
    return (values + half).astype(np.uint8 if alphabet <= 256 else np.uint16)


def entropy_bits(symbols: np.ndarray) -> float:
    """Shannon entropy of the stream's empirical distribution, in bits per symbol."""
    counts = np.bincount(symbols)
    p = counts[counts > 0] / symbols.size
    return float(-(p * np.log2(p)).sum())


class Timer:
    """Wall-clock and CPU seconds of a block (CPU time is less disturbed by other processes)."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def best_time(function, repeats: int) -> tuple[Timer, object]:
    """Run ``function`` ``repeats`` times; return the fastest run's timer (by CPU time) and its result."""
    best, result = None, None
    for _ in range(repeats):
        with Timer() as timer:
            result = function()
        if best is None or timer.cpu < best.cpu:
            best = timer
    return best, result


def run_dclab(symbols: np.ndarray, repeats: int) -> dict:
    encode, stream = best_time(lambda: huffman.encode(symbols), repeats)
    decode, (decoded, _) = best_time(lambda: huffman.decode(stream), repeats)
    if not np.array_equal(decoded, symbols):
        raise RuntimeError("dclab round trip failed")
    sizes = huffman.stream_sizes(stream)
    return {"encode": encode, "decode": decode, "bytes": len(stream),
            "code_bytes": sizes.code_bytes, "table_bytes": sizes.table_bytes}


def run_dahuffman(symbols: np.ndarray) -> dict:
    from dahuffman import HuffmanCodec

    values = symbols.tolist()
    with Timer() as build:
        codec = HuffmanCodec.from_data(values)
    with Timer() as encode:
        encoded = codec.encode(values)
    with Timer() as decode:
        decoded = codec.decode(encoded)
    if decoded != values:
        raise RuntimeError("dahuffman round trip failed")
    # dahuffman keeps its code table outside the encoded bytes; codec.save() pickles it.
    table = pickle.dumps({"code_table": codec.get_code_table(), "type": type(codec), "concat": list})
    return {"build": build, "encode": encode, "decode": decode,
            "code_bytes": len(encoded), "table_bytes": len(table)}


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}; "
            f"1-minute load average {load:.1f} at the end of the run")


def report(args, symbols, ours, theirs, scale_factor) -> str:
    n = symbols.size
    entropy = entropy_bits(symbols)
    rows = []
    for clock in ("wall", "cpu"):
        ours_encode = getattr(ours["encode"], clock)
        ours_decode = getattr(ours["decode"], clock)
        their_encode = (getattr(theirs["build"], clock) + getattr(theirs["encode"], clock)) * scale_factor
        their_decode = getattr(theirs["decode"], clock) * scale_factor
        label = "wall-clock" if clock == "wall" else "CPU"
        rows += [
            (f"encode, incl. counting and code table: {label} s (Msymbols/s)",
             f"{ours_encode:.3f} ({n / ours_encode / 1e6:.1f})", f"{their_encode:.2f} ({n / their_encode / 1e6:.2f})",
             f"{their_encode / ours_encode:.1f}x"),
            (f"decode: {label} s (Msymbols/s)",
             f"{ours_decode:.3f} ({n / ours_decode / 1e6:.1f})", f"{their_decode:.2f} ({n / their_decode / 1e6:.2f})",
             f"{their_decode / ours_decode:.1f}x"),
        ]
    their_bytes = theirs["code_bytes"] * scale_factor
    rows += [
        ("code bytes (bit stream)", f"{ours['code_bytes']:,}", f"{their_bytes:,.0f}", ""),
        ("table bytes (dclab: header, code lengths, block lengths; dahuffman: pickled code table)",
         f"{ours['table_bytes']:,}", f"{theirs['table_bytes']:,}", ""),
        ("total bytes", f"{ours['bytes']:,}", f"{their_bytes + theirs['table_bytes']:,.0f}", ""),
        ("bits per symbol, code bytes only", f"{8 * ours['code_bytes'] / n:.4f}", f"{8 * their_bytes / n:.4f}", ""),
        ("bits per symbol, total bytes", f"{8 * ours['bytes'] / n:.4f}",
         f"{8 * (their_bytes + theirs['table_bytes']) / n:.4f}", ""),
    ]
    note = "" if scale_factor == 1 else f", timed on {args.dahuffman_symbols:,} symbols and scaled x{scale_factor:g}"
    lines = [
        "## Huffman coding: dclab.huffman against dahuffman",
        "",
        f"Stream: {n:,} symbols, rounded Laplace(0, {args.scale:g}) over {args.alphabet} symbols, seed {args.seed}; "
        f"Shannon entropy {entropy:.4f} bits per symbol.",
        f"dclab: fastest of {args.repeats} runs by CPU time. dahuffman {_dahuffman_version()}: one run{note}.",
        "",
        "| measure | dclab | dahuffman | dclab speed-up |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        f"Command (from the repository root): `{' '.join(['python benchmarks/bench_huffman.py', *args.argv])}`",
        "",
        f"Machine: {machine()}.",
        "",
    ]
    return "\n".join(lines)


def _dahuffman_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dahuffman")
    except PackageNotFoundError:
        return "(version unknown)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10_000_000, help="stream length (default 10,000,000)")
    parser.add_argument("--alphabet", type=int, default=32, help="number of distinct symbols (default 32)")
    parser.add_argument("--scale", type=float, default=3.0, help="Laplace scale in symbols (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--repeats", type=int, default=5, help="dclab runs; the best counts (default 5)")
    parser.add_argument("--dahuffman-symbols", type=int, default=None,
                        help="time dahuffman on this prefix and scale linearly (default: the whole stream)")
    parser.add_argument("--output", type=Path, default=None, help="write the markdown section to this file")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else os.sys.argv[1:]

    symbols = laplace_symbols(args.symbols, args.alphabet, args.scale, args.seed)
    ours = run_dclab(symbols, args.repeats)
    prefix = args.dahuffman_symbols or args.symbols
    theirs = run_dahuffman(symbols[:prefix])
    text = report(args, symbols, ours, theirs, args.symbols / prefix)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


if __name__ == "__main__":
    main()
