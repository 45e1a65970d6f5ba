"""Tests for dclab.train: seeding, the training loop, evaluation, checkpoints, optimizers."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dclab.data import Splits, fixed_subset, make_loader
from dclab.models import build_model
from dclab.train import (
    evaluate,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    set_seed,
    train,
    train_baseline,
)


@pytest.fixture(scope="module")
def tiny_splits(bundled_mnist) -> Splits:
    """256 training and 100 validation images of the bundled subset: a few batches per epoch.

    The splits are sorted by class, so the images are a seeded random subset rather than the first ones.
    """
    return Splits(
        train=fixed_subset(bundled_mnist.train, 256, seed=0),
        val=fixed_subset(bundled_mnist.val, 100, seed=0),
        test=fixed_subset(bundled_mnist.test, 100, seed=0),
        source=bundled_mnist.source,
        name="MNIST (tiny)",
    )


def _random_loader(samples: int, batch_size: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(samples, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (samples,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def _baseline_state(splits: Splits, seed: int) -> dict[str, torch.Tensor]:
    model, _ = train_baseline("lenet300", splits, seed=seed, epochs=1, progress=False)
    return model.state_dict()


# ---------------------------------------------------------------- seeding


def test_baseline_same_seed_identical(tiny_splits, quick_off):
    first = _baseline_state(tiny_splits, seed=0)
    second = _baseline_state(tiny_splits, seed=0)
    for key, tensor in first.items():
        assert torch.equal(second[key], tensor), key


def test_baseline_other_seed_differs(tiny_splits, quick_off):
    first = _baseline_state(tiny_splits, seed=0)
    other = _baseline_state(tiny_splits, seed=1)
    assert not torch.equal(first["ip1.weight"], other["ip1.weight"])


def test_set_seed_repeats_draws():
    set_seed(7)
    first = torch.rand(5)
    set_seed(7)
    assert torch.equal(torch.rand(5), first)


# ---------------------------------------------------------------- evaluate


class FixedLogits(nn.Module):
    """Returns a fixed logits row per sample; the input contains the sample's row index."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index]


def _ranked_row(order: list[int]) -> torch.Tensor:
    """Logits over 10 classes with order[0] highest, order[1] next, and so on."""
    row = torch.empty(10)
    row[torch.tensor(order)] = torch.arange(10, 0, -1, dtype=torch.float32)
    return row


# Each label's rank among its sample's logits: 1, 1, 2, 5. So top-1 is 2/4, top-2 3/4, top-5 4/4.
RANK_ORDER = list(range(10))
LABELS = torch.tensor([0, 0, 1, 4])
TABLE = torch.stack([_ranked_row(RANK_ORDER)] * 4)


@pytest.fixture
def fixed_loader() -> DataLoader:
    # Batches of 3 and 1, so the counts must add up over uneven batches.
    return DataLoader(TensorDataset(torch.arange(4), LABELS), batch_size=3)


def test_evaluate_topk(fixed_loader):
    result = evaluate(FixedLogits(TABLE), fixed_loader, topk=(1, 2, 5))
    assert result["count"] == 4
    assert result["top1"] == 0.5
    assert result["top2"] == 0.75
    assert result["top5"] == 1.0


def test_evaluate_loss(fixed_loader):
    result = evaluate(FixedLogits(TABLE), fixed_loader)
    expected = (torch.logsumexp(TABLE, dim=1) - TABLE[torch.arange(4), LABELS]).mean().item()
    assert result["loss"] == pytest.approx(expected, rel=1e-6)


def test_evaluate_default_top1_only(fixed_loader):
    result = evaluate(FixedLogits(TABLE), fixed_loader)
    assert "top1" in result
    assert "top5" not in result


def test_evaluate_keeps_mode(fixed_loader):
    model = FixedLogits(TABLE).train()
    evaluate(model, fixed_loader)
    assert model.training


