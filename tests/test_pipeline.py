"""The whole pipeline under quick mode: invariants of every stage and of the file."""

from __future__ import annotations

import argparse

import pytest
import torch

from dclab import models, pipeline, prune
from dclab.container import load_compressed
from dclab.pipeline_cli import config_from_args, parse_layer_values
from dclab.presets import get_preset


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, bundled_mnist):
    """One short pipeline run on LeNet-300-100 with the paper's preset."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DCLAB_QUICK", "1")
    run_dir = tmp_path_factory.mktemp("run")
    cfg = pipeline.PipelineConfig(
        network="lenet300", source="bundled", preset="paper", prune_rounds=2, prune_epochs=1,
        prune_final_epochs=1, quant_epochs=1, out=run_dir / "lenet300.dcz", run_dir=run_dir, progress=False,
    )
    try:
        yield pipeline.compress(cfg, splits=bundled_mnist)
    finally:
        mp.undo()


def test_pipeline_stages_in_order(quick_run):
    assert [row.stage for row in quick_run.stages] == list(pipeline.STAGES)


def test_pipeline_sparsity_equals_plan(quick_run):
    preset = get_preset("lenet300", "paper")
    quantized = pipeline.load_stage_checkpoint("lenet300", quick_run.config.run_dir / "quantized.pt")
    stats = {layer.layer: layer for layer in prune.sparsity_report(quantized).layers}
    for name, setting in preset.layers.items():
        expected_pruned = round(setting.amount * stats[name].weights)
        assert stats[name].pruned == expected_pruned, name


def test_pipeline_codebook_bounds_distinct_values(quick_run):
    preset = get_preset("lenet300", "paper")
    for name, layer in models.compressible_layers(quick_run.model).items():
        nonzero = layer.weight[layer.weight != 0]
        limit = 2 ** preset.layer(name).weight_bits - 1
        assert torch.unique(nonzero).numel() <= limit, name
        assert torch.unique(nonzero).numel() <= layer.weight_codebook.numel() - 1, name


def test_pipeline_loaded_accuracy_equals_quantized(quick_run):
    assert quick_run.stage("huffman").top1 == quick_run.stage("quantized").top1


def test_pipeline_loaded_weights_equal_quantized(quick_run):
    quantized = pipeline.load_stage_checkpoint("lenet300", quick_run.config.run_dir / "quantized.pt")
    loaded = load_compressed(quick_run.file_path)
    for name, layer in models.compressible_layers(quantized).items():
        reloaded = models.compressible_layers(loaded)[name]
        assert torch.equal(layer.weight, reloaded.weight), name
        assert torch.equal(layer.bias, reloaded.bias), name


def test_pipeline_report_total_equals_file_size(quick_run):
    on_disk = quick_run.file_path.stat().st_size
    assert quick_run.size_report.total_bytes("huffman") == on_disk
    assert quick_run.stage("huffman").size_bytes == on_disk


def test_pipeline_sizes_shrink_each_stage(quick_run):
    sizes = [row.size_bytes for row in quick_run.stages]
    assert sizes == sorted(sizes, reverse=True)
    assert quick_run.stage("dense").size_bytes == 266_610 * 4


def test_pipeline_ratio_is_dense_over_file(quick_run):
    final = quick_run.stage("huffman")
    assert final.ratio == pytest.approx(266_610 * 4 / quick_run.file_path.stat().st_size)


def test_pipeline_tables_name_every_stage(quick_run):
    table = quick_run.stage_table()
    for stage in pipeline.STAGES:
        assert f"| {stage} |" in table
    assert "ip1" in quick_run.layer_table()


def test_pipeline_resume_from_pruned(quick_run, bundled_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("DCLAB_QUICK", "1")
    cfg = pipeline.PipelineConfig(
        network="lenet300", source="bundled", preset="paper", quant_epochs=1,
        out=tmp_path / "resumed.dcz", run_dir=quick_run.config.run_dir, resume_from="pruned", progress=False,
    )
    resumed = pipeline.compress(cfg, splits=bundled_mnist)
    assert [row.stage for row in resumed.stages] == ["quantized", "huffman"]
    pruned = pipeline.load_stage_checkpoint("lenet300", quick_run.config.run_dir / "pruned.pt")
    for name, layer in models.compressible_layers(resumed.model).items():
        mask = models.compressible_layers(pruned)[name].weight_mask
        assert torch.equal(layer.weight != 0, mask.bool()), name


def test_pipeline_resume_needs_run_dir(bundled_mnist):
    cfg = pipeline.PipelineConfig(resume_from="pruned", run_dir=None)
    with pytest.raises(ValueError, match="run_dir"):
        pipeline.compress(cfg, splits=bundled_mnist)


def test_pipeline_preset_network_mismatch(bundled_mnist):
    cfg = pipeline.PipelineConfig(network="lenet300", preset=get_preset("lenet5", "paper"))
    with pytest.raises(ValueError, match="lenet5"):
        pipeline.compress(cfg, splits=bundled_mnist)


def test_pipeline_trained_baseline_needs_bundled():
    cfg = pipeline.PipelineConfig(baseline="trained")
    fake = argparse.Namespace(source="torchvision MNIST under /data")
    with pytest.raises(ValueError, match="baseline"):
        pipeline._baseline(cfg, fake, torch.device("cpu"))


def test_parse_layer_values_valid():
    assert parse_layer_values("ip1=0.05, ip2=0.1", float) == {"ip1": 0.05, "ip2": 0.1}
    assert parse_layer_values(None, int) == {}


@pytest.mark.parametrize("text", ["ip1", "=3", "ip1=x"])
def test_parse_layer_values_invalid(text):
    with pytest.raises(ValueError, match="ip1|LAYER"):
        parse_layer_values(text, int)


def _compress_args(**overrides) -> argparse.Namespace:
    args = dict(
        model="lenet300", dataset="mnist", source="bundled", preset="paper", seed=0, baseline="trained",
        prune_rounds=1, prune_epochs=1, prune_final_epochs=1, prune_lr=0.01, prune_weight_decay=0.0, quant_epochs=1, quant_lr=1e-3, reduction="sum",
        init="linear", device=None, out="x.dcz", run_dir=None, resume_from=None, quiet=True,
        keep=None, bits=None, index_bits=None,
    )
    args.update(overrides)
    return argparse.Namespace(**args)


def test_cli_overrides_change_preset():
    cfg = config_from_args(_compress_args(keep="ip1=0.05", bits="ip3=4", index_bits=4))
    preset = cfg.resolved_preset()
    assert preset.layer("ip1").keep == 0.05
    assert preset.layer("ip2").keep == 0.09
    assert preset.layer("ip3").weight_bits == 4
    assert {setting.index_bits for setting in preset.layers.values()} == {4}


def test_cli_override_unknown_layer():
    with pytest.raises(KeyError, match="conv9"):
        config_from_args(_compress_args(keep="conv9=0.5"))
