"""Normalizer: statistics against hand-worked values and torch's own mean/std."""

from __future__ import annotations

import json
import math

import pytest
import torch

from distiq.data import ArrayDataset, Normalizer, split
from distiq.data import normalize as norm_mod


def two_channel() -> ArrayDataset:
    # channel 0 holds 0, 2, 4, 6 over two 1x2 images; channel 1 is constant 1
    x = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]], [[[4.0, 6.0]], [[1.0, 1.0]]]])
    return ArrayDataset(x, torch.tensor([0, 1]))


def test_fit_hand_computed():
    n = Normalizer.fit(two_channel())
    # mean 3; population variance (9 + 1 + 1 + 9) / 4 = 5
    assert n.mean.tolist() == pytest.approx([3.0, 1.0])
    assert n.std[0].item() == pytest.approx(math.sqrt(5))
    assert n.std[1].item() == pytest.approx(norm_mod.MIN_STD)  # constant channel: no division by zero
    out = n(two_channel())
    assert out.x[0, 0, 0].tolist() == pytest.approx([-3 / math.sqrt(5), -1 / math.sqrt(5)])
    assert out.x[:, 1].abs().max().item() == 0.0
    assert out.y.tolist() == [0, 1]


def test_fit_matches_torch_in_chunks(monkeypatch):
    monkeypatch.setattr(norm_mod, "_CHUNK", 3)  # several chunks even on 10 rows
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 4, 5, generator=g) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1)
    n = Normalizer.fit(ArrayDataset(x, torch.zeros(10, dtype=torch.long)))
    torch.testing.assert_close(n.mean, x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(n.std, x.std(dim=(0, 2, 3), unbiased=False))
    out = n(ArrayDataset(x, torch.zeros(10, dtype=torch.long))).x
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), unbiased=False), torch.ones(3))
    torch.testing.assert_close(n.inverse(out), x)


def test_val_uses_train_statistics_and_input_is_not_mutated():
    x = torch.arange(20, dtype=torch.float32).view(20, 1, 1, 1)
    ds = ArrayDataset(x, torch.tensor([0, 1] * 10))
    train, val = split(ds, 0.5, seed=0)
    n = Normalizer.fit(train)
    torch.testing.assert_close(n.mean, train.x.mean().view(1))
    before = val.x.clone()
    out = n(val)
    torch.testing.assert_close(out.x, (before - train.x.mean()) / train.x.std(unbiased=False))
    assert torch.equal(val.x, before)


def test_dict_round_trip_is_json_safe():
    n = Normalizer([0.5, 0.25], [2.0, 0.125])
    d = json.loads(json.dumps(n.to_dict()))
    assert d == {"mean": [0.5, 0.25], "std": [2.0, 0.125]}
    m = Normalizer.from_dict(d)
    assert torch.equal(m.mean, n.mean) and torch.equal(m.std, n.std)
    with pytest.raises(ValueError, match="std"):
        Normalizer.from_dict({"mean": [0.0]})


def test_validation():
    with pytest.raises(ValueError, match="one value per channel"):
        Normalizer([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="> 0"):
        Normalizer([0.0], [0.0])
    with pytest.raises(ValueError, match="1 channels"):
        Normalizer([0.0], [1.0]).apply(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="empty"):
        Normalizer.fit(ArrayDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long)))
