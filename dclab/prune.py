"""Magnitude pruning, the first stage of Deep Compression.

A pruned layer carries torch.nn.utils.prune's reparametrization: the
trainable parameter ``weight_orig``, the buffer ``weight_mask`` (1 = kept,
0 = pruned) and a forward pre-hook that sets ``weight = weight_orig *
weight_mask``. torch's own tools (``prune.remove``, ``prune.is_pruned``,
``prune.global_unstructured``) therefore work on dclab models. The masks
move with ``.to()`` and appear in ``state_dict``, and :func:`load_pruned_state_dict`
loads them into an unpruned model. ``copy.deepcopy`` keeps them too, except
right after a forward pass with autograd on (use :func:`deepcopy_pruned`).

The rule: a weight is kept when ``|w| > threshold`` (strictly), so a weight
exactly at the threshold is pruned. Each layer's threshold comes from one of

- ``s``: a quality parameter times the standard deviation of the layer's
  weights (Han, Pool, Tran, Dally, "Learning both Weights and Connections for
  Efficient Neural Networks", NIPS 2015);
- ``amount`` (fraction pruned, torch's meaning) or ``keep`` (fraction kept);
- ``threshold``: an absolute magnitude.

Pruning an already pruned layer ANDs the new mask into the old one, so it
never restores a weight. A fraction refers to the whole layer and counts the
weights already pruned: asking for less than is already pruned leaves the
mask unchanged, and asking for more prunes only the difference, smallest
magnitudes first.

Example:
    >>> model = build_model("lenet300", weights="trained")
    >>> prune_to_preset(model, "paper")        # ip1 8%, ip2 9%, ip3 26% kept
    >>> train(model, loader, epochs=3, after_step=enforce_masks)
    >>> print(sparsity_report(model))
"""

from __future__ import annotations

import copy
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from dclab.models import compressible_layers, network_of
from dclab.presets import Preset, get_preset

__all__ = [
    "MagnitudeThreshold",
    "PruneSetting",
    "std_threshold",
    "fraction_threshold",
    "global_fraction_threshold",
    "prune_layer",
    "prune_model",
    "prune_to_preset",
    "prune_global",
    "named_layers",
    "select_layers",
    "layer_mask",
    "effective_weight",
    "enforce_masks",
    "deepcopy_pruned",
    "make_permanent",
    "load_pruned_state_dict",
    "LayerSparsity",
    "SparsityReport",
    "sparsity_report",
]

log = logging.getLogger(__name__)

# Layer types that the fallback of named_layers() treats as prunable.
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class MagnitudeThreshold(prune.BasePruningMethod):
    """torch pruning method that keeps the entries with ``|w| > threshold``.

    Applied on top of an existing mask (a second prune), torch's
    ``PruningContainer`` calls :meth:`compute_mask` on the still-kept entries
    only, so the result is the old mask AND the new one.

    Example:
        >>> layer = nn.Linear(4, 3)
        >>> method = MagnitudeThreshold.apply(layer, "weight", threshold=0.1)
        >>> sorted(name for name, _ in layer.named_buffers())
        ['weight_mask']
    """

    PRUNING_TYPE = "unstructured"

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        keep = t.abs() > self.threshold
        return default_mask * keep.to(dtype=default_mask.dtype)

    @classmethod
    def apply(cls, module: nn.Module, name: str, threshold: float, importance_scores: torch.Tensor | None = None):
        return super().apply(module, name, threshold=threshold, importance_scores=importance_scores)


