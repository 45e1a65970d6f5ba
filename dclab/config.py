"""Run-time configuration, read from the environment in this one place.

- ``DCLAB_QUICK=1``: quick mode. Bundled MNIST subset, at most a couple of
  epochs per training stage, evaluation on fixed subsets, and at full scale
  AlexNet only with no retraining. ``CI`` alone does not switch it on.
- ``DCLAB_DATA``: folder for downloaded or cached datasets (default
  ``~/.cache/dclab``).
- ``DCLAB_DEVICE``: default torch device (default: ``cpu``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["quick_mode", "data_dir", "default_device", "resolve_device", "limit_epochs", "QUICK_MAX_EPOCHS"]

# Upper bound on epochs per training stage in quick mode.
QUICK_MAX_EPOCHS = 2

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def quick_mode() -> bool:
    """Return whether ``DCLAB_QUICK`` switches quick mode on.

    Raises:
        ValueError: the variable contains something other than a boolean word.
    """
    raw = os.environ.get("DCLAB_QUICK", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"DCLAB_QUICK={raw!r} is not a boolean; use 1 or 0")


def data_dir() -> Path:
    """Return the dataset folder: ``DCLAB_DATA`` or ``~/.cache/dclab``."""
    raw = os.environ.get("DCLAB_DATA")
    if raw:
        return Path(raw).expanduser()
    return Path.home() / ".cache" / "dclab"


def default_device() -> str:
    """Return the device used when none is given: ``DCLAB_DEVICE`` or ``cpu``."""
    return os.environ.get("DCLAB_DEVICE", "cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn a device name into a ``torch.device``, checking that it exists.

    ``None`` means :func:`default_device`; ``"auto"`` means cuda when present,
    else cpu.

    Raises:
        ValueError: the name is not a torch device, or cuda was requested but torch sees no GPU.
    """
    if device is None:
        device = default_device()
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        # torch raises RuntimeError for a malformed name, but callers and the CLI catch ValueError.
        raise ValueError(f"invalid device {device!r} ({error}); use cpu, cuda, cuda:N or auto") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but torch sees no CUDA GPU; use --device cpu")
    return resolved


def limit_epochs(epochs: int) -> int:
    """Cap an epoch count at ``QUICK_MAX_EPOCHS`` in quick mode."""
    if quick_mode():
        return min(epochs, QUICK_MAX_EPOCHS)
    return epochs
