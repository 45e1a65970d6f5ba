"""Trained quantization: per-layer codebooks (weight sharing) and centroid fine-tuning.

A quantized layer carries two buffers next to its weight:

- ``weight_codebook``: float32, shape (K + 1,). Entry 0 is exactly 0 and
  stands for pruned weights (and the filler entries of sparse storage), so a
  b-bit layer has K <= 2**b - 1 shared nonzero values.
- ``weight_codes``: same shape as the weight, ``torch.uint8`` for b <= 8
  and ``torch.int32`` for 9..16 bits. The weight equals
  ``weight_codebook[weight_codes.long()]`` exactly.

Which weights are clustered: the kept ones, by the same rule as pruning
statistics (``dclab.prune.layer_mask``). On a module pruned with
torch.nn.utils.prune these are the positions where ``weight_mask`` is
nonzero, even a kept weight that happens to be exactly 0. A module without a
mask is dense, so all its weights are clustered, exact zeros included: fold
masks in (``prune.remove``) only after quantizing, or the zeros they leave
are shared with small nonzero weights. Every kept weight gets a nonzero code,
so ``weight_codes != 0`` marks the kept positions. A shared value itself can
be 0.0 in the rare case that a cluster's mean is exactly 0.

Fine-tuning follows Deep Compression's rule (Han, Mao, Dally, ICLR 2016):
a centroid's gradient is the sum of the gradients of the weights that share
it, and assignments stay fixed. A forward pre-hook computes
``weight = codebook[codes]`` from a trainable ``weight_centroids`` parameter
(the codebook without entry 0), so autograd delivers the summed gradient and
code 0 cannot move::

    params = codebook_parameters(model)            # start fine-tuning
    train(model, loader, epochs=3, optimizer=make_optimizer(params, lr=1e-3),
          after_step=sync_codebooks)                # weights == codebook[codes] after every step
    finish_fine_tuning(model)                       # back to plain quantized layers

:func:`fine_tune` does these three steps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from dclab.kmeans import INIT_METHODS, KMeansResult, cluster_1d
from dclab.models import compressible_layers, network_of
from dclab.presets import Preset, get_preset

__all__ = [
    "REDUCTIONS",
    "LayerQuantization",
    "codes_dtype",
    "kept_mask",
    "kept_weights",
    "is_quantized",
    "is_fine_tuning",
    "quantize_layer",
    "quantize_model",
    "shared_weights",
    "codebook_parameters",
    "sync_codebooks",
    "finish_fine_tuning",
    "fine_tune",
    "dequantize",
]

log = logging.getLogger(__name__)

REDUCTIONS = ("sum", "mean")

BitsSpec = int | str | Preset | Mapping[str, int]


@dataclass(frozen=True)
class LayerQuantization:
    """Summary of one layer's quantization by :func:`quantize_layer`.

    Attributes:
        bits: code width b; at most ``2**b - 1`` shared nonzero values.
        kept: number of weights clustered (the unpruned ones).
        centroids: number of shared nonzero values in the codebook (no
            empty clusters, and no more than the distinct kept weights).
        n_iter: k-means iterations (0 when the weights were already few enough).
        converged: whether k-means settled before ``max_iter``.
        inertia: sum of squared quantization errors over the kept weights.
    """

    bits: int
    kept: int
    centroids: int
    n_iter: int
    converged: bool
    inertia: float


# --- Layer state -----------------------------------------------------------


def codes_dtype(bits: int) -> torch.dtype:
    """Return the integer dtype of ``weight_codes`` for b-bit codes.

    uint8 stores codes up to 255; above 8 bits int32 is used, because torch's
    uint16 supports few operations.
    """
    _check_bits(bits)
    return torch.uint8 if bits <= 8 else torch.int32


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits={bits!r} must be an integer in 1..16")


def _is_pruned(module: nn.Module) -> bool:
    return "weight_orig" in module._parameters and "weight_mask" in module._buffers


def _stored_weight(module: nn.Module) -> nn.Parameter:
    """Return the parameter that stores the layer's weights (``weight_orig`` when pruned)."""
    name = "weight_orig" if _is_pruned(module) else "weight"
    parameter = module._parameters.get(name)
    if parameter is None:
        raise ValueError(f"{type(module).__name__} has no weight parameter to quantize")
    return parameter


