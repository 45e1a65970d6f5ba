"""Tests of the packaging files: identical pins in pyproject.toml and environment.yml, licence, citation, README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
# PyYAML arrives with jupyterlab (through jupyter-events) and packaging with pytest, so neither needs a pin.
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _normalize(name: str) -> str:
    """Normalize a distribution name as PEP 503 does: lowercase, runs of '-', '_' and '.' become '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements: list[str]) -> dict[str, str]:
    """Map each normalized package name to its version specifier, e.g. {"torch": "==2.14.1"}."""
    pins: dict[str, str] = {}
    for line in requirements:
        requirement = Requirement(line)
        name = _normalize(requirement.name)
        assert name not in pins, f"{requirement.name} is listed twice"
        pins[name] = str(requirement.specifier)
    return pins


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def pyproject_pins(pyproject) -> dict[str, str]:
    project = pyproject["project"]
    return _pins(project["dependencies"] + project["optional-dependencies"]["dev"])


@pytest.fixture(scope="module")
def conda_pins() -> dict[str, str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict)]
    assert len(pip_sections) == 1, "environment.yml should have exactly one pip section"
    return _pins(pip_sections[0])


def test_normalize_names():
    assert _normalize("jupyterlab_widgets") == _normalize("JupyterLab-Widgets") == "jupyterlab-widgets"
    assert _normalize("zope.interface") == "zope-interface"


def test_pins_same_packages(pyproject_pins, conda_pins):
    assert sorted(pyproject_pins) == sorted(conda_pins)


def test_pins_same_versions(pyproject_pins, conda_pins):
    differing = {name: (pin, conda_pins.get(name)) for name, pin in pyproject_pins.items() if conda_pins.get(name) != pin}
    assert differing == {}


def test_pins_exact(pyproject_pins):
    loose = [name for name, pin in pyproject_pins.items() if not re.fullmatch(r"==[0-9][0-9A-Za-z.+]*", pin)]
    assert loose == []


def test_torch_pins(pyproject_pins):
    assert pyproject_pins["torch"] == "==2.14.1"
    assert pyproject_pins["torchvision"] == "==0.29.1"


def test_conda_python():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in environment["dependencies"]


def test_checkpoints_packaged(pyproject):
    package_data = pyproject["tool"]["setuptools"]["package-data"]["dclab.checkpoints"]
    assert "*.pt" in package_data
    assert "*.json" in package_data


def test_console_script(pyproject):
    assert pyproject["project"]["scripts"]["dclab"] == "dclab.cli:main"


def test_license_exists():
    license_file = ROOT / "LICENSE"
    assert license_file.is_file()
    assert license_file.read_text().strip()


def test_citation_valid():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"]
    assert citation["title"]
    assert "Deep Compression" in citation["preferred-citation"]["title"]


def test_readme_commands():
    readme = ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("README.md is not written yet")
    text = readme.read_text()
    assert "make demo" in text
    assert "make test" in text
