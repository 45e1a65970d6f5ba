"""Inference with pruned fully connected layers kept sparse (CSR), straight from a compressed file.

A file stores each layer as relative-index entries in row-major order, so
the flat position of every entry, ``row * in_features + column``, is a
cumulative sum and the entries are already sorted by row. That is the
compressed sparse row (CSR) layout: :func:`csr_from_entries` turns a
layer's entries into a ``torch.sparse_csr_tensor`` without ever building the
dense matrix, and :class:`SparseLinear` computes ``y = x W^T + b`` with it.
Deep Compression measured pruned fully connected layers at batch size 1
running about 3x faster than dense ones on a CPU; ``benchmarks/bench_sparse_inference.py``
measures torch's CSR kernels against dense ``F.linear`` here.

Example:
    >>> model = load_sparse_model("alexnet.dcz")     # fc6, fc7, fc8 become SparseLinear
    >>> logits = model(images)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dclab.fullscale_io import LayerEntries, iter_layer_entries, read_header
from dclab.models import PAPER_LAYER_NAMES, build_model

__all__ = ["SparseLinear", "csr_from_entries", "csr_from_dense", "load_sparse_model"]


def _csr_tensor(crow: np.ndarray, col: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """Build a CSR tensor, with int32 indices when they fit (torch's CPU kernels run faster on them)."""
    index_dtype = np.int32 if max(values.size, shape[1]) < 2**31 else np.int64
    with warnings.catch_warnings():
        # torch marks sparse CSR as beta on every construction; the kernels used here are stable.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(
            torch.from_numpy(crow.astype(index_dtype)),
            torch.from_numpy(col.astype(index_dtype)),
            torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)),
            size=shape,
            check_invariants=True,
        )


def csr_from_entries(entries: LayerEntries) -> torch.Tensor:
    """Turn a 2-D layer's relative-index entries into a (out, in) CSR tensor, skipping fillers.

    Entries whose weight is 0 (fillers, and kept weights whose shared value
    is 0.0) are left out, so the CSR contains exactly the nonzero weights.

    Raises:
        ValueError: the layer is not 2-D.
    """
    if len(entries.shape) != 2:
        raise ValueError(f"layer {entries.name} has shape {entries.shape}; CSR needs a 2-D (fully connected) weight")
    rows, columns = entries.shape
    positions = entries.positions()
    weights = entries.entry_weights()
    nonzero = weights != 0
    positions, weights = positions[nonzero], weights[nonzero]
    row_of = positions // columns
    crow = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=rows), out=crow[1:])
    return _csr_tensor(crow, positions - row_of * columns, weights, (rows, columns))


def csr_from_dense(weight: torch.Tensor) -> torch.Tensor:
    """Turn a dense 2-D weight into a CSR tensor of its nonzero entries (int32 indices when they fit)."""
    if weight.dim() != 2:
        raise ValueError(f"weight has shape {tuple(weight.shape)}; CSR needs a 2-D weight")
    flat = weight.detach().cpu().float().reshape(-1).numpy()
    positions = np.flatnonzero(flat)
    rows, columns = weight.shape
    row_of = positions // columns
    crow = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=rows), out=crow[1:])
    return _csr_tensor(crow, positions - row_of * columns, flat[positions], (rows, columns))


class SparseLinear(nn.Module):
    """A fully connected layer ``y = x W^T + b`` whose (out, in) weight is a CSR tensor.

    Args:
        weight: CSR tensor of shape (out_features, in_features).
        bias: dense (out_features,) tensor, or None.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.layout != torch.sparse_csr or weight.dim() != 2:
            raise ValueError(f"SparseLinear needs a 2-D CSR weight, got layout {weight.layout} with {weight.dim()} dims")
        self.out_features, self.in_features = weight.shape
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({self.out_features},)")
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> "SparseLinear":
        """Build one from a dense ``nn.Linear`` whose pruned weights are 0."""
        bias = layer.bias.detach().clone() if layer.bias is not None else None
        return cls(csr_from_dense(layer.weight), bias)

    @classmethod
    def from_entries(cls, entries: LayerEntries) -> "SparseLinear":
        """Build one from a compressed file's layer (see :func:`csr_from_entries`)."""
        bias = torch.from_numpy(entries.bias.copy()) if entries.bias is not None else None
        return cls(csr_from_entries(entries), bias)

    @property
    def nnz(self) -> int:
        """Number of stored weights."""
        return int(self.weight.values().numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (out, in) @ (in, N) -> (out, N); CSR times dense is what torch's CPU kernels support.
        flat = x.reshape(-1, self.in_features)
        y = (self.weight @ flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        density = self.nnz / (self.out_features * self.in_features)
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz} ({100 * density:.1f}%)"


def _replace_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def load_sparse_model(source: str | Path | bytes, sparse_layers: str = "fc") -> nn.Module:
    """Rebuild a network from a compressed file with its fully connected layers as :class:`SparseLinear`.

    The file is read one layer at a time; fully connected layers go straight
    from their entries into CSR, the other layers are decoded densely. The
    network is built on the meta device first, so no dense copy of the
    sparse layers is ever allocated.

    Args:
        source: a compressed file's path or bytes (any mode).
        sparse_layers: ``"fc"`` (fully connected layers sparse) or ``"none"``
            (all dense, for comparison).

    Returns:
        The network in eval mode.

    Raises:
        ValueError: unknown ``sparse_layers``.
        dclab.container.CompressedFileError: the file is malformed.
    """
    if sparse_layers not in ("fc", "none"):
        raise ValueError(f"sparse_layers={sparse_layers!r}; use 'fc' or 'none'")
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    network, _ = read_header(data)
    tensors: dict[str, torch.Tensor] = {}
    layers = list(iter_layer_entries(data, tensors))  # entries are compact: a few bytes per kept weight
    num_classes = layers[-1].shape[0] if network in ("lenet300", "lenet5") else 10
    with torch.device("meta"):
        model = build_model(network, weights="random", num_classes=num_classes)
    model = model.to_empty(device="cpu")

    paths = PAPER_LAYER_NAMES[network]
    with torch.no_grad():
        for entries in layers:
            module = model.get_submodule(paths[entries.name])
            if sparse_layers == "fc" and isinstance(module, nn.Linear):
                _replace_module(model, paths[entries.name], SparseLinear.from_entries(entries))
                continue
            module.weight.copy_(torch.from_numpy(entries.dense_weight()))
            if entries.bias is not None:
                module.bias.copy_(torch.from_numpy(entries.bias))
        state = model.state_dict()
        for key, tensor in tensors.items():
            state[key].copy_(tensor)
    model.dclab_network = network
    return model.eval()