def is_quantized(module: nn.Module) -> bool:
    """Return whether the module carries ``weight_codebook`` and ``weight_codes`` buffers."""
    return "weight_codebook" in module._buffers and "weight_codes" in module._buffers


def is_fine_tuning(module: nn.Module) -> bool:
    """Return whether the module's centroids are being fine-tuned (see :func:`codebook_parameters`)."""
    return "weight_centroids" in module._parameters


def kept_mask(module: nn.Module) -> torch.Tensor:
    """Return a bool tensor marking the weights that quantization clusters.

    ``weight_mask != 0`` on a pruned module; all True on a module without a mask.
    """
    if _is_pruned(module):
        return module.weight_mask != 0
    return torch.ones_like(_stored_weight(module), dtype=torch.bool)


def kept_weights(module: nn.Module) -> torch.Tensor:
    """Return the clustered weights of a layer as a 1-D tensor (detached, row-major order)."""
    if is_fine_tuning(module):
        weight = module.weight_codebook[module.weight_codes.long()]
        return weight[module.weight_codes != 0]
    return _stored_weight(module).detach()[kept_mask(module)]


# --- Weight sharing ----------------------------------------------------------


def quantize_layer(
    module: nn.Module,
    bits: int,
    init: str = "linear",
    seed: int = 0,
    *,
    max_iter: int = 300,
    name: str | None = None,
) -> LayerQuantization:
    """Share the kept weights of one layer among at most ``2**bits - 1`` values.

    Runs k-means on the kept weights (see the module docstring for which
    ones), writes ``weight_codebook`` and ``weight_codes`` buffers and
    overwrites the weights with ``codebook[codes]``. Pruned weights get code 0
    and stay exactly 0. Clusters left empty by k-means are dropped, so every
    nonzero code is used. A quantized layer may be quantized again, for
    example with fewer bits.

    Args:
        module: an ``nn.Linear`` or ``nn.Conv2d``, plain or pruned by
            torch.nn.utils.prune.
        bits: code width b in 1..16.
        init: centroid initialization, one of ``dclab.kmeans.INIT_METHODS``.
        seed: seed of the random initializations.
        max_iter: maximum k-means iterations.
        name: layer name used in messages.

    Returns:
        A :class:`LayerQuantization` summary.

    Raises:
        ValueError: bad bits or init, NaN or infinite weights, or a layer
            whose centroids are being fine-tuned.
    """
    _check_bits(bits)
    label = name or type(module).__name__
    if init not in INIT_METHODS:
        raise ValueError(f"unknown initialization {init!r}; expected one of {', '.join(INIT_METHODS)}")
    if is_fine_tuning(module):
        raise ValueError(f"layer {label} is being fine-tuned; call finish_fine_tuning(model) before quantizing again")
    stored = _stored_weight(module)
    _check_finite(stored, label)
    kept = kept_mask(module)
    if not _is_pruned(module) and (stored == 0).any():
        log.warning(
            "layer %s has %d exact zeros but no weight_mask, so they are clustered as kept weights; "
            "quantize before removing pruning masks to keep them at code 0", label, int((stored == 0).sum())
        )

    values = stored.detach()[kept].double().cpu().numpy()
    codes = torch.zeros(stored.shape, dtype=torch.int64)
    if values.size == 0:
        centroids = torch.zeros(0, dtype=torch.float64)
        n_iter, converged, inertia = 0, True, 0.0
    else:
        result = cluster_1d(values, 2**bits - 1, init, seed=seed, max_iter=max_iter)
        centroids, kept_codes = _drop_empty_clusters(result)
        codes[kept.cpu()] = kept_codes
        n_iter, converged, inertia = result.n_iter, result.converged, result.inertia

    codebook = torch.cat([torch.zeros(1, dtype=torch.float64), centroids]).float()
    _store_codebook(module, codebook.to(stored.device), codes.to(stored.device, codes_dtype(bits)))
    summary = LayerQuantization(bits, int(values.size), int(centroids.numel()), n_iter, converged, inertia)
    log.info("quantized %s: %s", label, summary)
    if not converged:
        log.warning("k-means on layer %s stopped at max_iter=%d before converging", label, max_iter)
    return summary