@dataclass(frozen=True)
class PruneSetting:
    """How to choose one layer's threshold: exactly one of the four fields is set.

    Attributes:
        amount: fraction of the layer's weights pruned, in [0, 1].
        keep: fraction of the layer's weights kept, in [0, 1] (``1 - amount``).
        s: quality parameter; the threshold is ``s * std(weights)``, s >= 0.
        threshold: absolute magnitude threshold, >= 0.
    """

    amount: float | None = None
    keep: float | None = None
    s: float | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        given = {key: value for key, value in self.__dict__.items() if value is not None}
        if len(given) != 1:
            raise ValueError(f"a prune setting needs exactly one of amount, keep, s, threshold; got {given or 'none'}")
        for key in ("amount", "keep"):
            value = given.get(key)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{key}={value!r} is outside [0, 1]; it is a fraction of the layer's weights")
        for key in ("s", "threshold"):
            value = given.get(key)
            if value is not None and not value >= 0.0:
                raise ValueError(f"{key}={value!r} must be a number >= 0 (0 prunes only exact zeros)")

    @classmethod
    def of(cls, value: "PruneSetting | float | Mapping[str, float] | object") -> "PruneSetting":
        """Convert a plan entry into a setting.

        A bare number is a kept fraction, as in the presets. A mapping such as
        ``{"s": 1.5}`` names its field. An object with a ``keep`` attribute,
        such as a preset's ``LayerSetting``, gives its kept fraction.
        """
        if isinstance(value, PruneSetting):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(keep=float(value))
        if isinstance(value, Mapping):
            unknown = set(value) - {"amount", "keep", "s", "threshold"}
            if unknown:
                raise ValueError(f"unknown prune setting keys {sorted(unknown)}; use amount, keep, s or threshold")
            return cls(**{key: float(v) for key, v in value.items()})
        if hasattr(value, "keep"):
            return cls(keep=float(value.keep))
        raise TypeError(f"cannot read a prune setting from {value!r}; give a kept fraction or a dict like {{'s': 1.0}}")

    @property
    def fraction_pruned(self) -> float | None:
        """The fraction pruned when the setting is a fraction, else None."""
        if self.amount is not None:
            return self.amount
        if self.keep is not None:
            return 1.0 - self.keep
        return None


# ---------------------------------------------------------------- thresholds


def std_threshold(weight: torch.Tensor, s: float) -> float:
    """Return ``s * std(weight)``, the NIPS 2015 pruning paper's per-layer threshold.

    The standard deviation is the population one (no Bessel correction) over
    every entry of the layer as it is now, pruned entries counting as zeros.
    """
    return s * weight.detach().double().std(correction=0).item()


def _count_to_prune(amount: float, size: int) -> int:
    # Python's round(), as torch.nn.utils.prune does for its amounts.
    return round(amount * size)


def fraction_threshold(weight: torch.Tensor, mask: torch.Tensor, amount: float) -> float:
    """Return the threshold that leaves ``round(amount * weight.numel())`` weights pruned in total.

    Weights already pruned (``mask == 0``) count towards the total; the rest
    come from the kept weights with the smallest magnitudes. The threshold is
    the largest magnitude among those. When magnitudes are distinct, exactly
    that many weights end up pruned. Weights tied with the threshold are all
    pruned, so ties can prune a few more.

    Returns:
        The threshold, or ``-inf`` (prune nothing more) when the mask already
        prunes at least that many weights.
    """
    kept = weight.detach()[mask != 0].abs().flatten()
    already_pruned = weight.numel() - kept.numel()
    more = _count_to_prune(amount, weight.numel()) - already_pruned
    if more <= 0:
        return -math.inf
    return torch.kthvalue(kept.double().cpu(), more).values.item()


def global_fraction_threshold(layers: Iterable[nn.Module], amount: float) -> float:
    """Return one threshold that leaves ``round(amount * n)`` of the layers' n weights pruned.

    Same rule as :func:`fraction_threshold`, over the weights of all the
    layers together, so layers with small weights lose more of them.
    """
    weights, masks = [], []
    for module in layers:
        weights.append(effective_weight(module).flatten())
        masks.append(layer_mask(module).flatten())
    return fraction_threshold(torch.cat(weights), torch.cat(masks), amount)


# ---------------------------------------------------------------- layer state


def _check_layer(module: nn.Module, name: str = "layer") -> None:
    has_weight = "weight" in module._parameters or "weight_orig" in module._parameters
    if not has_weight or getattr(module, "weight", None) is None:
        raise ValueError(f"{name} ({type(module).__name__}) has no weight parameter to prune")
    if effective_weight(module).numel() == 0:
        raise ValueError(f"{name} ({type(module).__name__}) has an empty weight (numel 0); nothing to prune")


def _is_weight_pruned(module: nn.Module) -> bool:
    return "weight_orig" in module._parameters and "weight_mask" in module._buffers


