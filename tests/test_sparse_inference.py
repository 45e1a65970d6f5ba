"""Tests for CSR inference straight from a compressed file (dclab.sparse_inference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dclab import prune, quantize
from dclab.container import decode_model, encode_model, load_compressed
from dclab.fullscale import prune_tensor
from dclab.fullscale_io import iter_layer_entries
from dclab.models import build_model
from dclab.sparse_inference import SparseLinear, csr_from_dense, csr_from_entries, load_sparse_model


def _compressed(name: str, mode: str = "huffman", seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    model = build_model(name, weights="random")
    prune.prune_to_preset(model, "paper")
    if mode != "pruned":
        quantize.quantize_model(model, "paper")
    return encode_model(model, mode, preset="paper")


@pytest.mark.parametrize("mode", ["pruned", "quantized", "huffman"])
def test_csr_from_entries_equals_dense(mode):
    data = _compressed("lenet300", mode)
    for entries in iter_layer_entries(data):
        csr = csr_from_entries(entries)
        assert csr.layout == torch.sparse_csr
        dense = torch.from_numpy(entries.dense_weight())
        assert torch.equal(csr.to_dense(), dense), entries.name
        assert csr.values().numel() == int(dense.count_nonzero()), entries.name


def test_csr_skips_fillers():
    data = _compressed("lenet300", "huffman")
    entries = next(iter_layer_entries(data))  # ip1: 8% kept, 5-bit index, so fillers occur
    fillers = int((entries.values == 0).sum())
    assert fillers > 0
    assert csr_from_entries(entries).values().numel() == entries.values.size - fillers


def test_csr_from_entries_rejects_conv():
    data = _compressed("lenet5", "huffman")
    conv1 = next(iter_layer_entries(data))
    with pytest.raises(ValueError, match="conv1"):
        csr_from_entries(conv1)


def test_csr_int32_indices():
    csr = csr_from_dense(torch.eye(5))
    assert csr.col_indices().dtype == torch.int32
    assert csr.crow_indices().tolist() == [0, 1, 2, 3, 4, 5]


def test_csr_empty_rows():
    weight = torch.zeros(4, 6)
    weight[2, 5] = 3.0
    csr = csr_from_dense(weight)
    assert csr.crow_indices().tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(csr.to_dense(), weight)


@pytest.fixture(scope="module")
def fc6_pair() -> tuple[nn.Linear, SparseLinear]:
    """AlexNet's fc6 shape pruned to the paper's 9% kept, dense and as SparseLinear."""
    torch.manual_seed(0)
    layer = nn.Linear(9216, 4096)
    with torch.no_grad():
        prune_tensor(layer.weight.data, 0.09)
    return layer, SparseLinear.from_linear(layer)


def test_sparse_linear_nnz(fc6_pair):
    layer, sparse = fc6_pair
    assert sparse.nnz == int(layer.weight.count_nonzero())
    assert "nnz=" in repr(sparse)


@pytest.mark.parametrize("batch_shape", [(1,), (3,), (2, 5)])
def test_sparse_linear_matches_dense_fc6_shape(fc6_pair, batch_shape):
    layer, sparse = fc6_pair
    torch.manual_seed(1)
    x = torch.randn(*batch_shape, 9216)
    with torch.no_grad():
        assert torch.allclose(sparse(x), layer(x), rtol=1e-4, atol=1e-5)


def test_sparse_linear_without_bias():
    layer = nn.Linear(8, 3, bias=False)
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.allclose(SparseLinear.from_linear(layer)(x), layer(x), atol=1e-6)


def test_sparse_linear_rejects_dense_weight():
    with pytest.raises(ValueError, match="CSR"):
        SparseLinear(torch.zeros(3, 4))


def test_sparse_linear_rejects_bias_shape():
    with pytest.raises(ValueError, match="bias"):
        SparseLinear(csr_from_dense(torch.eye(3)), torch.zeros(4))


@pytest.mark.parametrize("network", ["lenet300", "lenet5"])
def test_sparse_model_matches_dense(network):
    data = _compressed(network, "huffman", seed=1)
    dense = decode_model(data)
    sparse = load_sparse_model(data)
    fc_count = sum(isinstance(m, nn.Linear) for m in dense.modules())
    assert sum(isinstance(m, SparseLinear) for m in sparse.modules()) == fc_count
    assert not any(isinstance(m, nn.Linear) for m in sparse.modules())
    torch.manual_seed(0)
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(sparse(images), dense(images), rtol=1e-4, atol=1e-5)


def test_sparse_model_dense_option(tmp_path):
    data = _compressed("lenet300", "quantized")
    path = tmp_path / "lenet300.dcz"
    path.write_bytes(data)
    model = load_sparse_model(path, sparse_layers="none")
    assert not any(isinstance(m, SparseLinear) for m in model.modules())
    reference = load_compressed(path)
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        assert torch.equal(ours, theirs)


def test_sparse_model_rejects_option():
    with pytest.raises(ValueError, match="sparse_layers"):
        load_sparse_model(b"", sparse_layers="conv")


def test_entries_positions_sorted():
    data = _compressed("lenet300", "huffman")
    for entries in iter_layer_entries(data):
        positions = entries.positions()
        assert np.all(np.diff(positions) > 0), entries.name
