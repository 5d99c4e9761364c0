"""Intervals of a fixed model's test accuracy over stratified folds and subsamples, by hand and by peer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sstats

from distiq.evaluate import kfold_scores, subsample_scores

# Six test images, three per class, three stratified folds: every fold holds one image of each class,
# whatever the shuffle. Class 0: two right, one wrong; class 1: all right. So the fold accuracies are
# {1, 1, 1/2} in some order: mean 5/6; deviations 1/6, 1/6, -1/3; s^2 = (1/36 + 1/36 + 4/36) / 2 = 1/12;
# t_{0.975, 2} = 4.302653 (t table); half width = 4.302653 * sqrt(1/12) / sqrt(3) = 4.302653 / 6.
TARGET = np.array([0, 0, 0, 1, 1, 1])
PRED = np.array([0, 0, 1, 1, 1, 1])
T_975_2 = 4.302652729911275


def test_kfold_interval_hand_worked():
    est = kfold_scores(PRED, TARGET, k=3, seed=4)
    s = est.summary["accuracy"]
    assert sorted(s.values) == pytest.approx([0.5, 1.0, 1.0])
    assert s.mean == pytest.approx(5 / 6)
    assert s.std == pytest.approx(math.sqrt(1 / 12))
    assert (s.ci_low, s.ci_high) == pytest.approx((5 / 6 - T_975_2 / 6, 5 / 6 + T_975_2 / 6), abs=1e-9)
    assert [r["n_test"] for r in est.runs] == [2, 2, 2]


def test_kfold_parts_partition_the_test_set_and_agree_with_numpy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.8, y, (y + 1) % 4)
    est = kfold_scores(pred, y, k=5, seed=1)
    assert sum(r["n_test"] for r in est.runs) == 200
    # the mean of equal-sized folds' accuracies is the overall accuracy
    assert est.summary["accuracy"].mean == pytest.approx((pred == y).mean(), abs=1e-12)
    lo, hi = sstats.t.interval(
        0.95, 4, loc=np.mean(est.summary["accuracy"].values), scale=sstats.sem(est.summary["accuracy"].values)
    )
    assert (est.summary["accuracy"].ci_low, est.summary["accuracy"].ci_high) == pytest.approx((lo, hi))


def test_subsamples_keep_size_and_class_shares():
    y = np.repeat(np.arange(3), [40, 40, 20])
    pred = np.where(np.arange(100) % 5 == 0, (y + 1) % 3, y)
    est = subsample_scores(pred, y, repeats=6, fraction=0.5, seed=2, metrics=("accuracy", "f1_macro"))
    assert [r["n_test"] for r in est.runs] == [50] * 6
    assert est.summary["accuracy"].n == 6 and est.summary["f1_macro"].n == 6
    assert 0.6 <= est.summary["accuracy"].min <= est.summary["accuracy"].max <= 1.0
    assert est.summary["accuracy"].ci_low < est.summary["accuracy"].mean < est.summary["accuracy"].ci_high
    again = subsample_scores(pred, y, repeats=6, fraction=0.5, seed=2)
    assert again.summary["accuracy"].values == est.summary["accuracy"].values  # seeded


def test_subsample_needs_two_repeats():
    with pytest.raises(ValueError, match="repeats"):
        subsample_scores(PRED, TARGET, repeats=1, fraction=0.5)


def test_identical_fold_accuracies_have_a_zero_width_interval():
    # class 0 all right, class 1 all wrong, one of each per fold: every fold scores 1/2
    est = kfold_scores(np.zeros(6, dtype=int), TARGET, k=3)
    s = est.summary["accuracy"]
    assert s.values == [0.5, 0.5, 0.5] and (s.ci_low, s.ci_high) == (0.5, 0.5)