def effective_weight(module: nn.Module) -> torch.Tensor:
    """Return the layer's weight as the forward pass uses it (``weight_orig * weight_mask`` when pruned), detached."""
    if _is_weight_pruned(module):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def layer_mask(module: nn.Module) -> torch.Tensor:
    """Return the layer's mask (all ones for an unpruned layer), 1 where a weight is kept."""
    if _is_weight_pruned(module):
        return module.weight_mask.detach()
    return torch.ones_like(module.weight.detach())


def named_layers(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """Return the prunable layers keyed by the paper's names.

    For a model that is not one of dclab's four networks, the keys are the
    module paths of its Linear and Conv layers instead.
    """
    try:
        return compressible_layers(model)
    except ValueError:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for path, module in model.named_modules():
            if isinstance(module, _WEIGHT_LAYERS):
                layers[path or type(module).__name__] = module
        return layers


def select_layers(model: nn.Module, names: Iterable[str]) -> "OrderedDict[str, nn.Module]":
    """Return the named layers of :func:`named_layers`, in the order given.

    Raises:
        KeyError: a name the model does not have; the message lists the valid ones.
    """
    layers = named_layers(model)
    selected: OrderedDict[str, nn.Module] = OrderedDict()
    for name in names:
        if name not in layers:
            raise KeyError(f"unknown layer {name!r}; valid layer names: {', '.join(layers) or 'none'}")
        selected[name] = layers[name]
    return selected


# ---------------------------------------------------------------- pruning


def _layer_threshold(module: nn.Module, setting: PruneSetting) -> float:
    if setting.threshold is not None:
        return setting.threshold
    if setting.s is not None:
        return std_threshold(effective_weight(module), setting.s)
    return fraction_threshold(effective_weight(module), layer_mask(module), setting.fraction_pruned)


def _apply_threshold(module: nn.Module, threshold: float) -> None:
    # The importance scores are the current effective weights: module.weight
    # itself is only refreshed by a forward pass, so it may be one step stale.
    MagnitudeThreshold.apply(module, "weight", threshold=threshold, importance_scores=effective_weight(module))
    _refresh_pruned_attributes(module)


def prune_layer(
    module: nn.Module,
    *,
    amount: float | None = None,
    keep: float | None = None,
    s: float | None = None,
    threshold: float | None = None,
) -> float:
    """Prune one layer's weight by magnitude; give exactly one of the four settings.

    Biases are never pruned. On an already pruned layer the new mask is the
    old mask AND the new one (see the module docstring for fractions).

    Returns:
        The threshold used (``-inf`` when a fraction asked for nothing more).

    Raises:
        ValueError: not exactly one setting, a fraction outside [0, 1], a
            negative s or threshold, or a module without a non-empty weight.
    """
    setting = PruneSetting(amount=amount, keep=keep, s=s, threshold=threshold)
    _check_layer(module)
    layer_threshold = _layer_threshold(module, setting)
    _apply_threshold(module, layer_threshold)
    return layer_threshold


def prune_model(model: nn.Module, plan: Mapping[str, "PruneSetting | float | Mapping[str, float]"]) -> dict[str, float]:
    """Prune several layers, each with its own setting.

    Args:
        plan: layer name (the paper's, e.g. ``ip1``) -> setting: a
            :class:`PruneSetting`, a bare number meaning the kept fraction, or
            a dict such as ``{"s": 1.2}``, ``{"amount": 0.9}``,
            ``{"threshold": 0.02}``. Layers not named are left as they are.

    Returns:
        Layer name -> threshold used.

    Raises:
        KeyError: a layer name that the model does not have (the message lists the valid ones).
        ValueError: an invalid setting (see :func:`prune_layer`).
    """
    settings = {name: PruneSetting.of(value) for name, value in plan.items()}
    layers = select_layers(model, settings)
    for name, module in layers.items():
        _check_layer(module, name)  # before any layer changes, so an error leaves the model as it was

    thresholds = {}
    for name, module in layers.items():
        thresholds[name] = _layer_threshold(module, settings[name])
        _apply_threshold(module, thresholds[name])
        log.debug("pruned %s with threshold %.6g", name, thresholds[name])
    return thresholds


def prune_to_preset(model: nn.Module, preset: str | Preset = "paper") -> dict[str, float]:
    """Prune every layer to the kept fraction that a preset gives it.

    Args:
        preset: a preset name for this model's network (``"paper"``: the
            paper's Tables 2-5) or a :class:`~dclab.presets.Preset`.

    Returns:
        Layer name -> threshold used.
    """
    if isinstance(preset, str):
        preset = get_preset(network_of(model), preset)
    return prune_model(model, {name: PruneSetting(keep=setting.keep) for name, setting in preset.layers.items()})


def prune_global(model: nn.Module, amount: float, layers: Iterable[str] | None = None) -> float:
    """Prune several layers with one magnitude threshold so that ``amount`` of their weights are pruned.

    Args:
        amount: fraction of the selected layers' weights pruned in total, in [0, 1].
        layers: layer names; all prunable layers when None.

    Returns:
        The shared threshold (``-inf`` when nothing more had to be pruned).
    """
    PruneSetting(amount=amount)  # validates the range
    selected = select_layers(model, named_layers(model) if layers is None else layers)
    for name, module in selected.items():
        _check_layer(module, name)
    threshold = global_fraction_threshold(selected.values(), amount)
    for module in selected.values():
        _apply_threshold(module, threshold)
    return threshold


# ---------------------------------------------------------------- retraining and storage


def _pruned_tensors(model: nn.Module) -> Iterable[tuple[nn.Module, str]]:
    """Yield (module, tensor name) for every tensor under torch's pruning reparametrization."""
    for module in model.modules():
        for buffer_name in list(module._buffers):
            if buffer_name.endswith("_mask"):
                name = buffer_name[: -len("_mask")]
                if name + "_orig" in module._parameters:
                    yield module, name


@torch.no_grad()
def enforce_masks(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Zero ``weight_orig`` and, if given, the optimizer's state where the mask is 0.

    The forward pass multiplies by the mask, so pruned weights are zero there
    anyway, but momentum, weight decay and Adam's moments from before pruning
    keep moving ``weight_orig``. Zeroing it after every step keeps the stored
    weights equal to what the network computes with. Pass it as
    ``train(..., after_step=enforce_masks)``, or with
    ``functools.partial(enforce_masks, optimizer=opt)`` to clear the state too.
    """
    for module, name in _pruned_tensors(model):
        orig = module._parameters[name + "_orig"]
        pruned = module._buffers[name + "_mask"] == 0
        orig.masked_fill_(pruned, 0)
        if optimizer is not None:
            for value in optimizer.state.get(orig, {}).values():
                if torch.is_tensor(value) and value.shape == orig.shape:
                    value.masked_fill_(pruned, 0)
    _refresh_pruned_attributes(model)


@torch.no_grad()
def _refresh_pruned_attributes(model: nn.Module) -> None:
    # Set module.weight as the forward pre-hook would, but outside autograd:
    # reading it between steps then shows the current values, and it is a
    # graph leaf, which copy.deepcopy requires.
    for module, name in _pruned_tensors(model):
        setattr(module, name, module._parameters[name + "_orig"] * module._buffers[name + "_mask"])


def deepcopy_pruned(model: nn.Module) -> nn.Module:
    """Return ``copy.deepcopy(model)``, also right after a forward pass with autograd on.

    After such a pass torch's pruning hook has left ``module.weight`` as a
    non-leaf tensor, which ``copy.deepcopy`` rejects (a torch limitation);
    this recomputes it outside autograd first. Plain ``copy.deepcopy`` works
    after :func:`enforce_masks` or a forward pass under ``torch.no_grad()``.
    """
    _refresh_pruned_attributes(model)
    return copy.deepcopy(model)


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove the pruning reparametrization, leaving zeros in ``weight`` (wraps ``prune.remove``).

    Afterwards the layers have no masks, so statistics count their zeros as
    kept weights. The same Parameter objects stay, so an optimizer keeps working.
    """
    for module, name in list(_pruned_tensors(model)):
        prune.remove(module, name)
    return model


def load_pruned_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """Load a pruned model's state dict into a model, pruned or not.

    For every ``<module>.<name>_orig`` / ``<module>.<name>_mask`` pair in
    ``state``, the matching module gets torch's reparametrization from the
    stored mask (``prune.custom_from_mask``) before the values are loaded.

    Raises:
        KeyError: ``state`` names a module the model does not have.
        RuntimeError: from ``load_state_dict`` on missing or mismatched keys.
    """
    modules = dict(model.named_modules())
    for key, mask in state.items():
        if not key.endswith("_mask"):
            continue
        path, _, buffer_name = key.rpartition(".")
        name = buffer_name[: -len("_mask")]
        if (f"{path}.{name}_orig" if path else f"{name}_orig") not in state:
            continue
        if path not in modules:
            raise KeyError(f"state dict entry {key!r} names module {path!r}, which the model does not have")
        module = modules[path]
        if name + "_orig" not in module._parameters:
            prune.custom_from_mask(module, name, mask=mask.to(module._parameters[name].device))
    model.load_state_dict(state, strict=strict)
    _refresh_pruned_attributes(model)
    return model


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class LayerSparsity:
    """Mask counts of one layer; a weight is pruned only where its mask is 0.

    Attributes:
        layer: the paper's layer name.
        weights: number of weights in the layer.
        kept: weights whose mask is 1 (a kept weight may be exactly zero).
        biases: number of biases, which are never pruned.
    """

    layer: str
    weights: int
    kept: int
    biases: int

    @property
    def pruned(self) -> int:
        return self.weights - self.kept

    @property
    def keep(self) -> float:
        """Fraction of the weights kept."""
        return self.kept / self.weights


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer and total mask counts of a model.

    Attributes:
        layers: one entry per prunable layer, in forward order.
        total_params: every parameter of the model, biases included, each
            pruned tensor counted once (through ``weight_orig``).
        pruned_params: entries whose mask is 0, over every mask in the model.
    """

    layers: tuple[LayerSparsity, ...]
    total_params: int
    pruned_params: int

    @property
    def kept_params(self) -> int:
        return self.total_params - self.pruned_params

    @property
    def density(self) -> float:
        """Fraction of all parameters kept."""
        return self.kept_params / self.total_params

    @property
    def compression_ratio(self) -> float:
        """Parameters before over parameters kept (the paper's "9x", "13x")."""
        return self.total_params / self.kept_params if self.kept_params else math.inf

    def rows(self) -> list[dict[str, float]]:
        """Return one dict per layer plus a ``total`` row, whose counts cover every parameter, biases included."""
        rows = []
        for layer in self.layers:
            rows.append({
                "layer": layer.layer, "weights": layer.weights, "kept": layer.kept,
                "pruned": layer.pruned, "keep": layer.keep, "biases": layer.biases,
            })
        rows.append({
            "layer": "total", "weights": self.total_params, "kept": self.kept_params,
            "pruned": self.pruned_params, "keep": self.density, "biases": sum(layer.biases for layer in self.layers),
        })
        return rows

    def __str__(self) -> str:
        lines = [f"{'layer':<10}{'weights':>12}{'kept':>12}{'pruned':>12}{'kept %':>9}"]
        for row in self.rows():
            counts = f"{row['weights']:>12,}{row['kept']:>12,}{row['pruned']:>12,}"
            lines.append(f"{row['layer']:<10}{counts}{100 * row['keep']:>8.2f}%")
        lines.append(f"compression {self.compression_ratio:.1f}x (total counts every parameter, biases included)")
        return "\n".join(lines)


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Count kept and pruned weights from the masks, never from the values.

    A weight that is exactly zero but unmasked counts as kept, because
    retraining can still move it. A layer pruned several times has one mask,
    so nothing is counted twice. A module that appears twice in the model is
    counted once in the totals.
    """
    layers = []
    for name, module in named_layers(model).items():
        mask = layer_mask(module)
        bias = getattr(module, "bias", None)
        layers.append(LayerSparsity(name, mask.numel(), int(mask.count_nonzero()), 0 if bias is None else bias.numel()))
    pruned = sum(module._buffers[name + "_mask"].numel() - int(module._buffers[name + "_mask"].count_nonzero())
                 for module, name in _pruned_tensors(model))
    total = sum(p.numel() for p in model.parameters())
    return SparsityReport(tuple(layers), total, pruned)
