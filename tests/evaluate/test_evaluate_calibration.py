"""Expected calibration error against a hand-worked example and a loop written from the paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distiq.evaluate import calibration_bins, expected_calibration_error

# Five samples, 15 bins of width 1/15 (edges ..., 0.5333, 0.6, 0.6667, 0.7333, 0.8, ..., 0.9333, 1]:
#   conf 0.95 right -> bin (0.9333, 1]       |1 - 0.95|            = 0.05   weight 1/5
#   conf 0.75 wrong,
#   conf 0.78 right -> bin (0.7333, 0.8]     |0.5 - 0.765|         = 0.265  weight 2/5
#   conf 0.62 right -> bin (0.6, 0.6667]     |1 - 0.62|            = 0.38   weight 1/5
#   conf 0.55 wrong -> bin (0.5333, 0.6]     |0 - 0.55|            = 0.55   weight 1/5
# ECE = (0.05 + 2·0.265 + 0.38 + 0.55) / 5 = 0.302
PROBS = torch.tensor(
    [[0.95, 0.05], [0.75, 0.25], [0.22, 0.78], [0.62, 0.38], [0.45, 0.55]], dtype=torch.float64
)
TARGET = torch.tensor([0, 1, 1, 0, 0])


def test_ece_hand_worked():
    assert expected_calibration_error(PROBS, TARGET) == pytest.approx(0.302, abs=1e-12)


def test_bins_hand_worked():
    bins = calibration_bins(PROBS, TARGET)
    assert len(bins.edges) == 16 and bins.edges[0] == 0 and bins.edges[-1] == 1
    occupied = {i: c for i, c in enumerate(bins.counts) if c}
    assert occupied == {8: 1, 9: 1, 11: 2, 14: 1}
    assert bins.accuracy[11] == 0.5 and bins.confidence[11] == pytest.approx(0.765)


def test_one_bin_is_accuracy_minus_mean_confidence():
    # with M = 1: |mean correct - mean confidence| = |3/5 - (0.95+0.75+0.78+0.62+0.55)/5| = |0.6 - 0.73|
    assert expected_calibration_error(PROBS, TARGET, n_bins=1) == pytest.approx(0.13)


def guo_ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """The loop from Guo et al. (2017)'s reference code, as an independent peer."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs((pred[in_bin] == y[in_bin]).mean() - conf[in_bin].mean())
    return ece


def test_ece_matches_reference_loop_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 7, generator=g)
    y = torch.randint(0, 7, (500,), generator=g)
    probs = torch.softmax(logits.double(), 1)
    expected = guo_ece(probs.numpy(), y.numpy())
    assert expected_calibration_error(probs, y) == pytest.approx(expected, abs=1e-12)


def test_confidence_one_falls_in_last_bin():
    bins = calibration_bins(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert bins.counts[-1] == 1 and bins.ece == 0.0
