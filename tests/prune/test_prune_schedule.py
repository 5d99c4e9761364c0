"""The cubic schedule of Zhu & Gupta (2017), checked against hand-computed values and during training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.errors import DistiqError
from distiq.prune import CubicSchedule, cubic_sparsity, fine_tune, fold_masks_, sparsity_table


def test_hand_computed_values():
    # s_f = 0.9, s_i = 0, t0 = 10, n = 4, dt = 5: s = 0.9 - 0.9 (1 - k/4)^3 after k pruning steps
    s = CubicSchedule(final=0.9, initial=0.0, begin=10, steps=4, every=5)
    expected = {
        0: 0.0,
        9: 0.0,
        10: 0.0,
        14: 0.0,
        15: 0.9 - 0.9 * 0.75**3,  # 0.5203125
        19: 0.9 - 0.9 * 0.75**3,  # constant between pruning steps
        20: 0.9 - 0.9 * 0.5**3,  # 0.7875
        25: 0.9 - 0.9 * 0.25**3,  # 0.8859375
        30: 0.9,
        1000: 0.9,
    }
    for t, value in expected.items():
        assert s.sparsity_at(t) == pytest.approx(value, abs=1e-12), t
    assert s.sparsity_at(15) == pytest.approx(0.5203125)
    assert s.end == 30
    # s_i > 0: the first pruning step jumps to it
    assert cubic_sparsity(10, 0.9, 0.5, 10, 4, 5) == pytest.approx(0.5)
    assert cubic_sparsity(20, 0.9, 0.5, 10, 4, 5) == pytest.approx(0.9 - 0.4 * 0.125)


def test_over_spreads_the_ramp():
    s = CubicSchedule.over(0.8, total_steps=100, ramp=0.6, prunes=20)
    assert (s.begin, s.every, s.steps, s.end) == (0, 3, 20, 60)
    values = [s.sparsity_at(t) for t in range(101)]
    assert values == sorted(values) and values[60] == pytest.approx(0.8) and values[59] < 0.8


@pytest.mark.parametrize(
    "kwargs", [dict(final=1.0), dict(final=0.5, initial=0.6), dict(final=0.5, every=0), dict(final=-0.1)]
)
def test_bad_schedules_are_clear_errors(kwargs):
    with pytest.raises(DistiqError):
        CubicSchedule(**kwargs)


def test_gradual_pruning_follows_the_schedule_during_training():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(160) % 2
    data = ArrayDataset(torch.randn(160, 1, 4, 4, generator=g) + y.view(-1, 1, 1, 1), y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 2))
    schedule = CubicSchedule(final=0.75, steps=4, every=2)  # ends after 8 steps
    result = fine_tune(model, data, data, gradual=schedule, epochs=3, batch_size=32, lr=1e-2, progress=False)
    n_weights = 16 * 20 + 20 * 2
    steps_per_epoch = math.ceil(160 / 32)
    for epoch, record in enumerate(result.history):
        step = (epoch + 1) * steps_per_epoch
        expected = round(schedule.sparsity_at(step) * n_weights) / n_weights
        assert record["sparsity"] == pytest.approx(expected), epoch
        assert "val_accuracy" in record  # measured, though the last epoch is kept
    fold_masks_(model)
    assert sparsity_table(model)["total"]["nonzero"] == n_weights - round(0.75 * n_weights)


def test_gradual_refuses_to_resume_or_stop_early(tmp_path):
    data = ArrayDataset(torch.randn(8, 1, 2, 2), torch.arange(8) % 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(DistiqError, match="checkpoint_dir"):
        fine_tune(model, data, gradual=CubicSchedule(0.5), epochs=1, checkpoint_dir=str(tmp_path))
