"""Tests for the ``dclab`` command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dclab.cli import main
from dclab.models import build_model

ROOT = Path(__file__).resolve().parent.parent


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dclab ")]


def test_help_subprocess():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "dclab", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout
    assert "info" in result.stdout


def test_no_command(capsys):
    assert main([]) == 2
    assert "usage: dclab" in capsys.readouterr().out


def test_info_lenet300(capsys):
    assert main(["info", "lenet300"]) == 0
    out = capsys.readouterr().out
    assert "lenet300: 266,610 parameters" in out
    assert re.search(r"ip1\s+weight \(300, 784\)", out)


def test_train_quick(quick_on, capsys, tmp_path):
    out_file = tmp_path / "lenet300.pt"
    status = main(["-q", "train", "--model", "lenet300", "--epochs", "1", "--source", "bundled",
                   "--out", str(out_file)])
    assert status == 0
    out = capsys.readouterr().out
    match = re.search(r"test top-1 (\d+\.\d+)% on 1000 images", out)
    assert match, out
    # One epoch on 3,500 digits is far above chance (10%).
    assert float(match.group(1)) > 50.0
    assert "3500 train, 500 validation, 1000 test" in out
    loaded = build_model("lenet300", weights=out_file)
    assert torch.isfinite(loaded.ip1.weight).all()


def test_train_unknown_model(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["train", "--model", "resnet50"])
    assert excinfo.value.code == 2
    assert "invalid choice: 'resnet50'" in capsys.readouterr().err


def test_train_missing_source(capsys):
    status = main(["train", "--dataset", "fashion-mnist", "--source", "/nonexistent"])
    assert status == 1
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("dclab train: error: ")
    assert "/nonexistent" in lines[0]
    assert "Traceback" not in err


def test_train_invalid_device(capsys):
    status = main(["train", "--device", "gpu0"])
    assert status == 1
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "'gpu0'" in lines[0]
