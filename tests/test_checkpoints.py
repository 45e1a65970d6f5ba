"""Tests of the trained LeNet checkpoints that ship with dclab."""

from __future__ import annotations

import pytest

from dclab.checkpoints import checkpoint_record
from dclab.data import make_loader
from dclab.models import build_model, shipped_checkpoint_path
from dclab.train import evaluate


def _require_checkpoint(name: str) -> None:
    path = shipped_checkpoint_path(name)
    if not path.is_file():
        pytest.skip(f"{path} is not generated yet; run `dclab make-checkpoints`")


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_checkpoint_test_accuracy(bundled_mnist, name):
    _require_checkpoint(name)
    model = build_model(name, weights="trained")
    result = evaluate(model, make_loader(bundled_mnist.test, batch_size=1000))
    assert result["count"] == 1000
    assert result["top1"] == pytest.approx(checkpoint_record(name)["test_top1"], abs=1e-4)


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_checkpoint_val_accuracy(bundled_mnist, name):
    _require_checkpoint(name)
    model = build_model(name, weights="trained")
    result = evaluate(model, make_loader(bundled_mnist.val, batch_size=500))
    assert result["top1"] == pytest.approx(checkpoint_record(name)["val_top1"], abs=1e-4)


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_checkpoint_record_source(name):
    _require_checkpoint(name)
    record = checkpoint_record(name)
    assert record["dataset"].startswith("bundled")


def test_checkpoint_record_unknown():
    _require_checkpoint("lenet300")
    with pytest.raises(KeyError, match="'alexnet'"):
        checkpoint_record("alexnet")