def _check_finite(stored: torch.Tensor, label: str) -> None:
    finite = torch.isfinite(stored)
    if not finite.all():
        raise ValueError(
            f"layer {label} has {int((~finite).sum())} NaN or infinite weights; quantization needs finite "
            "weights, so fix the training run that produced them (for example lower the learning rate)"
        )


def _drop_empty_clusters(result: KMeansResult) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the used centroids and each kept weight's code, numbering used clusters 1..K in ascending order."""
    used = torch.from_numpy(result.counts > 0)
    code_of_cluster = torch.cumsum(used.long(), 0)  # code 0 stays reserved for zero
    return torch.from_numpy(result.centroids)[used], code_of_cluster[torch.from_numpy(result.labels)]


def _store_codebook(module: nn.Module, codebook: torch.Tensor, codes: torch.Tensor) -> None:
    """Register the buffers and overwrite the weights with ``codebook[codes]``."""
    module.register_buffer("weight_codebook", codebook)
    module.register_buffer("weight_codes", codes)
    weight = codebook[codes.long()]
    stored = _stored_weight(module)
    with torch.no_grad():
        stored.copy_(weight)
    if _is_pruned(module):
        # Pruning's hook recomputes this at the next forward; refresh it now
        # so that module.weight is already the quantized weight.
        module.weight = weight.to(stored.dtype)


def _resolve_bits(model: nn.Module, bits: BitsSpec) -> dict[str, int]:
    layers = compressible_layers(model)
    if isinstance(bits, int):
        return {layer: bits for layer in layers}
    if isinstance(bits, str):
        bits = get_preset(network_of(model), bits)
    if isinstance(bits, Preset):
        if bits.network != network_of(model):
            raise ValueError(f"preset {bits.network}/{bits.name} is for {bits.network}, not {network_of(model)}")
        return {layer: setting.weight_bits for layer, setting in bits.layers.items()}
    unknown = [layer for layer in bits if layer not in layers]
    if unknown:
        raise KeyError(f"unknown layers {unknown}; this model's layers are {', '.join(layers)}")
    return dict(bits)


def quantize_model(
    model: nn.Module,
    bits: BitsSpec = "paper",
    init: str = "linear",
    seed: int = 0,
    *,
    max_iter: int = 300,
) -> dict[str, LayerQuantization]:
    """Quantize the compressible layers of one of dclab's networks, each with its own codebook.

    Args:
        model: a dclab network (see ``dclab.models.compressible_layers``).
        bits: bits per layer, in one of four forms: a preset name of
            ``dclab.presets``, a :class:`~dclab.presets.Preset`, a mapping
            from paper layer name to bits, or one int for all layers. The
            ``"paper"`` preset gives 6 bits for LeNet-300-100 and 8 conv /
            5 fc for the others. Layers that a mapping leaves out stay as
            they are.
        init: centroid initialization, one of ``dclab.kmeans.INIT_METHODS``.
        seed: seed of the random initializations (the same for every layer).
        max_iter: maximum k-means iterations per layer.

    Returns:
        Paper layer name -> :class:`LayerQuantization`, in forward order.

    Raises:
        KeyError: a mapping names a layer the model does not have, or the
            preset is unknown.
        ValueError: see :func:`quantize_layer`.
    """
    per_layer = _resolve_bits(model, bits)
    summaries = {}
    for layer, module in compressible_layers(model).items():
        if layer in per_layer:
            summaries[layer] = quantize_layer(module, per_layer[layer], init, seed, max_iter=max_iter, name=layer)
    return summaries


# --- Centroid fine-tuning ----------------------------------------------------


class _SharedWeightLookup(torch.autograd.Function):
    """weight = [0, centroids][codes]; backward sums (or averages) weight gradients per code."""

    @staticmethod
    def forward(ctx, centroids: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor, reduction: str):
        codebook = torch.cat([centroids.new_zeros(1), centroids])
        ctx.save_for_backward(codes, counts)
        ctx.reduction = reduction
        return codebook[codes]

    @staticmethod
    def backward(ctx, grad_weight: torch.Tensor):
        codes, counts = ctx.saved_tensors
        # Deep Compression's rule: dL/dc_k = sum of dL/dw over the weights with code k.
        grad_codebook = grad_weight.new_zeros(counts.numel())
        grad_codebook.index_add_(0, codes.reshape(-1), grad_weight.reshape(-1))
        grad_centroids = grad_codebook[1:]  # code 0 is the constant zero, not a parameter
        if ctx.reduction == "mean":
            grad_centroids = grad_centroids / counts[1:].clamp_min(1).to(grad_centroids.dtype)
        return grad_centroids, None, None, None


