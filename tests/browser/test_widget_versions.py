"""The JupyterLab and widget versions the browser tests run with are the pinned ones, with the widget extension enabled.

Widgets render only when ipywidgets (kernel side), the jupyterlab_widgets
extension and JupyterLab match. The browser tests show that the pinned set
works, so these tests check that the installed set is the pinned set.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
WIDGET_PACKAGES = ["jupyterlab", "ipywidgets", "jupyterlab_widgets"]


def _pinned_versions(requirements: list[str]) -> dict[str, str]:
    """Map the widget packages among ``requirements`` to their pinned version (the part after ``==``)."""
    pins = {}
    for line in requirements:
        requirement = Requirement(line)
        name = requirement.name.replace("-", "_").lower()
        if name in WIDGET_PACKAGES:
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line} is not an exact pin"
            pins[name] = specifier.version
    return pins


@pytest.fixture(scope="module")
def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _pinned_versions(project["dependencies"])


@pytest.fixture(scope="module")
def conda_pins() -> dict[str, str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    (pip_section,) = [entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict)]
    return _pinned_versions(pip_section)


@pytest.mark.parametrize("package", WIDGET_PACKAGES)
def test_widget_package_installed_is_pinned(package, pyproject_pins):
    assert metadata.version(package) == pyproject_pins[package]


@pytest.mark.parametrize("package", WIDGET_PACKAGES)
def test_widget_package_pins_agree(package, pyproject_pins, conda_pins):
    assert conda_pins[package] == pyproject_pins[package]


def test_widget_labextension_enabled():
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    # The listing goes to stderr in JupyterLab 4 and is coloured; strip the ANSI codes.
    text = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)
    lines = [line for line in text.splitlines() if "@jupyter-widgets/jupyterlab-manager" in line]
    assert len(lines) == 1, f"@jupyter-widgets/jupyterlab-manager not listed once:\n{text}"
    assert re.search(r"\benabled\s+OK\b", lines[0]), lines[0]
    assert "(python, jupyterlab_widgets)" in lines[0]
