"""Time and measure the memory of full-scale post-training compression (AlexNet, VGG-16) on a CPU.

Each run happens in a fresh child process pinned to ``--cores`` CPU cores
(with as many torch threads), so its peak resident memory (``ru_maxrss``)
belongs to the compression alone. That peak includes the Python
interpreter, torch and torchvision (also measured right after the imports)
and the dense model. A run builds the network with random weights (torchvision's
initialization), prunes, quantizes, encodes the P, P+Q and P+Q+H files,
writes the P+Q+H file, reads it back and verifies it bit for bit
(:func:`dclab.fullscale.run_fullscale`).

The machine's load average is recorded before and after every run, because
the wall time depends on what else runs; CPU time (user + system) does not.

Usage:
    python benchmarks/bench_fullscale.py                         # both networks, 1 run each
    python benchmarks/bench_fullscale.py --networks vgg16 --repeat 3
    python benchmarks/bench_fullscale.py --results benchmarks/results/fullscale.md

Exits with status 1 when VGG-16's best wall time exceeds ``--max-seconds``
or its peak memory exceeds ``--max-gb``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import cpu_model  # benchmarks/machine.py; scripts run from benchmarks/

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["alexnet", "vgg16"], choices=("alexnet", "vgg16"))
    parser.add_argument("--repeat", type=int, default=1, help="runs per network (the best wall time is reported)")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores (and torch threads) per run (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--results", default=None, help="write the markdown section to this file")
    parser.add_argument("--tables", default=None, help="folder for each network's full per-layer report")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="VGG-16 wall-time target (default: 60)")
    parser.add_argument("--max-gb", type=float, default=2.5,
                        help="VGG-16 peak-memory target in GB of 10**9 bytes (default: 2.5)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _pin(cores: int) -> list[int]:
    """Pin this process to the first ``cores`` allowed CPUs; return them."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    chosen = allowed[:cores]
    if chosen:
        os.sched_setaffinity(0, chosen)
    return chosen


def run_child(args: argparse.Namespace) -> None:
    """Compress one network and print one JSON line of measurements."""
    cpus = _pin(args.cores)
    import torch

    torch.set_num_threads(args.cores)
    from dclab.fullscale import cpu_seconds, format_layer_table, format_result, peak_rss_bytes, run_fullscale

    import_rss = peak_rss_bytes()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    out = Path(args.child_dir) / f"{args.child}.dcz"
    result = run_fullscale(args.child, "random", out=out, seed=args.seed, progress=False)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    (Path(args.child_dir) / f"{args.child}.md").write_text(format_result(result) + "\n")
    (Path(args.child_dir) / f"{args.child}-layers.md").write_text(format_layer_table(result) + "\n")
    print(json.dumps({
        "network": args.child,
        "cpus": cpus,
        "threads": torch.get_num_threads(),
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss": peak_rss_bytes(),
        "import_rss": import_rss,
        "rss_by_step": result.peak_rss,
        "steps_s": result.seconds,
        "file_bytes": result.file_bytes,
        "dense_bytes": result.report.dense_bytes,
        "pq_bytes": result.report.total_bytes("quantized"),
        "verified": result.verified,
        "weights": result.weights,
    }))


def run_parent(args: argparse.Namespace) -> int:
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for network in args.networks:
            for repeat in range(args.repeat):
                load_before = os.getloadavg()
                command = [sys.executable, __file__, "--child", network, "--child-dir", folder,
                           "--cores", str(args.cores), "--seed", str(args.seed)]
                env = dict(os.environ, PYTHONPATH=str(ROOT))
                env.pop("DCLAB_QUICK", None)
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return 2
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["load_before"], row["load_after"] = load_before, os.getloadavg()
                print(f"{network} run {repeat + 1}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, "
                      f"peak {row['peak_rss'] / 2**30:.2f} GiB, load {load_before[0]:.1f} -> {row['load_after'][0]:.1f}",
                      flush=True)
                runs.append(row)
            if args.tables:
                Path(args.tables).mkdir(parents=True, exist_ok=True)
                for suffix in (".md", "-layers.md"):
                    source = Path(folder) / f"{network}{suffix}"
                    (Path(args.tables) / source.name).write_text(source.read_text())
        layer_tables = {network: (Path(folder) / f"{network}-layers.md").read_text() for network in args.networks}

    text = format_section(runs, layer_tables, args)
    print()
    print(text)
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(text + "\n")
    return check_targets(runs, args)


def _best(runs: list[dict], network: str) -> dict | None:
    mine = [row for row in runs if row["network"] == network]
    return min(mine, key=lambda row: row["wall_s"]) if mine else None


def check_targets(runs: list[dict], args: argparse.Namespace) -> int:
    best = _best(runs, "vgg16")
    if best is None:
        return 0
    peak = max(row["peak_rss"] for row in runs if row["network"] == "vgg16") / 1e9
    failed = best["wall_s"] > args.max_seconds or peak > args.max_gb
    verdict = "FAIL" if failed else "PASS"
    print(f"{verdict}: VGG-16 best wall {best['wall_s']:.1f} s (target {args.max_seconds:g} s), "
          f"peak memory {peak:.2f} GB (target {args.max_gb:g} GB)")
    return 1 if failed else 0




def format_section(runs: list[dict], layer_tables: dict[str, str], args: argparse.Namespace) -> str:
    import torch

    lines = [
        "## Full-scale post-training compression on a CPU",
        "",
        f"`python benchmarks/bench_fullscale.py --repeat {args.repeat} --cores {args.cores}` on {cpu_model()}, "
        f"{os.cpu_count()} CPUs visible, each run pinned to {args.cores} cores with {args.cores} torch threads; "
        f"torch {torch.__version__}, Python {platform.python_version()}. Weights: random (torchvision's "
        "initialization), so accuracy is not measured. A run: build the network, prune, quantize, encode the "
        "P, P+Q and P+Q+H files, write the P+Q+H file, read it back and verify it bit for bit. Peak memory is "
        "the run's `ru_maxrss`, which includes the imports (the column after it).",
        "",
        "| Network | Run | Wall s | CPU s | Peak memory | After imports | Load before / after | "
        "Build / prune / quantize / encode / verify s | P+Q+H bytes | Ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    counts: dict[str, int] = {}
    for row in runs:
        index = counts.get(row["network"], 0) + 1
        counts[row["network"]] = index
        steps = row["steps_s"]
        step_text = " / ".join(f"{steps.get(k, 0):.1f}" for k in ("build", "prune", "quantize", "encode", "verify"))
        lines.append(
            f"| {row['network']} | {index} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | "
            f"{row['peak_rss'] / 2**30:.2f} GiB | {row['import_rss'] / 2**30:.2f} GiB | "
            f"{row['load_before'][0]:.1f} / {row['load_after'][0]:.1f} | {step_text} | "
            f"{row['file_bytes']:,} | {row['dense_bytes'] / row['file_bytes']:.1f}x |"
        )
    lines.append("")
    lines.append("Load is the 1-minute load average of the whole machine; with 2 cores, a load above 2 means other "
                 "processes were competing for them, which lengthens the wall time but not the CPU time.")
    for network, table in layer_tables.items():
        lines += ["", f"### {network}: P+Q rate per layer (file, analytic for random placement, paper)", "", table.strip()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
