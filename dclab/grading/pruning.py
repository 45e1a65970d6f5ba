"""Checks for the pruning exercises (notebook ``01_pruning``).

The expected values come from :mod:`dclab.prune` wherever it has the
function, so the grader and the library cannot disagree. The masked SGD step
has no single library function (the library runs ``torch.optim.SGD`` and then
:func:`dclab.prune.enforce_masks`), so its reference is written here, and
the grader's tests compare it with that pair.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from dclab import prune
from dclab.grading.core import Case, Mismatch, compare_arrays, compare_scalar, run_check

__all__ = [
    "reference_magnitude_mask",
    "reference_std_threshold",
    "reference_sparsity",
    "reference_masked_sgd_step",
    "check_magnitude_mask",
    "check_std_threshold",
    "check_sparsity",
    "check_masked_sgd_step",
]


# --- references ----------------------------------------------------------------


def reference_magnitude_mask(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """Return the 0/1 mask of ``|w| > threshold`` (ties pruned), as :mod:`dclab.prune` computes it."""
    return prune.MagnitudeThreshold(threshold).compute_mask(weight, torch.ones_like(weight))


def reference_std_threshold(weight: torch.Tensor, s: float) -> float:
    """Return ``s`` times the population standard deviation of every entry of ``weight``."""
    return prune.std_threshold(weight, s)


def reference_sparsity(model: nn.Module) -> float:
    """Return the fraction of Linear and Conv2d weights whose mask is 0 (biases excluded)."""
    layers = prune.sparsity_report(model).layers
    weights = sum(layer.weights for layer in layers)
    kept = sum(layer.kept for layer in layers)
    return (weights - kept) / weights


def reference_masked_sgd_step(
    weight: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor, velocity: torch.Tensor, lr: float, momentum: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return one SGD-with-momentum step followed by masking of both the weight and the velocity.

    ``v' = mask * (momentum * v + grad)`` and ``w' = mask * (w - lr * v')``:
    what ``torch.optim.SGD`` followed by :func:`dclab.prune.enforce_masks`
    (with the optimizer) computes.
    """
    new_velocity = mask * (momentum * velocity + grad)
    new_weight = mask * (weight - lr * new_velocity)
    return new_weight, new_velocity


# --- magnitude_mask ---------------------------------------------------------------------

_TIE_HINT = "a weight whose magnitude equals the threshold is pruned: keep |w| > threshold, not >="


def _magnitude_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    random_layer = torch.randn(4, 5, generator=generator)
    conv = torch.randn(2, 1, 3, 3, generator=generator)
    return [
        Case("random 4x5 layer", (random_layer, 0.5), "keep a weight when |w| > threshold"),
        Case("negative weights", (torch.tensor([-2.0, -0.1, 0.1, 2.0, -0.7]), 0.5),
             "compare magnitudes |w|: a large negative weight is kept"),
        Case("ties at the threshold", (torch.tensor([0.5, -0.5, 0.25, 0.75, -1.0]), 0.5), _TIE_HINT),
        Case("threshold 0 prunes only exact zeros", (torch.tensor([0.0, 1e-8, -1e-8, 0.0, 3.0]), 0.0), _TIE_HINT),
        Case("everything pruned", (torch.tensor([[0.1, -0.2], [0.3, -0.4]]), 1.0),
             "every |w| is below the threshold, so the mask is all zeros"),
        Case("nothing pruned", (torch.tensor([[1.5, -2.5], [3.5, -4.5]]), 1.0),
             "every |w| is above the threshold, so the mask is all ones"),
        Case("single weight", (torch.tensor([-0.3]), 0.2), "the mask has the weight's shape"),
        Case("empty layer", (torch.zeros(0, 3), 0.1), "an empty weight gives an empty mask of the same shape"),
        Case("conv weight (2, 1, 3, 3)", (conv, 0.8), "the mask has the weight's shape, here 4-D"),
    ]


def _verify_mask(args: tuple, expected: torch.Tensor, received) -> None:
    compare_arrays(expected, received, what="the mask", exact=True)


def check_magnitude_mask(magnitude_mask: Callable) -> None:
    """Grade ``magnitude_mask(weight, threshold)``: 1 where ``|w| > threshold``, else 0, shaped like ``weight``."""
    run_check("magnitude_mask", magnitude_mask, _magnitude_cases(), reference_magnitude_mask, _verify_mask,
              ("weight", "threshold"))


# --- std_threshold ----------------------------------------------------------------------

_POPULATION_HINT = ("use the population standard deviation (divide by n, torch: weight.std(correction=0)); "
                    "torch's default .std() divides by n - 1")


