"""Checkpoints and weights files: atomic, pickle-free, exact resume, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.distill import distill
from distiq.engine import load_weights, save_weights, train
from distiq.engine.checkpoint import flatten_optimizer, load_checkpoint, unflatten_optimizer
from distiq.errors import DataError, DistiqError


def data(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(4, 1, 6, 6, generator=g)[y] + 0.8 * torch.randn(n, 1, 6, 6, generator=g)
    return ArrayDataset(x, y)


def convnet(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(width * 4, 4),
    )


class Interrupt(Exception):
    pass


def run_distill(student, ckpt, on_epoch_end=None, **augment):
    teacher = convnet(16, seed=1)
    train(teacher, data(), epochs=2, progress=False)
    return distill(
        teacher,
        student,
        data(),
        data(80, seed=3),
        loss="kd",
        alpha=0.7,
        epochs=4,
        features=[{"kind": "hint", "student": "3", "teacher": "3", "weight": 0.5}],
        checkpoint_dir=str(ckpt),
        progress=False,
        batch_size=32,
        on_epoch_end=on_epoch_end,
        **augment,
    )


@pytest.mark.parametrize("augment", [{}, {"augment_flip": True, "augment_shift": 1}])
def test_killed_distillation_resumes_to_identical_weights(tmp_path, augment):
    reference = run_distill(convnet(6, seed=2), tmp_path / "a", **augment).model

    def stop_after_second(epoch, record):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_distill(convnet(6, seed=2), tmp_path / "b", stop_after_second, **augment)
    assert json.loads((tmp_path / "b" / "state.json").read_text())["epoch"] == 2
    # resume into a freshly initialised student: everything must come from the checkpoint
    resumed = run_distill(convnet(6, seed=99), tmp_path / "b", **augment)
    assert resumed.resumed_from == 2
    assert len(resumed.history) == 4
    for k, v in reference.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_checkpoint_holds_only_the_latest_files(tmp_path):
    train(convnet(4, 0), data(), epochs=3, checkpoint_dir=str(tmp_path), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000003.safetensors", "state.json"]
    tensors, meta = load_checkpoint(tmp_path)
    assert meta["epoch"] == 3 and len(meta["history"]) == 3
    assert any(k.startswith("optimizer.") for k in tensors)


def test_checkpoint_pointing_to_missing_file_is_an_error(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"file": "ckpt-000009.safetensors", "epoch": 9}))
    with pytest.raises(DataError, match="ckpt-000009"):
        load_checkpoint(tmp_path)


def test_optimizer_state_round_trip():
    model = convnet(4, 0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(2, 1, 6, 6)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer(opt.state_dict())
    meta = json.loads(json.dumps(meta))  # must survive JSON
    restored = unflatten_optimizer(tensors, meta)
    opt2 = torch.optim.Adam(model.parameters(), lr=0.01)
    opt2.load_state_dict(restored)
    for pid, slots in opt.state_dict()["state"].items():
        for key, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt2.state_dict()["state"][pid][key]))


def test_weights_round_trip_and_mismatch_names_layer(tmp_path):
    a, b = convnet(4, 0), convnet(4, 1)
    path = save_weights(a, tmp_path / "w.safetensors")
    load_weights(b, path)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    with pytest.raises(DistiqError, match=r"0\.weight: file has \(4, 1, 3, 3\)"):
        load_weights(convnet(5, 0), path)


def test_corrupt_or_missing_weights_file_names_path(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DataError, match="bad.safetensors"):
        load_weights(convnet(4, 0), bad)
    with pytest.raises(DataError, match="nope.safetensors"):
        load_weights(convnet(4, 0), tmp_path / "nope.safetensors")