def shared_weights(
    centroids: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor | None = None, reduction: str = "sum"
) -> torch.Tensor:
    """Look up ``[0, *centroids][codes]`` with the weight-sharing gradient.

    Args:
        centroids: (K,) the shared nonzero values (codes 1..K).
        codes: int64 codes in 0..K, any shape; code 0 gives exactly 0.
        counts: (K + 1,) weights per code; computed from ``codes`` when None.
        reduction: with ``"sum"`` (Deep Compression's rule), the gradient
            of centroid k is the sum of the gradients of the weights with
            code k. With ``"mean"`` it is that sum divided by their number.

    Returns:
        The weights, shaped like ``codes``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; expected one of {', '.join(REDUCTIONS)}")
    if counts is None:
        counts = torch.bincount(codes.reshape(-1), minlength=centroids.numel() + 1)
    return _SharedWeightLookup.apply(centroids, codes, counts, reduction)


class _CentroidFineTuning:
    """Forward pre-hook that sets ``module.weight = shared_weights(module.weight_centroids, ...)``.

    It runs after pruning's hook (registered later), so forward uses the
    weight it sets. Codes are cached as int64 per device.
    """

    def __init__(self, reduction: str, parameter_order: list[str]) -> None:
        self.reduction = reduction
        self.parameter_order = parameter_order  # restored at the end, so optimizers see the same order
        self._codes: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs) -> None:
        codes = module.weight_codes
        if self._codes is None or self._codes.device != codes.device:
            self._codes = codes.long()
            self._counts = torch.bincount(self._codes.reshape(-1), minlength=module.weight_codebook.numel())
        module.weight = shared_weights(module.weight_centroids, self._codes, self._counts, self.reduction)


def _fine_tuning_hook(module: nn.Module) -> _CentroidFineTuning | None:
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, _CentroidFineTuning):
            return hook
    return None


def _start_fine_tuning(module: nn.Module, reduction: str) -> nn.Parameter:
    stored = _stored_weight(module)
    parameter_order = list(module._parameters)
    if _is_pruned(module):
        # The hook replaces weight_orig * weight_mask, so weight_orig gets no gradient.
        stored.requires_grad_(False)
    else:
        del module._parameters["weight"]  # forward gets the weight from the hook instead
    module.weight_centroids = nn.Parameter(module.weight_codebook[1:].clone())
    module.register_forward_pre_hook(_CentroidFineTuning(reduction, parameter_order))
    _sync_module(module)
    return module.weight_centroids


def codebook_parameters(model: nn.Module, reduction: str = "sum") -> list[nn.Parameter]:
    """Start centroid fine-tuning on every quantized layer and return the centroids to optimize.

    Each quantized module gets a ``weight_centroids`` parameter (its codebook
    without entry 0) and a forward pre-hook that computes the weight from it.
    A plain layer's ``weight`` parameter is removed for the duration, and a
    pruned layer's ``weight_orig`` stops requiring gradients, so an optimizer
    built from ``model.parameters()`` trains the centroids and the biases.
    Calling it again returns the same parameters (with the new reduction).

    Args:
        model: a model with quantized layers (see :func:`quantize_model`).
        reduction: ``"sum"`` (Deep Compression's rule) or ``"mean"``, see :func:`shared_weights`.

    Returns:
        The ``weight_centroids`` parameters, one per quantized layer.

    Raises:
        ValueError: unknown reduction, or no quantized layer in ``model``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; expected one of {', '.join(REDUCTIONS)}")
    params = []
    for module in model.modules():
        if not is_quantized(module):
            continue
        if is_fine_tuning(module):
            _fine_tuning_hook(module).reduction = reduction
            params.append(module.weight_centroids)
        else:
            params.append(_start_fine_tuning(module, reduction))
    if not params:
        raise ValueError("the model has no quantized layers; call quantize_model(model, bits) first")
    return params


def _sync_module(module: nn.Module) -> None:
    with torch.no_grad():
        module.weight_codebook[1:] = module.weight_centroids
        weight = module.weight_codebook[module.weight_codes.long()]
        if _is_pruned(module):
            module.weight_orig.copy_(weight)
        module.weight = weight


@torch.no_grad()
def sync_codebooks(model: nn.Module) -> None:
    """Copy fine-tuned centroids into ``weight_codebook`` and set every weight to ``codebook[codes]``.

    Pass it as ``after_step`` to ``dclab.train.train``, so that after every
    optimizer step each layer has exactly its codebook's values and code 0
    stays 0.
    """
    for module in model.modules():
        if is_fine_tuning(module):
            _sync_module(module)


def finish_fine_tuning(model: nn.Module) -> None:
    """End centroid fine-tuning: keep the tuned codebooks, restore plain quantized layers.

    Removes the hooks and the ``weight_centroids`` parameters, gives plain
    layers back their ``weight`` parameter and pruned layers their trainable
    ``weight_orig``; every weight equals ``codebook[codes]``. Layers that are
    not being fine-tuned are left alone.
    """
    for module in model.modules():
        if not is_fine_tuning(module):
            continue
        _sync_module(module)
        hook = _fine_tuning_hook(module)
        for key, value in list(module._forward_pre_hooks.items()):
            if value is hook:
                del module._forward_pre_hooks[key]
        del module._parameters["weight_centroids"]
        weight = module.weight_codebook[module.weight_codes.long()]
        if _is_pruned(module):
            module.weight_orig.requires_grad_(True)
        else:
            module.weight = nn.Parameter(weight)
        _reorder_parameters(module, hook.parameter_order)


def _reorder_parameters(module: nn.Module, order: list[str]) -> None:
    parameters = module._parameters
    reordered = {name: parameters[name] for name in order if name in parameters}
    reordered.update((name, value) for name, value in parameters.items() if name not in reordered)
    parameters.clear()
    parameters.update(reordered)


def fine_tune(
    model: nn.Module,
    train_loader,
    *,
    epochs: int,
    lr: float = 1e-3,
    reduction: str = "sum",
    **train_kwargs,
) -> list[dict[str, float]]:
    """Fine-tune the centroids (and the biases) of a quantized model with ``dclab.train.train``.

    Args:
        model: a model with quantized layers.
        train_loader: training batches.
        epochs: passes over ``train_loader``.
        lr: learning rate.
        reduction: ``"sum"`` or ``"mean"``, see :func:`shared_weights`.
        **train_kwargs: passed to ``dclab.train.train`` (``optimizer``,
            ``momentum``, ``val_loader``, ...); ``after_step`` is taken.

    Returns:
        The per-epoch history of ``dclab.train.train``.
    """
    from dclab.train import train  # imported here because train is heavier and optional for quantizing

    if "after_step" in train_kwargs:
        raise ValueError("fine_tune sets after_step itself (sync_codebooks); do not pass one")
    codebook_parameters(model, reduction)
    try:
        return train(model, train_loader, epochs=epochs, lr=lr, after_step=sync_codebooks, **train_kwargs)
    finally:
        finish_fine_tuning(model)


# --- Back to float -------------------------------------------------------------


def dequantize(model: nn.Module, keep_masks: bool = False) -> nn.Module:
    """Turn quantized layers back into plain float layers with weight = codebook[codes].

    Ends any fine-tuning, removes the ``weight_codebook`` and
    ``weight_codes`` buffers and, unless ``keep_masks``, folds pruning masks
    in with ``torch.nn.utils.prune.remove``, so the state dict loads into a
    fresh model of the same network. Works in place.

    Returns:
        ``model``.
    """
    finish_fine_tuning(model)
    for module in model.modules():
        if not is_quantized(module):
            continue
        weight = module.weight_codebook[module.weight_codes.long()]
        if _is_pruned(module) and not keep_masks:
            prune.remove(module, "weight")
        with torch.no_grad():
            _stored_weight(module).copy_(weight)
        del module._buffers["weight_codebook"]
        del module._buffers["weight_codes"]
    return model