def _std_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(1)
    return [
        Case("four weights", (torch.tensor([1.0, -1.0, 3.0, -3.0]), 1.0), _POPULATION_HINT),
        Case("s = 1.5 on a 3x4 layer", (torch.randn(3, 4, generator=generator), 1.5),
             "the threshold is s times the standard deviation of all entries"),
        Case("mean far from zero", (torch.tensor([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), 2.0),
             "the standard deviation is taken around the mean of the weights, not around 0"),
        Case("pruned zeros count", (torch.tensor([[0.0, 0.0, 0.6], [0.0, -0.6, 0.0]]), 1.0),
             "use every entry, zeros included"),
        Case("s = 0", (torch.tensor([0.3, -0.2, 0.9]), 0.0), "s = 0 gives threshold 0"),
        Case("single weight", (torch.tensor([0.7]), 1.0),
             "one weight has standard deviation 0 (the population formula; n - 1 would divide by zero)"),
        Case("constant layer", (torch.full((2, 3), 0.25), 3.0), "equal weights have standard deviation 0"),
    ]


def _verify_std(args: tuple, expected: float, received) -> None:
    compare_scalar(expected, received, what="the threshold", atol=1e-7, rtol=1e-5)


def check_std_threshold(std_threshold: Callable) -> None:
    """Grade ``std_threshold(weight, s)``: ``s`` times the population standard deviation of ``weight``."""
    run_check("std_threshold", std_threshold, _std_cases(), reference_std_threshold, _verify_std, ("weight", "s"))


# --- sparsity ---------------------------------------------------------------------------


def _linear(n_in: int, n_out: int, seed: int) -> nn.Linear:
    # fork_rng leaves the notebook's global random state as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(n_in, n_out)


def _pruned(module: nn.Module, mask: torch.Tensor) -> nn.Module:
    torch_prune.custom_from_mask(module, "weight", mask)
    return module


def _two_layers() -> tuple:
    first = _pruned(_linear(6, 4, 0), (torch.arange(24).reshape(4, 6) % 5 < 3).float())
    return (nn.Sequential(first, nn.ReLU(), _linear(4, 2, 1)),)


def _kept_zeros() -> tuple:
    layer = _linear(5, 3, 2)
    with torch.no_grad():
        layer.weight[0, :2] = 0.0  # exactly zero, but the mask keeps them
    mask = torch.ones(3, 5)
    mask[2] = 0.0
    return (nn.Sequential(_pruned(layer, mask)),)


def _dense_with_zero() -> tuple:
    layer = _linear(3, 3, 3)
    with torch.no_grad():
        layer.weight[1, 1] = 0.0
    return (nn.Sequential(layer, nn.Tanh(), _linear(3, 2, 4)),)


def _all_pruned() -> tuple:
    return (nn.Sequential(_pruned(_linear(4, 2, 5), torch.zeros(2, 4))),)


def _conv_and_linear() -> tuple:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        conv = nn.Conv2d(1, 2, 3)
    mask = torch.ones(2, 1, 3, 3)
    mask[0] = 0.0
    mask[1, 0, 1, 1] = 0.0
    return (nn.Sequential(_pruned(conv, mask), nn.Flatten(), _linear(8, 3, 7)),)


def _pruned_twice() -> tuple:
    layer = _linear(8, 4, 8)
    prune.prune_layer(layer, amount=0.25)
    prune.prune_layer(layer, amount=0.5)
    return (nn.Sequential(layer, nn.ReLU(), _linear(4, 4, 9)),)


@functools.lru_cache(maxsize=1)
def _lenet300_paper_template() -> nn.Module:
    from dclab.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(10)
        model = build_model("lenet300", weights="random")
    prune.prune_to_preset(model, "paper")
    return model


def _lenet300_paper() -> tuple:
    # Built once per process, then copied for every call (pruning 266K weights takes a while).
    return (prune.deepcopy_pruned(_lenet300_paper_template()),)


_VALUES_HINT = "count from the masks (weight_mask == 0), not from weights that happen to be zero"
_POOL_HINT = "pool the counts of all layers: pruned weights / all weights, not the mean of per-layer fractions"


def _sparsity_cases() -> list[Case]:
    return [
        Case("one pruned and one dense layer", hint=_POOL_HINT, build=_two_layers,
             shown="Sequential(Linear(6, 4) with 10 of 24 weights masked, ReLU, Linear(4, 2) without mask)"),
        Case("kept weights that are exactly 0", hint=_VALUES_HINT, build=_kept_zeros,
             shown="Sequential(Linear(5, 3)): mask prunes row 2; two kept weights in row 0 are exactly 0.0"),
        Case("no mask anywhere", hint="a layer without weight_mask is dense: none of its weights is pruned, "
             "even one that is exactly 0", build=_dense_with_zero,
             shown="Sequential(Linear(3, 3) with one weight equal to 0.0, Tanh, Linear(3, 2)), no masks"),
        Case("every weight pruned", hint="all masks are 0, so the sparsity is 1.0", build=_all_pruned,
             shown="Sequential(Linear(4, 2) with an all-zero mask)"),
        Case("conv and linear", hint="count Conv2d weights too, and exclude biases", build=_conv_and_linear,
             shown="Sequential(Conv2d(1, 2, 3) with 10 of 18 weights masked, Flatten, Linear(8, 3) without mask)"),
        Case("layer pruned twice", hint="torch keeps one combined weight_mask per layer; count it once",
             build=_pruned_twice, shown="Linear(8, 4) pruned by 25% then to 50% of its weights, then Linear(4, 4)"),
        Case("LeNet-300-100 at the paper's rates", hint=_POOL_HINT, build=_lenet300_paper,
             shown="build_model('lenet300', weights='random') after prune_to_preset(model, 'paper')"),
    ]


def _verify_sparsity(args: tuple, expected: float, received) -> None:
    # float32 arithmetic (a tensor result) is accurate to about 1e-7.
    compare_scalar(expected, received, what="the sparsity", atol=1e-7, rtol=1e-6)


def check_sparsity(sparsity: Callable) -> None:
    """Grade ``sparsity(model)``: the fraction of Linear and Conv2d weights whose mask is 0."""
    run_check("sparsity", sparsity, _sparsity_cases(), reference_sparsity, _verify_sparsity, ("model",))


# --- masked_sgd_step --------------------------------------------------------------------

_REGROW_HINT = ("mask the velocity as well as the weight: momentum left over from before pruning "
                "must not move a pruned weight away from 0")


def _sgd_case(label: str, shape: tuple[int, ...], seed: int, mask_fraction: float, *, lr: float = 0.1,
              momentum: float = 0.9, zero_velocity: bool = False, stale_weights: bool = False,
              hint: str = _REGROW_HINT) -> Case:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=generator)
    grad = torch.randn(shape, generator=generator)
    velocity = torch.zeros(shape) if zero_velocity else torch.randn(shape, generator=generator)
    mask = (torch.rand(shape, generator=generator) >= mask_fraction).float()
    if not stale_weights:
        weight = weight * mask
    return Case(label, (weight, grad, mask, velocity, lr, momentum), hint)


