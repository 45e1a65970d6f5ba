"""Tests for DDP retraining (dclab.distributed).

The end-to-end test launches ``torchrun`` with 2 CPU processes and the gloo
backend on the loopback interface, runs the prune stage and then the
quantize stage on LeNet-5 with a generated 32-image ImageFolder, and checks
the state that every rank wrote: identical masks, zero pruned weights,
identical codebooks that moved away from their k-means start, and a
compressed file that reads back to rank 0's model.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dclab import quantize
from dclab.container import load_compressed
from dclab.data import DatasetError
from dclab.distributed import (
    build_parser,
    check_replicas,
    image_folder,
    init_distributed,
    prepare_model,
    replica_digest,
)
from dclab.models import build_model, compressible_layers
from dclab.pipeline import load_stage_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _write_folder(root: Path, classes: int = 2, per_class: int = 16) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            # Class 1 images are brighter, so there is something to learn.
            pixels = rng.integers(0, 128, size=(28, 28)) + 100 * label
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index}.png")
    return root


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    env.pop("DCLAB_QUICK", None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "dclab.distributed",
        "--backend", "gloo", "--device", "cpu", *args,
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _mask_keys(state: dict) -> list[str]:
    return [key for key in state if key.endswith("weight_mask")]


# --- single-process pieces ------------------------------------------------------


def test_init_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("auto", "cpu")
    assert (context.rank, context.world_size, context.distributed) == (0, 1, False)
    assert context.is_main
    assert context.device == torch.device("cpu")


def test_init_rejects_nccl_on_cpu(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="nccl"):
        init_distributed("nccl", "cpu")


def test_digest_detects_mask_change():
    torch.manual_seed(0)
    model = build_model("lenet5", weights="random")
    prepare_model(model, "prune")
    before = replica_digest(model)
    model.conv2.weight_mask.view(-1)[0] = 1 - model.conv2.weight_mask.view(-1)[0]
    after = replica_digest(model)
    assert after["weight_mask"] != before["weight_mask"]
    assert after["parameters"] == before["parameters"]


def test_check_replicas_single_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    model = build_model("lenet300", weights="random")
    assert check_replicas(model, init_distributed("gloo", "cpu"), "now") == replica_digest(model)


def test_prepare_quantize_returns_centroids():
    torch.manual_seed(0)
    model = build_model("lenet5", weights="random")
    prepare_model(model, "prune")
    params = prepare_model(model, "quantize")
    centroids = [m.weight_centroids for m in compressible_layers(model).values()]
    assert all(any(p is c for p in params) for c in centroids)
    assert not any(p is m.weight_orig for p in params for m in compressible_layers(model).values())


def test_prepare_rejects_stage():
    with pytest.raises(ValueError, match="unknown stage"):
        prepare_model(build_model("lenet300", weights="random"), "huffman")


def test_image_folder_missing(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        image_folder(tmp_path / "absent", "lenet5")


def test_image_folder_lenet_shape(tmp_path):
    dataset = image_folder(_write_folder(tmp_path / "train", per_class=1), "lenet5")
    image, label = dataset[1]
    assert image.shape == (1, 28, 28)
    assert label == 1


def test_parser_requires_stage():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model", "lenet5", "--weights", "random", "--data", "x"])


# --- torchrun, 2 processes, gloo on loopback ---------------------------------------------


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Run the prune stage, then the quantize stage, each with 2 processes."""
    root = tmp_path_factory.mktemp("ddp")
    data = _write_folder(root / "train")
    common = ["--model", "lenet5", "--data", str(data), "--epochs", "2", "--batch-size", "4", "--lr", "0.01"]
    pruned = _torchrun([*common, "--weights", "random", "--stage", "prune", "--out", str(root / "pruned.pt"),
                        "--rank-states", str(root / "prune")], root)
    assert pruned.returncode == 0, pruned.stderr[-4000:]
    quantized = _torchrun([*common, "--weights", str(root / "pruned.pt"), "--stage", "quantize",
                           "--out", str(root / "quantized.pt"), "--dcz", str(root / "lenet5.dcz"),
                           "--rank-states", str(root / "quantize")], root)
    assert quantized.returncode == 0, quantized.stderr[-4000:]
    return root, pruned, quantized


def _rank_states(folder: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


@pytest.mark.slow
def test_ddp_prune_masks_identical(ddp_runs):
    root, _, _ = ddp_runs
    rank0, rank1 = _rank_states(root / "prune")
    keys = _mask_keys(rank0)
    assert len(keys) == 4
    for key in keys:
        assert torch.equal(rank0[key], rank1[key]), key
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


@pytest.mark.slow
def test_ddp_prune_zeroes_pruned_weights(ddp_runs):
    root, _, _ = ddp_runs
    for state in _rank_states(root / "prune"):
        for key in _mask_keys(state):
            weight = state[key.replace("weight_mask", "weight_orig")]
            assert (weight[state[key] == 0] == 0).all(), key
            assert state[key].float().mean() < 1.0, key


@pytest.mark.slow
def test_ddp_prune_trained(ddp_runs):
    root, pruned, _ = ddp_runs
    torch.manual_seed(0)  # the script's seed, so this is the model it started from
    start = build_model("lenet5", weights="random")
    state = torch.load(root / "pruned.pt", weights_only=True)
    mask = state["ip1.weight_mask"].bool()
    assert not torch.equal(state["ip1.weight_orig"][mask], start.ip1.weight.detach()[mask])
    assert "replicas identical after training across 2 ranks" in pruned.stderr


@pytest.mark.slow
def test_ddp_quantize_codebooks_identical(ddp_runs):
    root, _, quantized = ddp_runs
    rank0, rank1 = _rank_states(root / "quantize")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert "replicas identical after training across 2 ranks" in quantized.stderr


@pytest.mark.slow
def test_ddp_quantize_codebooks_moved(ddp_runs):
    root, _, _ = ddp_runs
    start = load_stage_checkpoint("lenet5", root / "pruned.pt")
    quantize.quantize_model(start, "paper")  # the k-means codebooks the stage started from
    state = torch.load(root / "quantize" / "rank0.pt", weights_only=True)
    moved = 0
    for name, module in compressible_layers(start).items():
        # LeNet-5's module names are the paper's layer names.
        assert torch.equal(state[f"{name}.weight_codes"], module.weight_codes), name
        assert state[f"{name}.weight_codebook"][0] == 0.0, name
        moved += not torch.equal(state[f"{name}.weight_codebook"], module.weight_codebook)
    assert moved == 4


@pytest.mark.slow
def test_ddp_quantize_weights_follow_codebook(ddp_runs):
    root, _, _ = ddp_runs
    state = torch.load(root / "quantize" / "rank1.pt", weights_only=True)
    for key in _mask_keys(state):
        prefix = key.rpartition(".")[0]
        codebook, codes = state[f"{prefix}.weight_codebook"], state[f"{prefix}.weight_codes"].long()
        assert torch.equal(state[f"{prefix}.weight_orig"], codebook[codes]), prefix
        assert torch.equal(codes != 0, state[key].bool()), prefix


@pytest.mark.slow
def test_ddp_compressed_file(ddp_runs):
    root, _, _ = ddp_runs
    loaded = load_compressed(root / "lenet5.dcz")
    state = torch.load(root / "quantized.pt", weights_only=True)
    for name, module in compressible_layers(loaded).items():
        assert torch.equal(module.weight, state[f"{name}.weight_orig"]), name
        assert torch.equal(module.weight_codebook, state[f"{name}.weight_codebook"]), name
