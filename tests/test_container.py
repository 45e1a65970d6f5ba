"""Tests for dclab.container: writing and reading compressed model files."""

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils import prune

from dclab import container
from dclab.container import (
    CompressedFileError,
    decode_layers,
    decode_model,
    encode_model,
    encode_model_with_layout,
    load_compressed,
    save_compressed,
)
from dclab.models import build_model, compressible_layers

LENET300_KEEP = {"ip1": 0.08, "ip2": 0.09, "ip3": 0.26}


def prune_by_hand(model, keep):
    for name, module in compressible_layers(model).items():
        prune.l1_unstructured(module, "weight", amount=1.0 - keep[name])
    return model


def quantize_by_hand(model, bits, seed=0):
    """Share weights per layer with quantile bins: 2**bits - 1 nonzero values, code 0 for pruned."""
    generator = torch.Generator().manual_seed(seed)
    for module in compressible_layers(model).values():
        pruned = hasattr(module, "weight_mask")
        weight = (module.weight_orig * module.weight_mask if pruned else module.weight).detach()
        kept = module.weight_mask.bool() if pruned else torch.ones_like(weight, dtype=torch.bool)
        values = weight[kept]
        clusters = (1 << bits) - 1
        edges = torch.quantile(values, torch.linspace(0, 1, clusters + 1)[1:-1])
        assignment = torch.bucketize(values, edges)
        codebook = torch.zeros(clusters + 1)
        for k in range(clusters):
            members = values[assignment == k]
            codebook[k + 1] = members.mean() if members.numel() else 0.01 * (k + 1) + torch.rand(1, generator=generator)
        codes = torch.zeros(weight.shape, dtype=torch.uint8 if bits <= 8 else torch.int32)
        codes[kept] = (assignment + 1).to(codes.dtype)
        module.register_buffer("weight_codebook", codebook)
        module.register_buffer("weight_codes", codes)
        with torch.no_grad():
            (module.weight_orig if pruned else module.weight).copy_(codebook[codes.long()])
    return model


def quantize_random(model, bits, keep, rng, skewed=False):
    """Prune with a random mask and draw random codes and a random sorted codebook per layer.

    Codes are uniform over 1..2**bits - 1, or geometric (mostly small codes) when ``skewed``.
    """
    for module in compressible_layers(model).values():
        shape = tuple(module.weight.shape)
        mask = torch.from_numpy(rng.random(shape) < keep).float()
        prune.custom_from_mask(module, "weight", mask)
        codebook = np.concatenate(([0.0], np.sort(rng.normal(size=(1 << bits) - 1))))
        if skewed:
            drawn = np.minimum(rng.geometric(0.4, shape), (1 << bits) - 1)
        else:
            drawn = rng.integers(1, 1 << bits, shape)
        codes = torch.from_numpy(drawn)
        codes = codes.to(torch.uint8 if bits <= 8 else torch.int32)
        codes[mask == 0] = 0
        module.register_buffer("weight_codebook", torch.from_numpy(codebook).float())
        module.register_buffer("weight_codes", codes)
        with torch.no_grad():
            module.weight_orig.copy_(module.weight_codebook[codes.long()])
    return model


def effective_weights(model):
    out = {}
    for name, module in compressible_layers(model).items():
        weight = module.weight_orig * module.weight_mask if hasattr(module, "weight_mask") else module.weight
        out[name] = weight.detach().clone()
    return out


def bit_pattern(tensor):
    return tensor.contiguous().view(torch.int32)


@pytest.fixture(scope="module")
def lenet300_q():
    torch.manual_seed(0)
    model = build_model("lenet300", weights="random")
    return quantize_by_hand(prune_by_hand(model, LENET300_KEEP), bits=6)