def test_evaluate_empty_loader():
    empty = DataLoader(TensorDataset(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="empty"):
        evaluate(FixedLogits(TABLE), empty)


# ---------------------------------------------------------------- train


def test_train_after_step_count(quick_off):
    calls = []
    model = build_model("lenet300")
    # 100 samples in batches of 32: 4 optimizer steps per epoch.
    train(model, _random_loader(100, 32), epochs=2, after_step=lambda m: calls.append(m), progress=False)
    assert len(calls) == 8
    assert all(call is model for call in calls)


def test_train_after_step_sees_update(quick_off):
    model = build_model("lenet300")
    before = model.ip1.weight.detach().clone()
    changed = []
    train(model, _random_loader(32, 32), epochs=1,
          after_step=lambda m: changed.append(not torch.equal(m.ip1.weight, before)), progress=False)
    assert changed == [True]


def test_train_quick_caps_epochs(quick_on):
    history = train(build_model("lenet300"), _random_loader(32, 32), epochs=5, progress=False)
    assert [row["epoch"] for row in history] == [1, 2]


def test_train_epochs_uncapped(quick_off):
    history = train(build_model("lenet300"), _random_loader(32, 32), epochs=3, progress=False)
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_train_zero_epochs(quick_off):
    model = build_model("lenet300")
    before = model.ip1.weight.detach().clone()
    assert train(model, _random_loader(32, 32), epochs=0, progress=False) == []
    assert torch.equal(model.ip1.weight, before)


def test_train_negative_epochs():
    with pytest.raises(ValueError, match="-1"):
        train(build_model("lenet300"), _random_loader(32, 32), epochs=-1, progress=False)


def test_train_history_val_top1(quick_off):
    loader = _random_loader(64, 32)
    history = train(build_model("lenet300"), loader, epochs=2, val_loader=loader, progress=False)
    assert len(history) == 2
    for row in history:
        assert 0.0 <= row["val_top1"] <= 1.0
        assert 0.0 <= row["train_top1"] <= 1.0
        assert row["loss"] > 0


def test_train_history_no_val(quick_off):
    history = train(build_model("lenet300"), _random_loader(32, 32), epochs=1, progress=False)
    assert "val_top1" not in history[0]


def test_train_learns(tiny_splits, quick_off):
    set_seed(0)
    model = build_model("lenet300")
    train_loader = make_loader(tiny_splits.train, 16, shuffle=True)
    history = train(model, train_loader, epochs=2, lr=0.05, val_loader=make_loader(tiny_splits.val, 100),
                    progress=False)
    # Chance is 10%. With this seed, 32 steps on 256 real digits reach 65%.
    assert history[-1]["val_top1"] > 0.4


def test_train_optimizer_instance(quick_off):
    model = build_model("lenet300")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = model.ip3.bias.detach().clone()
    train(model, _random_loader(32, 32), epochs=1, optimizer=optimizer, progress=False)
    assert not torch.equal(model.ip3.bias, before)


def test_train_unknown_schedule(quick_off):
    with pytest.raises(ValueError, match="'step'"):
        train(build_model("lenet300"), _random_loader(32, 32), epochs=1, lr_schedule="step", progress=False)


def test_baseline_unknown_model(tiny_splits):
    with pytest.raises(ValueError, match="'alexnet'"):
        train_baseline("alexnet", tiny_splits)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet5")
    path = save_checkpoint(model, tmp_path / "nested" / "lenet5.pt")
    assert path.is_file()
    torch.manual_seed(1)
    fresh = build_model("lenet5")
    load_checkpoint(fresh, path)
    for key, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], tensor), key


def test_checkpoint_weights_only(tmp_path):
    path = save_checkpoint(build_model("lenet300"), tmp_path / "lenet300.pt")
    state = torch.load(path, weights_only=True)
    assert set(state) == {"ip1.weight", "ip1.bias", "ip2.weight", "ip2.bias", "ip3.weight", "ip3.bias"}


def test_checkpoint_missing(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError) as excinfo:
        load_checkpoint(build_model("lenet300"), path)
    assert str(path) in str(excinfo.value)


class Payload:
    """A pickled object that records whether unpickling ever ran its code."""

    restored = False

    def __init__(self) -> None:
        self.value = 1  # non-empty state, so unpickling calls __setstate__

    def __setstate__(self, state) -> None:
        Payload.restored = True


def test_checkpoint_rejects_pickle(tmp_path):
    state = build_model("lenet300").state_dict()
    state["payload"] = Payload()
    path = tmp_path / "unsafe.pt"
    torch.save(state, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(build_model("lenet300"), path)
    assert not Payload.restored


# ---------------------------------------------------------------- optimizers


def test_make_optimizer_sgd():
    optimizer = make_optimizer(build_model("lenet300").parameters(), "sgd", lr=0.1, momentum=0.5)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert optimizer.param_groups[0]["momentum"] == 0.5


def test_make_optimizer_adam():
    optimizer = make_optimizer(build_model("lenet300").parameters(), "adam", lr=1e-3, weight_decay=1e-4)
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_make_optimizer_unknown():
    with pytest.raises(ValueError, match="'rmsprop'"):
        make_optimizer(build_model("lenet300").parameters(), "rmsprop")


@pytest.mark.parametrize("lr", [0.0, -0.1])
def test_make_optimizer_bad_lr(lr):
    with pytest.raises(ValueError, match="learning rate"):
        make_optimizer(build_model("lenet300").parameters(), "sgd", lr=lr)
