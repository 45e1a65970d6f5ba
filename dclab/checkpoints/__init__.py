"""Trained LeNet checkpoints that ship with dclab, and the command that regenerates them.

``lenet300.pt`` and ``lenet5.pt`` are state dicts trained on the bundled MNIST
subset with :data:`dclab.train.BASELINE_RECIPES`; ``checkpoints.json``
records the seed, recipe and the accuracies they reached, which a test checks.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

__all__ = ["make_checkpoint", "checkpoint_record", "RECORD_FILE"]

log = logging.getLogger(__name__)

RECORD_FILE = "checkpoints.json"


def _package_dir() -> Path:
    return Path(str(resources.files("dclab") / "checkpoints"))


def checkpoint_record(name: str) -> dict:
    """Return the recorded seed, recipe and accuracies of a shipped checkpoint."""
    records = json.loads((_package_dir() / RECORD_FILE).read_text())
    if name not in records:
        raise KeyError(f"no shipped checkpoint record for {name!r}; known: {', '.join(records)}")
    return records[name]


def make_checkpoint(name: str, seed: int = 0, out_dir: Path | None = None, progress: bool = True) -> dict:
    """Train ``name`` on the bundled MNIST subset, save its state dict and record its accuracy.

    Returns:
        The record written to ``checkpoints.json``.
    """
    from dclab import data, train

    out_dir = out_dir or _package_dir()
    splits = data.load_bundled_mnist()
    model, history = train.train_baseline(name, splits, seed=seed, progress=progress)
    test = train.evaluate(model, data.make_loader(splits.test, 1000))
    path = train.save_checkpoint(model, out_dir / f"{name}.pt")

    record_path = out_dir / RECORD_FILE
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    records[name] = {
        "seed": seed,
        "recipe": train.BASELINE_RECIPES[name],
        "dataset": splits.source,
        "val_top1": round(history[-1]["val_top1"], 4),
        "test_top1": round(test["top1"], 4),
    }
    record_path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    print(f"{name}: test top-1 {100 * test['top1']:.2f}%, saved to {path}")
    return records[name]