def _sgd_cases() -> list[Case]:
    return [
        _sgd_case("momentum from before pruning", (3, 4), 0, 0.5),
        _sgd_case("nonzero weights under the mask", (4, 3), 1, 0.5, stale_weights=True,
                  hint="the returned weight must be exactly 0 wherever the mask is 0"),
        _sgd_case("nothing pruned", (2, 5), 2, 0.0,
                  hint="with mask all ones this is plain SGD with momentum: v' = momentum*v + grad, w' = w - lr*v'"),
        _sgd_case("everything pruned", (3, 3), 3, 1.1, hint="with mask all zeros both results are all zeros"),
        _sgd_case("momentum 0", (5,), 4, 0.4, momentum=0.0, lr=0.5,
                  hint="with momentum 0 the step is w' = mask * (w - lr * grad)"),
        _sgd_case("first step, zero velocity", (2, 3), 5, 0.3, zero_velocity=True,
                  hint="the first step has v = 0, so v' = mask * grad"),
        _sgd_case("conv weight (2, 1, 3, 3)", (2, 1, 3, 3), 6, 0.6, lr=0.01, momentum=0.5),
    ]


def _verify_sgd(args: tuple, expected: tuple, received) -> None:
    if not isinstance(received, (tuple, list)) or len(received) != 2:
        raise Mismatch(f"expected a pair (new_weight, new_velocity), received {type(received).__name__}")
    compare_arrays(expected[0], received[0], what="new_weight", atol=1e-6, rtol=1e-5)
    compare_arrays(expected[1], received[1], what="new_velocity", atol=1e-6, rtol=1e-5)


def check_masked_sgd_step(masked_sgd_step: Callable) -> None:
    """Grade ``masked_sgd_step(weight, grad, mask, velocity, lr, momentum) -> (new_weight, new_velocity)``."""
    run_check("masked_sgd_step", masked_sgd_step, _sgd_cases(), reference_masked_sgd_step, _verify_sgd,
              ("weight", "grad", "mask", "velocity", "lr", "momentum"))