@pytest.fixture(scope="module")
def lenet5_q():
    torch.manual_seed(1)
    model = build_model("lenet5", weights="random")
    prune_by_hand(model, {"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19})
    return quantize_by_hand(model, bits=5)


@pytest.mark.parametrize("mode", container.MODES)
def test_roundtrip_lenet300_bitwise(lenet300_q, mode):
    data = encode_model(lenet300_q, mode)
    loaded = decode_model(data)
    saved = effective_weights(lenet300_q)
    for name, module in compressible_layers(loaded).items():
        assert torch.equal(bit_pattern(module.weight), bit_pattern(saved[name])), name
        assert torch.equal(module.bias, compressible_layers(lenet300_q)[name].bias), name


@pytest.mark.parametrize("mode", container.MODES)
def test_roundtrip_lenet5_conv(lenet5_q, mode):
    loaded = decode_model(encode_model(lenet5_q, mode))
    saved = effective_weights(lenet5_q)
    for name, module in compressible_layers(loaded).items():
        assert module.weight.shape == saved[name].shape
        assert torch.equal(bit_pattern(module.weight), bit_pattern(saved[name])), name


def test_roundtrip_same_outputs(lenet5_q):
    loaded = decode_model(encode_model(lenet5_q, "huffman"))
    images = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    lenet5_q.eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), lenet5_q(images))


@pytest.mark.parametrize("mode", container.MODES)
def test_reencode_is_identical(lenet300_q, mode):
    data = encode_model(lenet300_q, mode)
    assert encode_model(decode_model(data), mode) == data


def test_loaded_codes_buffers(lenet300_q):
    loaded = decode_model(encode_model(lenet300_q, "quantized"))
    for name, module in compressible_layers(loaded).items():
        original = compressible_layers(lenet300_q)[name]
        assert module.weight_codes.dtype == torch.uint8
        assert torch.equal(module.weight_codes, original.weight_codes)
        assert torch.equal(module.weight_codebook, original.weight_codebook)


def test_load_without_codes(lenet300_q):
    loaded = decode_model(encode_model(lenet300_q, "huffman"), attach_codes=False)
    assert not hasattr(compressible_layers(loaded)["ip1"], "weight_codes")


def test_loaded_model_in_eval_mode(lenet300_q):
    assert not decode_model(encode_model(lenet300_q, "pruned")).training


def test_pruned_mode_without_codebook():
    torch.manual_seed(3)
    model = prune_by_hand(build_model("lenet300", weights="random"), LENET300_KEEP)
    loaded = decode_model(encode_model(model, "pruned"))
    saved = effective_weights(model)
    for name, module in compressible_layers(loaded).items():
        # -0.0 from masking reads back as +0.0; values compare equal.
        assert torch.equal(module.weight, saved[name])
        assert int((module.weight != 0).sum()) == int((saved[name] != 0).sum())


def test_pruned_mode_dense_model_keeps_nonzeros():
    torch.manual_seed(4)
    model = build_model("lenet300", weights="random")
    with torch.no_grad():
        model.ip2.weight[model.ip2.weight.abs() < 0.05] = 0.0
    loaded = decode_model(encode_model(model, "pruned"))
    assert torch.equal(loaded.ip2.weight, model.ip2.weight)
    assert torch.equal(loaded.ip1.weight, model.ip1.weight)


def test_quantized_dense_model_roundtrip():
    torch.manual_seed(5)
    model = quantize_by_hand(build_model("lenet300", weights="random"), bits=4)
    loaded = decode_model(encode_model(model, "huffman"))
    assert torch.equal(bit_pattern(loaded.ip1.weight), bit_pattern(model.ip1.weight))


def test_twelve_bit_codes():
    model = quantize_random(build_model("lenet300", weights="random"), 12, 0.5, np.random.default_rng(6))
    for mode in ("quantized", "huffman"):
        loaded = decode_model(encode_model(model, mode))
        assert compressible_layers(loaded)["ip1"].weight_codes.dtype == torch.int32
        assert torch.equal(bit_pattern(loaded.ip2.weight), bit_pattern(effective_weights(model)["ip2"]))


def test_other_num_classes():
    torch.manual_seed(7)
    model = prune_by_hand(build_model("lenet300", weights="random", num_classes=3), LENET300_KEEP)
    loaded = decode_model(encode_model(model, "pruned"))
    assert loaded.ip3.weight.shape == (3, 100)


