"""The machine description that every benchmark prints beside its numbers."""

from __future__ import annotations

import platform
import subprocess


def cpu_model() -> str:
    """Return the CPU model name from ``lscpu``, or the platform's processor string without it."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"
