"""Corruptions against scipy and hand values; determinism; accuracy under corruption."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import distiq as dq
from distiq.data.arrays import ArrayDataset
from distiq.evaluate import corrupt, robustness
from distiq.evaluate.robustness import NOISE_SIGMA, gaussian_blur


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run ~10x faster on one thread when the other core is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_blur_hand_worked(sigma):
    # a unit impulse far from the borders spreads as the outer product of the 1-D Gaussian weights
    radius = int(4 * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    w /= w.sum()
    size = 2 * radius + 5
    x = torch.zeros(1, 1, size, size, dtype=torch.float64)
    x[0, 0, size // 2, size // 2] = 1.0
    got = gaussian_blur(x, sigma)[0, 0].numpy()
    lo = size // 2 - radius
    np.testing.assert_allclose(
        got[lo : lo + 2 * radius + 1, lo : lo + 2 * radius + 1], np.outer(w, w), atol=1e-12
    )
    assert got.sum() == pytest.approx(1.0)
    flat = torch.full((2, 3, 5, 7), 0.25, dtype=torch.float64)  # edges repeat: a constant image stays
    np.testing.assert_allclose(gaussian_blur(flat, sigma).numpy(), 0.25, atol=1e-12)


def test_contrast_hand_worked():
    # image [0, 1, 0, 1] has mean 0.5; severity 2 scales deviations by 0.5 -> [0.25, 0.75, 0.25, 0.75]
    ds = ArrayDataset(torch.tensor([0.0, 1.0, 0.0, 1.0]).reshape(1, 1, 2, 2), torch.tensor([0]))
    out = corrupt(ds, "contrast", 2)
    assert out.x.flatten().tolist() == [0.25, 0.75, 0.25, 0.75]


def test_noise_is_seeded_clipped_and_scaled():
    ds = ArrayDataset(torch.full((4, 1, 16, 16), 0.5), torch.zeros(4, dtype=torch.long))
    ds.x[0, 0, 0, 0], ds.x[0, 0, 0, 1] = 0.0, 1.0  # value range [0, 1]
    a, b = corrupt(ds, "gaussian_noise", 3, seed=0), corrupt(ds, "gaussian_noise", 3, seed=0)
    c = corrupt(ds, "gaussian_noise", 3, seed=1)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert a.x.min() >= 0 and a.x.max() <= 1
    delta = (a.x - ds.x)[1:]  # mid-grey images: clipping at 0.5 ± 0.12·4σ is rare
    assert float(delta.std()) == pytest.approx(NOISE_SIGMA[2], rel=0.1)
    assert torch.equal(a.y, ds.y)


def test_unknown_corruption_and_bad_severity():
    ds = ArrayDataset(torch.zeros(1, 1, 4, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match="known: blur, contrast, gaussian_noise"):
        corrupt(ds, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(ds, "blur", 6)


def test_robustness_of_a_trained_model():
    torch.manual_seed(0)
    data = dq.data.load("digits", "test")
    model = dq.models.create("mlp", image_size=8)
    dq.train(model, dq.data.load("digits"), epochs=3, lr=1e-2, progress=False)
    r = robustness(model, data, severities=(1, 5))
    assert r.clean_accuracy == pytest.approx(dq.evaluate(model, data)["accuracy"], abs=1e-6)
    assert set(r.accuracy) == {"gaussian_noise", "blur", "contrast"}
    assert all(set(v) == {"1", "5"} for v in r.accuracy.values())
    # heavier corruption hurts more, and the run repeats exactly
    assert r.accuracy["gaussian_noise"]["5"] < r.accuracy["gaussian_noise"]["1"] <= r.clean_accuracy + 0.02
    assert robustness(model, data, severities=(1, 5)) == r
    json.dumps(r.to_dict())
