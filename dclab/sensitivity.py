"""Pruning experiments that need data: the sensitivity scan and iterative pruning.

The sensitivity scan prunes one layer at a time, without retraining, and
measures validation accuracy. Layers whose accuracy holds up at high sparsity
can be pruned harder. Iterative pruning alternates pruning and masked
retraining, raising the sparsity over several rounds up to a final kept
fraction per layer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dclab.models import network_of
from dclab.presets import Preset, get_preset
from dclab.prune import (
    MagnitudeThreshold,
    PruneSetting,
    select_layers,
    deepcopy_pruned,
    effective_weight,
    enforce_masks,
    fraction_threshold,
    layer_mask,
    named_layers,
    prune_model,
    sparsity_report,
)
from dclab.train import evaluate, make_optimizer, train

__all__ = ["DEFAULT_SPARSITIES", "sensitivity_scan", "round_keeps", "iterative_prune"]

log = logging.getLogger(__name__)

# Fractions pruned per layer in a sensitivity scan.
DEFAULT_SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


# ---------------------------------------------------------------- sensitivity scan


def sensitivity_scan(
    model: nn.Module,
    val_loader: DataLoader,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    layers: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, float | str]]:
    """Prune each layer alone at several sparsities and measure validation top-1 accuracy.

    The model is left untouched: the scan works on a copy and swaps masks in
    place, with no retraining. A layer that is already pruned keeps its mask
    under every new one, so a requested sparsity below its current one
    measures the current mask (``achieved`` shows what was measured).

    Args:
        sparsities: fractions of each layer's weights to prune, each in [0, 1].
        layers: layer names to scan; all prunable layers when None.

    Returns:
        One row per (layer, sparsity) in scan order: ``{"layer", "sparsity",
        "achieved", "accuracy"}``, where ``achieved`` is the fraction of the
        layer actually pruned and ``accuracy`` is top-1 as a fraction.

    Raises:
        KeyError: an unknown layer name.
        ValueError: a sparsity outside [0, 1].
    """
    for sparsity in sparsities:
        PruneSetting(amount=sparsity)  # validates the range
    work = deepcopy_pruned(model)
    selected = select_layers(work, named_layers(work) if layers is None else layers)
    for module in selected.values():
        if "weight_mask" not in module._buffers:
            torch_prune.identity(module, "weight")  # a mask of ones to swap masks into

    rows = []
    bar = tqdm(total=len(selected) * len(sparsities), desc="sensitivity scan", disable=not progress)
    for name, module in selected.items():
        base_mask = layer_mask(module).clone()
        weight = effective_weight(module)
        for sparsity in sparsities:
            threshold = fraction_threshold(weight, base_mask, sparsity)
            mask = MagnitudeThreshold(threshold).compute_mask(weight, base_mask)
            module.weight_mask.copy_(mask)
            accuracy = evaluate(work, val_loader, device)["top1"]
            achieved = 1.0 - mask.count_nonzero().item() / mask.numel()
            rows.append({"layer": name, "sparsity": float(sparsity), "achieved": achieved, "accuracy": accuracy})
            bar.update()
        module.weight_mask.copy_(base_mask)
    bar.close()
    return rows


# ---------------------------------------------------------------- iterative pruning


def _final_keeps(model: nn.Module, target: Mapping[str, object] | Preset | str) -> dict[str, float]:
    if isinstance(target, str):
        target = get_preset(network_of(model), target)
    if isinstance(target, Preset):
        return {name: setting.keep for name, setting in target.layers.items()}
    keeps = {}
    for name, value in target.items():
        setting = PruneSetting.of(value)
        if setting.fraction_pruned is None:
            raise ValueError(
                f"iterative pruning of {name!r} needs a kept fraction or an amount, not {setting}; "
                "s and absolute thresholds cannot be spread over rounds"
            )
        keeps[name] = 1.0 - setting.fraction_pruned
    return keeps


def round_keeps(final_keep: float, rounds: int, schedule: str = "geometric") -> list[float]:
    """Return the kept fraction after each of ``rounds`` rounds, ending at ``final_keep``.

    ``"geometric"`` prunes the same fraction of the remaining weights in every
    round (keep_r = final_keep ** (r / rounds)); ``"linear"`` prunes the same
    number of weights in every round.

    Raises:
        ValueError: rounds < 1 or an unknown schedule.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be at least 1")
    steps = [r / rounds for r in range(1, rounds + 1)]
    if schedule == "geometric":
        return [final_keep**step for step in steps]
    if schedule == "linear":
        return [1.0 - (1.0 - final_keep) * step for step in steps]
    raise ValueError(f"unknown schedule {schedule!r}; use 'geometric' or 'linear'")


