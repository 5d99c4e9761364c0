"""The training loop: learns, reproduces, stops when told, resumes bit-identically."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.data.views import ImageViews
from distiq.engine import TrainConfig, train
from distiq.engine.objective import Objective
from distiq.errors import DistiqError


def blobs(n: int = 400, seed: int = 0) -> ArrayDataset:
    """Three Gaussian blobs as 1x4x4 images: easy, but not solvable in one step."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centers = torch.randn(3, 16, generator=g) * 1.5
    x = centers[y] + torch.randn(n, 16, generator=g)
    return ArrayDataset(x.reshape(n, 1, 4, 4), y)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_learns_blobs():
    data = blobs()
    result = train(tiny_net(), data, blobs(200, seed=0), epochs=8, lr=1e-2, progress=False)
    assert result.history[-1]["val_accuracy"] > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_same_seed_same_weights_other_seed_differs():
    data = blobs()
    a = train(tiny_net(), data, epochs=3, seed=1, progress=False).model
    b = train(tiny_net(), data, epochs=3, seed=1, progress=False).model
    c = train(tiny_net(), data, epochs=3, seed=2, progress=False).model
    for k, v in weights(a).items():
        assert torch.equal(v, b.state_dict()[k])
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in weights(a).items())


def test_target_accuracy_stops_early():
    data = blobs()
    result = train(tiny_net(), data, data, epochs=30, lr=1e-2, target_accuracy=0.8, progress=False)
    assert result.stopped == "target_accuracy"
    assert len(result.history) < 30
    assert result.history[-1]["val_accuracy"] >= 0.8
    assert all(h["val_accuracy"] < 0.8 for h in result.history[:-1])


def test_early_stopping_restores_best_epoch():
    data = blobs(60)
    val = blobs(60, seed=5)  # different centres: validation cannot keep improving
    result = train(tiny_net(), data, val, epochs=40, lr=5e-2, patience=2, progress=False)
    assert result.stopped == "early_stopping"
    accs = [h["val_accuracy"] for h in result.history]
    assert result.best_epoch == accs.index(max(accs))
    assert len(accs) - 1 - result.best_epoch == 2
    from distiq.engine.train import evaluate_loss_accuracy

    assert evaluate_loss_accuracy(result.model, val, 256)["accuracy"] == pytest.approx(max(accs))


def test_lr_schedule_hand_values():
    cfg = TrainConfig(epochs=4, lr=0.1, schedule="cosine")
    assert [round(cfg.lr_at(e), 6) for e in range(4)] == [0.1, 0.085355, 0.05, 0.014645]
    warm = TrainConfig(epochs=5, lr=0.1, schedule="constant", warmup_epochs=1)
    assert warm.lr_at(0) == pytest.approx(0.05) and warm.lr_at(3) == pytest.approx(0.1)
    step = TrainConfig(epochs=9, lr=1.0, schedule="step")
    assert [step.lr_at(e) for e in (0, 2, 3, 6, 8)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("optimizer", "lbfgs"), ("lr", -1.0), ("monitor", "acc"), ("target_accuracy", 95)],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(DistiqError, match=field):
        TrainConfig(**{field: value})


def test_unknown_option_is_rejected():
    with pytest.raises(DistiqError, match="epoch_count"):
        train(tiny_net(), blobs(), epoch_count=3)


def test_jsonl_log_has_one_record_per_epoch(tmp_path):
    import json

    log = tmp_path / "m.jsonl"
    train(tiny_net(), blobs(), blobs(100), epochs=3, log_path=str(log), progress=False)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert {"train_loss", "train_accuracy", "val_accuracy", "lr"} <= set(records[0])


class Recording(Objective):
    """Cross-entropy, keeping every batch's inputs and row indices."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, model, x, y, index):
        self.seen.append((x.clone(), index.clone()))
        return super().forward(model, x, y, index)


def test_augmented_training_sees_view_index_div_n_of_sample_index_mod_n():
    data = blobs(90)
    views = ImageViews(flip=True, shift=1)
    objective = Recording()
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    train(
        net,
        data,
        objective=objective,
        epochs=2,
        batch_size=32,
        augment_flip=True,
        augment_shift=1,
        progress=False,
    )
    index = torch.cat([i for _, i in objective.seen])
    assert len(index) == 2 * len(data) and int(index.max()) < views.count * len(data)
    assert len(set((index // len(data)).tolist())) > 9  # many views drawn, not one
    for x, i in objective.seen:
        assert torch.equal(x, views.apply(data.x[i % len(data)], i // len(data)))
    for epoch in range(2):  # each epoch still shows every sample once
        rows = index[epoch * len(data) : (epoch + 1) * len(data)] % len(data)
        assert sorted(rows.tolist()) == list(range(len(data)))


def test_augmentation_off_leaves_the_options_of_earlier_runs_and_checkpoints_as_they_were():
    assert {"augment_flip", "augment_shift"} <= set(TrainConfig.model_fields)
    assert not {"augment_flip", "augment_shift"} & set(TrainConfig().identity())
    assert not {"augment_flip", "augment_shift"} & set(TrainConfig(augment_shift=0).model_dump())
    on = TrainConfig(augment_flip=True).identity()
    assert on["augment_flip"] is True and "augment_shift" not in on


def test_a_checkpoint_without_augmentation_is_not_resumed_with_it(tmp_path):
    data = blobs(60)
    train(tiny_net(), data, epochs=1, checkpoint_dir=str(tmp_path), progress=False)
    with pytest.raises(DistiqError, match="augment_flip: None -> True"):
        train(tiny_net(), data, epochs=1, checkpoint_dir=str(tmp_path), augment_flip=True, progress=False)
