"""Tests for dclab.config: quick mode, data folder, devices, epoch limits."""

from __future__ import annotations

import pytest
import torch

from dclab import config

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present, so cuda resolves")


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "TRUE", " Yes "])
def test_quick_mode_on(monkeypatch, value):
    monkeypatch.setenv("DCLAB_QUICK", value)
    assert config.quick_mode() is True


@pytest.mark.parametrize("value", ["0", "", "false", "no", "off"])
def test_quick_mode_off(monkeypatch, value):
    monkeypatch.setenv("DCLAB_QUICK", value)
    assert config.quick_mode() is False


def test_quick_mode_unset(quick_off):
    assert config.quick_mode() is False


@pytest.mark.parametrize("value", ["maybe", "2", "y"])
def test_quick_mode_invalid(monkeypatch, value):
    monkeypatch.setenv("DCLAB_QUICK", value)
    with pytest.raises(ValueError, match=f"'{value}'"):
        config.quick_mode()


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DCLAB_DATA", str(tmp_path))
    assert config.data_dir() == tmp_path


def test_data_dir_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DCLAB_DATA", "~/datasets")
    assert config.data_dir() == tmp_path / "datasets"


def test_data_dir_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DCLAB_DATA", raising=False)
    assert config.data_dir() == tmp_path / ".cache" / "dclab"


def test_data_dir_empty_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DCLAB_DATA", "")
    assert config.data_dir() == tmp_path / ".cache" / "dclab"


@no_gpu
def test_resolve_device_cuda_missing():
    with pytest.raises(ValueError, match="'cuda'"):
        config.resolve_device("cuda")


@no_gpu
def test_resolve_device_cuda_index_missing():
    with pytest.raises(ValueError, match="'cuda:1'"):
        config.resolve_device("cuda:1")


@no_gpu
def test_resolve_device_auto_cpu():
    assert config.resolve_device("auto") == torch.device("cpu")


def test_resolve_device_default(monkeypatch):
    monkeypatch.delenv("DCLAB_DEVICE", raising=False)
    assert config.resolve_device(None) == torch.device("cpu")


def test_resolve_device_env(monkeypatch):
    monkeypatch.setenv("DCLAB_DEVICE", "meta")
    assert config.resolve_device(None) == torch.device("meta")


def test_resolve_device_object():
    assert config.resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_resolve_device_invalid():
    with pytest.raises(ValueError, match="'gpu0'"):
        config.resolve_device("gpu0")


def test_limit_epochs_quick(quick_on):
    assert config.limit_epochs(30) == config.QUICK_MAX_EPOCHS == 2
    assert config.limit_epochs(1) == 1


def test_limit_epochs_full(quick_off):
    assert config.limit_epochs(30) == 30
