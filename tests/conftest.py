"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import pytest

from dclab.data import Splits, load_mnist


@pytest.fixture(scope="session")
def bundled_mnist() -> Splits:
    """The bundled MNIST subset (3,500 / 500 / 1,000 images), loaded once per session.

    Tests share these tensors, so a test must not modify them in place.
    """
    return load_mnist(source="bundled")


@pytest.fixture
def quick_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch quick mode off, whatever ``DCLAB_QUICK`` the suite was started with."""
    monkeypatch.delenv("DCLAB_QUICK", raising=False)


@pytest.fixture
def quick_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch quick mode on (``DCLAB_QUICK=1``)."""
    monkeypatch.setenv("DCLAB_QUICK", "1")
