"""Seeded training and evaluation loops, and state-dict checkpoints.

Every compression stage retrains through :func:`train`: pruning passes an
``after_step`` hook that keeps pruned weights at zero, and quantization one
that keeps weights equal to their codebook entries.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dclab import config

__all__ = [
    "set_seed",
    "make_optimizer",
    "train",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "BASELINE_RECIPES",
    "train_baseline",
]

log = logging.getLogger(__name__)

AfterStep = Callable[[nn.Module], None]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so that two runs give identical weights."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str = "sgd",
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Build an SGD (with momentum) or Adam optimizer.

    Raises:
        ValueError: unknown optimizer name or a non-positive learning rate.
    """
    if lr <= 0:
        raise ValueError(f"learning rate {lr} must be positive")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use 'sgd' or 'adam'")


def train(
    model: nn.Module,
    train_loader: DataLoader,
    *,
    epochs: int,
    lr: float = 0.01,
    optimizer: str | torch.optim.Optimizer = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    val_loader: DataLoader | None = None,
    device: str | torch.device | None = None,
    after_step: AfterStep | None = None,
    lr_schedule: str = "cosine",
    progress: bool = True,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train ``model`` with cross-entropy and return one history row per epoch.

    Args:
        epochs: passes over ``train_loader``; capped at 2 in quick mode.
        optimizer: ``"sgd"``, ``"adam"``, or a ready optimizer (then ``lr``,
            ``momentum`` and ``weight_decay`` are ignored).
        after_step: called with the model after every optimizer step, for
            example to keep pruned weights at zero.
        lr_schedule: ``"cosine"`` (anneal to 0 over all steps) or ``"constant"``.

    Returns:
        A list of ``{"epoch", "loss", "train_top1", "val_top1"}`` dicts
        (``val_top1`` only when ``val_loader`` is given); accuracies are fractions.
    """
    if epochs < 0:
        raise ValueError(f"epochs={epochs} is negative")
    epochs = config.limit_epochs(epochs)
    device = config.resolve_device(device)
    model.to(device)
    if isinstance(optimizer, str):
        optimizer = make_optimizer(
            [p for p in model.parameters() if p.requires_grad], optimizer, lr, momentum, weight_decay
        )
    scheduler = _make_scheduler(optimizer, lr_schedule, epochs * len(train_loader))

    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        batches = tqdm(train_loader, desc=f"{desc} epoch {epoch}/{epochs}", disable=not progress, leave=False)
        for step, (images, labels) in enumerate(batches):
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(model)
            scheduler.step()

            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
            if step % 20 == 0:  # refreshing every step floods logs that are not terminals
                batches.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)

        row = {"epoch": epoch, "loss": total_loss / max(seen, 1), "train_top1": correct / max(seen, 1)}
        if val_loader is not None:
            row["val_top1"] = evaluate(model, val_loader, device)["top1"]
        log.info("%s epoch %d/%d: %s", desc, epoch, epochs, ", ".join(f"{k}={v:.4f}" for k, v in row.items()))
        history.append(row)
    return history


def _make_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int):
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"unknown lr_schedule {name!r}; use 'cosine' or 'constant'")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: str | torch.device | None = None,
    topk: tuple[int, ...] = (1,),
) -> dict[str, float]:
    """Measure mean cross-entropy and top-k accuracy (fractions in [0, 1]) on ``loader``.

    Returns:
        ``{"loss", "count", "top1", ...}`` with one ``top{k}`` entry per requested k.
    """
    device = config.resolve_device(device)
    was_training = model.training
    model.to(device).eval()
    hits = {k: 0 for k in topk}
    total_loss, count = 0.0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        count += len(labels)
        ranked = logits.topk(min(max(topk), logits.shape[1]), dim=1).indices  # (N, max k)
        for k in topk:
            hits[k] += (ranked[:, :k] == labels[:, None]).any(dim=1).sum().item()
    model.train(was_training)
    if count == 0:
        raise ValueError("cannot evaluate on an empty loader")
    result = {"loss": total_loss / count, "count": count}
    result.update({f"top{k}": hits[k] / count for k in topk})
    return result


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Save the model's state dict (tensors only, loadable with ``weights_only=True``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    torch.save(state, path)
    return path


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load a state dict saved by :func:`save_checkpoint` into ``model`` (no pickled code is run).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=strict)
    return model


# Dense baseline recipes, tuned on the bundled MNIST subset's validation images
# (cosine learning-rate schedule, batch size 64). LeNet-5 diverges at lr=0.05
# for some seeds because its conv layers have no ReLU, so it gets a smaller rate.
BASELINE_RECIPES: dict[str, dict[str, float]] = {
    "lenet300": {"epochs": 30, "lr": 0.05, "batch_size": 64, "momentum": 0.9, "weight_decay": 5e-4},
    "lenet5": {"epochs": 20, "lr": 0.02, "batch_size": 64, "momentum": 0.9, "weight_decay": 5e-4},
}


def train_baseline(
    name: str,
    splits,
    seed: int = 0,
    epochs: int | None = None,
    lr: float | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train a dense LeNet from scratch with its baseline recipe; return the model and its history.

    ``epochs`` and ``lr`` override the recipe in :data:`BASELINE_RECIPES`.
    """
    from dclab.data import make_loader
    from dclab.models import build_model

    if name not in BASELINE_RECIPES:
        raise ValueError(f"no baseline recipe for {name!r}; dclab trains {', '.join(BASELINE_RECIPES)} from scratch")
    recipe = dict(BASELINE_RECIPES[name])
    if epochs is not None:
        recipe["epochs"] = epochs
    if lr is not None:
        recipe["lr"] = lr
    set_seed(seed)
    model = build_model(name, weights="random")
    loader = make_loader(splits.train, int(recipe["batch_size"]), shuffle=True, seed=seed)
    history = train(
        model,
        loader,
        epochs=int(recipe["epochs"]),
        lr=recipe["lr"],
        momentum=recipe["momentum"],
        weight_decay=recipe["weight_decay"],
        val_loader=make_loader(splits.val, 1000),
        device=device,
        progress=progress,
        desc=f"{name} seed {seed}",
    )
    return model, history