def test_save_returns_file_size(lenet300_q, tmp_path):
    path = tmp_path / "lenet300.dcz"
    written = save_compressed(lenet300_q, path, mode="huffman")
    assert written == path.stat().st_size
    loaded = load_compressed(path)
    assert torch.equal(loaded.ip3.weight, effective_weights(lenet300_q)["ip3"])


def test_layout_adds_up(lenet300_q):
    for mode in container.MODES:
        encoded = encode_model_with_layout(lenet300_q, mode)
        assert sum(encoded.layout.values()) == len(encoded.data)
        assert sum(size for _, size, _, _ in encoded.spans) == len(encoded.data)
        offsets = [offset for offset, _, _, _ in encoded.spans]
        assert offsets == sorted(offsets)


def test_huffman_smaller_than_quantized(lenet300_q):
    assert len(encode_model(lenet300_q, "huffman")) < len(encode_model(lenet300_q, "quantized"))


def test_index_bits_int_and_mapping(lenet300_q):
    three = encode_model_with_layout(lenet300_q, "quantized", index_bits=3)
    assert {stats["index_bits"] for stats in three.layers.values()} == {3}
    mixed = encode_model_with_layout(lenet300_q, "quantized", index_bits={"ip1": 8})
    assert mixed.layers["ip1"]["index_bits"] == 8
    assert mixed.layers["ip2"]["index_bits"] == 5  # from dclab.presets' "paper" preset
    loaded = decode_model(mixed.data)
    assert torch.equal(loaded.ip1.weight, effective_weights(lenet300_q)["ip1"])


def test_index_bits_unknown_layer(lenet300_q):
    with pytest.raises(ValueError, match="unknown layers"):
        encode_model(lenet300_q, "quantized", index_bits={"fc6": 4})


@pytest.mark.parametrize("bits", [0, 17, True, 2.5])
def test_index_bits_out_of_range(lenet300_q, bits):
    with pytest.raises(ValueError, match="index_bits"):
        encode_model(lenet300_q, "quantized", index_bits=bits)


def test_preset_weight_bits(lenet300_q):
    encoded = encode_model_with_layout(lenet300_q, "quantized", preset="paper")
    assert encoded.layers["ip1"]["weight_bits"] == 6


def test_preset_weight_bits_too_small():
    torch.manual_seed(8)
    model = quantize_by_hand(prune_by_hand(build_model("lenet300", weights="random"), LENET300_KEEP), bits=7)
    with pytest.raises(ValueError, match="does not fit 6-bit"):
        encode_model(model, "quantized", preset="paper")


def test_unknown_mode(lenet300_q):
    with pytest.raises(ValueError, match="unknown mode"):
        encode_model(lenet300_q, "zip")


def test_huffman_needs_quantized():
    model = prune_by_hand(build_model("lenet300", weights="random"), LENET300_KEEP)
    with pytest.raises(ValueError, match="ip1 is not quantized"):
        encode_model(model, "huffman")


def test_rejects_codebook_zero_entry():
    model = quantize_by_hand(build_model("lenet300", weights="random"), bits=3)
    model.ip2.weight_codebook[0] = 0.5
    with pytest.raises(ValueError, match="reserved for 0.0"):
        encode_model(model, "quantized")


def test_rejects_stale_weights():
    model = quantize_by_hand(build_model("lenet300", weights="random"), bits=3)
    with torch.no_grad():
        model.ip3.weight[0, 0] += 1.0
    with pytest.raises(ValueError, match="weight != weight_codebook"):
        encode_model(model, "huffman")


def test_rejects_code_outside_codebook():
    model = quantize_by_hand(build_model("lenet300", weights="random"), bits=3)
    model.ip1.weight_codes[0, 0] = 9
    with pytest.raises(ValueError, match="outside the codebook"):
        encode_model(model, "quantized")


def test_rejects_float64():
    model = build_model("lenet300", weights="random").double()
    with pytest.raises(ValueError, match="float32"):
        encode_model(model, "pruned")


def test_tensor_bytes_roundtrip_every_dtype():
    for dtype in container._TENSOR_DTYPES.values():
        tensor = (torch.arange(12) % 3).to(dtype).reshape(3, 4)
        raw = container._tensor_bytes(tensor)
        back = container._tensor_from_bytes(raw, dtype, (3, 4))
        assert back.dtype == dtype
        assert torch.equal(back, tensor)


