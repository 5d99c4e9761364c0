"""The dataset registry (load / names) and the fixed digits split, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import distiq.data as dq_data


def test_names_and_unknown_name():
    assert dq_data.names() == ["digits", "fashion-mnist"]
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as e:
        dq_data.load("mnist")
    assert "digits" in str(e.value) and "fashion-mnist" in str(e.value)


def test_unknown_split():
    with pytest.raises(ValueError, match="train, test"):
        dq_data.load("digits", split="val")


def test_digits_split_is_stratified_disjoint_and_complete():
    ref = load_digits()
    train, test = dq_data.load("digits"), dq_data.load("digits", split="test")
    assert train.input_shape == (1, 8, 8) and train.x.dtype == torch.float32
    assert len(train) + len(test) == 1797 == len(ref.target)
    # each class: round-half-up(0.2 * n_c) in test
    expected = np.floor(np.bincount(ref.target) * 0.2 + 0.5).astype(int)
    assert torch.bincount(test.y, minlength=10).tolist() == expected.tolist()

    # as multisets of (image, label), train + test is exactly the full set: disjoint and covering
    def keys(x: np.ndarray, y: np.ndarray) -> list[bytes]:
        return sorted(xi.tobytes() + bytes([yi]) for xi, yi in zip(x, y, strict=True))

    full = keys((ref.images / 16).astype(np.float32), ref.target)
    got = keys(torch.cat([train.x, test.x])[:, 0].numpy(), torch.cat([train.y, test.y]).numpy())
    assert got == full


def test_digits_values_and_determinism():
    a, b = dq_data.load("digits", "test"), dq_data.load("digits", "test")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.x.data_ptr() != b.x.data_ptr()
    assert a.x.max().item() == 1.0 and a.x.min().item() == 0.0
    assert torch.equal(a.x * 16, (a.x * 16).round())  # pixels are 0..16 divided by 16
    assert a.classes == [str(i) for i in range(10)] and a.name == "digits:test"