def _history_row(model: nn.Module, round_index: int, val_top1: float, loss: float | None) -> dict[str, object]:
    report = sparsity_report(model)
    weights = sum(layer.weights for layer in report.layers)
    pruned = sum(layer.pruned for layer in report.layers)
    return {
        "round": round_index,
        "keep": {layer.layer: layer.keep for layer in report.layers},
        "sparsity": pruned / weights,
        "compression_ratio": report.compression_ratio,
        "val_top1": val_top1,
        "loss": loss,
    }


def iterative_prune(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    target: Mapping[str, object] | Preset | str = "paper",
    *,
    rounds: int = 3,
    epochs_per_round: int = 2,
    final_epochs: int | None = None,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "geometric",
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, object]]:
    """Prune, retrain with masks, and prune further, reaching the target kept fractions in the last round.

    One optimizer serves all rounds; its learning rate restarts at ``lr`` in
    every round and follows :func:`dclab.train.train`'s cosine schedule, and
    :func:`~dclab.prune.enforce_masks` clears its state at pruned positions.

    Args:
        target: layer name -> final kept fraction (or a setting with
            ``amount``/``keep``), or a preset name or :class:`Preset`.
            Layers not named stay as they are.
        rounds: pruning rounds; each prunes to :func:`round_keeps`'s next
            fraction, then retrains for ``epochs_per_round`` epochs.
        final_epochs: retraining epochs of the last round, at the target
            sparsity; ``epochs_per_round`` when None.

    Returns:
        One dict per round, starting with round 0 (before pruning):
        ``{"round", "keep" (per layer), "sparsity" (over the prunable
        layers' weights), "compression_ratio" (all parameters), "val_top1",
        "loss" (last training epoch, None in round 0)}``.

    Raises:
        KeyError: an unknown layer name.
        ValueError: a setting that is not a fraction, rounds < 1, an unknown schedule.
    """
    final = _final_keeps(model, target)
    select_layers(model, final)  # fail on unknown names before any training
    schedules = {name: round_keeps(keep, rounds, schedule) for name, keep in final.items()}
    opt = make_optimizer(model.parameters(), optimizer, lr, momentum, weight_decay)
    after_step = functools.partial(enforce_masks, optimizer=opt)

    history = [_history_row(model, 0, evaluate(model, val_loader, device)["top1"], None)]
    bar = tqdm(range(1, rounds + 1), desc="iterative pruning", disable=not progress)
    for round_index in bar:
        prune_model(model, {name: PruneSetting(keep=keeps[round_index - 1]) for name, keeps in schedules.items()})
        enforce_masks(model, opt)
        for group in opt.param_groups:
            group["lr"] = lr  # the previous round's cosine schedule ended near 0
        epochs = epochs_per_round
        if round_index == rounds and final_epochs is not None:
            epochs = final_epochs
        rows = train(model, train_loader, epochs=epochs, optimizer=opt, device=device, after_step=after_step,
                     progress=False, desc=f"round {round_index}")
        loss = rows[-1]["loss"] if rows else None
        history.append(_history_row(model, round_index, evaluate(model, val_loader, device)["top1"], loss))
        bar.set_postfix(sparsity=f"{history[-1]['sparsity']:.3f}", val=f"{history[-1]['val_top1']:.4f}")
        log.info("round %d: sparsity %.4f, val top-1 %.4f", round_index, history[-1]["sparsity"],
                 history[-1]["val_top1"])
    return history