# --- malformed files ------------------------------------------------------


def reseal(data: bytes) -> bytes:
    """Recompute the payload size and checksum after an edit, so the checksum does not hide it."""
    body = bytearray(data[:-4])
    struct.pack_into("<Q", body, 12, len(body) - 20)
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


@pytest.fixture(scope="module")
def small_file(lenet300_q):
    return encode_model_with_layout(lenet300_q, "huffman")


def test_reseal_keeps_valid_file(small_file):
    assert reseal(small_file.data) == small_file.data


def test_wrong_magic(small_file):
    with pytest.raises(CompressedFileError, match="not a dclab compressed file"):
        decode_model(b"PK\x03\x04" + small_file.data[4:])


def test_wrong_version(small_file):
    data = bytearray(small_file.data)
    struct.pack_into("<H", data, 8, 2)
    with pytest.raises(CompressedFileError, match="unsupported file version 2"):
        decode_model(reseal(bytes(data)))


def test_nonzero_flags(small_file):
    data = bytearray(small_file.data)
    struct.pack_into("<H", data, 10, 1)
    with pytest.raises(CompressedFileError, match="flags"):
        decode_model(reseal(bytes(data)))


@pytest.mark.parametrize("size", [0, 10, 23, 24, 100, -1])
def test_truncated(small_file, size):
    with pytest.raises(CompressedFileError):
        decode_model(small_file.data[:size])


def test_appended_byte(small_file):
    with pytest.raises(CompressedFileError, match="announces"):
        decode_model(small_file.data + b"\x00")


def test_bit_flip_fails_checksum(small_file):
    data = bytearray(small_file.data)
    data[len(data) // 2] ^= 0x10
    with pytest.raises(CompressedFileError, match="checksum"):
        decode_model(bytes(data))


def span_of(encoded, owner, part, index=0):
    spans = [(offset, size) for offset, size, o, p in encoded.spans if o == owner and p == part]
    return spans[index]


def test_lying_shape(small_file):
    offset, _ = span_of(small_file, "ip1", "header", 1)  # ndim and shape
    data = bytearray(small_file.data)
    struct.pack_into("<I", data, offset + 1, 0xFFFFFFFF)
    with pytest.raises(CompressedFileError, match="shape"):
        decode_model(reseal(bytes(data)))


def test_lying_entry_count(small_file):
    offset, _ = span_of(small_file, "ip2", "header", 2)  # weight_bits, index_bits, entries
    data = bytearray(small_file.data)
    struct.pack_into("<Q", data, offset + 2, 1 << 62)
    with pytest.raises(CompressedFileError, match="entries"):
        decode_model(reseal(bytes(data)))


def test_lying_codebook_size(small_file):
    offset, _ = span_of(small_file, "ip3", "header", 3)
    data = bytearray(small_file.data)
    struct.pack_into("<I", data, offset, 0xFFFFFFF0)
    with pytest.raises(CompressedFileError, match="codebook"):
        decode_model(reseal(bytes(data)))


def test_lying_bias_size(small_file):
    offset, _ = span_of(small_file, "ip1", "header", 4)
    data = bytearray(small_file.data)
    struct.pack_into("<I", data, offset, 299)
    with pytest.raises(CompressedFileError, match="biases"):
        decode_model(reseal(bytes(data)))


def test_unknown_network(small_file):
    data = bytearray(small_file.data)
    data[21:29] = b"lenet999"  # the name "lenet300" follows its length byte at offset 20
    with pytest.raises(CompressedFileError, match="unknown network"):
        decode_model(reseal(bytes(data)))


def test_codebook_entry_zero_nonzero(small_file):
    offset, _ = span_of(small_file, "ip2", "codebook")
    data = bytearray(small_file.data)
    struct.pack_into("<f", data, offset, 1.0)
    with pytest.raises(CompressedFileError, match="entry 0"):
        decode_model(reseal(bytes(data)))


def test_huffman_table_damage(small_file):
    offset, _ = span_of(small_file, "ip1", "tables")
    data = bytearray(small_file.data)
    struct.pack_into("<Q", data, offset + 1, 10**12)  # the index stream's symbol count
    with pytest.raises(CompressedFileError, match="ip1 index"):
        decode_model(reseal(bytes(data)))


def test_trailing_payload_bytes(small_file):
    data = small_file.data[:-4] + b"\x00\x00" + b"\x00" * 4  # two bytes, then a checksum slot
    with pytest.raises(CompressedFileError, match="unexpected bytes"):
        decode_model(reseal(data))


def test_decode_layers_without_model(small_file):
    network, mode, layers, tensors = decode_layers(small_file.data)
    assert (network, mode) == ("lenet300", "huffman")
    assert [layer.name for layer in layers] == ["ip1", "ip2", "ip3"]
    assert layers[0].entries == small_file.layers["ip1"]["entries"]
    assert tensors == {}


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_compressed(tmp_path / "absent.dcz")


# --- property test over random layers --------------------------------------


@st.composite
def lenet_cases(draw):
    keep = draw(st.sampled_from([0.0, 0.001, 0.05, 0.3, 1.0]))
    bits = draw(st.integers(1, 8))
    index_bits = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    mode = draw(st.sampled_from(container.MODES))
    skewed = draw(st.booleans())
    return keep, bits, index_bits, seed, mode, skewed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lenet_cases())
def test_roundtrip_property(case):
    keep, bits, index_bits, seed, mode, skewed = case
    rng = np.random.default_rng(seed)
    model = quantize_random(build_model("lenet5", weights="random"), bits, keep, rng, skewed)
    loaded = decode_model(encode_model(model, mode, index_bits=index_bits))
    saved = effective_weights(model)
    for name, module in compressible_layers(loaded).items():
        assert torch.equal(bit_pattern(module.weight), bit_pattern(saved[name])), name


@pytest.mark.slow
@pytest.mark.fullscale
def test_alexnet_huffman_roundtrip():
    torch.manual_seed(9)
    model = build_model("alexnet", weights="random")
    rng = np.random.default_rng(9)
    for name, module in compressible_layers(model).items():
        bits = 8 if name.startswith("conv") else 5
        shape = tuple(module.weight.shape)
        codes = rng.integers(0, 1 << bits, shape, dtype=np.uint8)
        codes[rng.random(shape) < 0.9] = 0
        codebook = np.concatenate(([0.0], rng.normal(size=(1 << bits) - 1))).astype(np.float32)
        module.register_buffer("weight_codebook", torch.from_numpy(codebook))
        module.register_buffer("weight_codes", torch.from_numpy(codes))
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(codebook[codes]))
    data = encode_model(model, "huffman")
    loaded = decode_model(data)
    for name, module in compressible_layers(loaded).items():
        original = compressible_layers(model)[name]
        assert torch.equal(bit_pattern(module.weight), bit_pattern(original.weight)), name


def test_trained_lenet300_file_keeps_accuracy(tmp_path):
    """The shipped LeNet-300-100, pruned to Deep Compression's 8/9/26% and given 6-bit codebooks."""
    from dclab.data import load_mnist, make_loader
    from dclab.report import size_report
    from dclab.train import evaluate

    model = quantize_by_hand(prune_by_hand(build_model("lenet300", weights="trained"), LENET300_KEEP), bits=6)
    path = tmp_path / "lenet300.dcz"
    written = save_compressed(model, path, mode="huffman")
    loaded = load_compressed(path)

    saved = effective_weights(model)
    for name, module in compressible_layers(loaded).items():
        assert torch.equal(bit_pattern(module.weight), bit_pattern(saved[name])), name
    test_loader = make_loader(load_mnist(source="bundled").test, batch_size=500)
    before = evaluate(model, test_loader, device="cpu")
    after = evaluate(loaded, test_loader, device="cpu")
    assert after["top1"] == before["top1"]
    assert after["loss"] == before["loss"]
    assert before["top1"] > 0.8  # a trained network survived pruning and quantization
    assert size_report(model).total_bytes("huffman") == written == path.stat().st_size
