"""Interval arithmetic, bootstrap and McNemar against hand-worked values and scipy peers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sstats

from distiq.evaluate import bootstrap_ci, mcnemar, spread, t_interval

# Five accuracies of one model on five splits, worked by hand:
# mean 0.82; deviations -0.02, 0, 0.03, 0.01, -0.02; squares sum 0.0018; s² = 0.0018 / 4 = 0.00045;
# s = 0.0212132; t_{0.975, 4} = 2.7764451 (t table); half width = 2.7764451 · 0.0212132 / √5 = 0.0263397.
VALUES = [0.80, 0.82, 0.85, 0.83, 0.80]
MEAN, STD, T_975_4 = 0.82, math.sqrt(0.00045), 2.7764451051977987
HALF = T_975_4 * STD / math.sqrt(5)


def test_t_interval_hand_worked():
    assert HALF == pytest.approx(0.0263397, abs=1e-7)
    lo, hi = t_interval(VALUES)
    assert lo == pytest.approx(MEAN - HALF, abs=1e-12)
    assert hi == pytest.approx(MEAN + HALF, abs=1e-12)


def test_t_interval_agrees_with_scipy():
    # independent check: the table value and scipy's own interval routine
    assert sstats.t.ppf(0.975, 4) == pytest.approx(T_975_4, abs=1e-12)
    lo, hi = sstats.t.interval(0.95, 4, loc=np.mean(VALUES), scale=sstats.sem(VALUES))
    assert t_interval(VALUES) == pytest.approx((lo, hi), abs=1e-12)
    lo90, hi90 = sstats.t.interval(0.90, 4, loc=np.mean(VALUES), scale=sstats.sem(VALUES))
    assert t_interval(VALUES, 0.90) == pytest.approx((lo90, hi90), abs=1e-12)


def test_spread_summary_and_json():
    s = spread(VALUES)
    assert (s.n, s.min, s.max) == (5, 0.80, 0.85)
    assert s.mean == pytest.approx(MEAN) and s.std == pytest.approx(STD)
    assert s.half_width == pytest.approx(HALF)
    assert json.loads(json.dumps(s.to_dict()))["ci_high"] == pytest.approx(MEAN + HALF)
    assert "n=5" in str(s)


def test_spread_of_one_value_has_no_interval():
    s = spread([0.5])
    assert s.std is None and s.ci_low is None and s.ci_high is None
    json.dumps(s.to_dict())  # None, not NaN: valid JSON
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([0.5])
    with pytest.raises(ValueError):
        spread([])


def _pairs(b: int, c: int, both: int = 5):
    """Predictions where A alone is right b times, B alone c times, both right `both` times."""
    y = np.zeros(b + c + both, dtype=int)
    a = np.concatenate([np.zeros(b), np.ones(c), np.zeros(both)]).astype(int)
    bb = np.concatenate([np.ones(b), np.zeros(c), np.zeros(both)]).astype(int)
    return a, bb, y


def test_mcnemar_exact_hand_worked():
    # b = 2, c = 8: p = 2 · P(X <= 2), X ~ Bin(10, 1/2) = 2 · (1 + 10 + 45) / 1024 = 0.109375
    r = mcnemar(*_pairs(2, 8))
    assert (r.only_a_correct, r.only_b_correct, r.method) == (2, 8, "exact")
    assert r.p_value == pytest.approx(112 / 1024, abs=1e-12)
    assert r.p_value == pytest.approx(sstats.binomtest(2, 10, 0.5).pvalue, abs=1e-12)


def test_mcnemar_chi2_with_continuity_correction():
    # b = 30, c = 15: χ² = (|30 - 15| - 1)² / 45 = 196 / 45; 1 dof: p = erfc(√(χ²/2))
    r = mcnemar(*_pairs(30, 15))
    assert r.method == "chi2"
    assert r.statistic == pytest.approx(196 / 45, abs=1e-12)
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(196 / 45 / 2)), abs=1e-12)


def test_mcnemar_no_discordant_pairs_and_forced_forms():
    a, b, y = _pairs(0, 0)
    assert mcnemar(a, b, y).p_value == 1.0
    assert mcnemar(*_pairs(30, 15), exact=True).p_value == pytest.approx(
        sstats.binomtest(15, 45, 0.5).pvalue, abs=1e-12
    )
    assert mcnemar(*_pairs(2, 8), exact=False).statistic == pytest.approx(25 / 10)


def test_bootstrap_accuracy_agrees_with_scipy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.8, y, (y + 1) % 3)
    r = bootstrap_ci(pred, y, "accuracy", n_resamples=4000, seed=1)
    correct = (pred == y).astype(float)
    assert r.estimate == pytest.approx(correct.mean())
    peer = sstats.bootstrap(
        (correct,), np.mean, n_resamples=4000, method="percentile", random_state=2
    ).confidence_interval
    assert r.low == pytest.approx(peer.low, abs=0.008)
    assert r.high == pytest.approx(peer.high, abs=0.008)
    # and both near the normal approximation p ± 1.96·√(p(1-p)/n)
    half = 1.96 * math.sqrt(correct.mean() * (1 - correct.mean()) / 400)
    assert r.high - r.low == pytest.approx(2 * half, rel=0.1)


def test_bootstrap_is_seeded_and_brackets_macro_f1():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    a = bootstrap_ci(pred, y, "f1_macro", n_resamples=300, seed=5)
    b = bootstrap_ci(pred, y, "f1_macro", n_resamples=300, seed=5)
    c = bootstrap_ci(pred, y, "f1_macro", n_resamples=300, seed=6)
    assert a == b and (a.low, a.high) != (c.low, c.high)
    assert a.estimate == pytest.approx(f1_score(y, pred, average="macro"))
    assert a.low < a.estimate < a.high
    json.dumps(a.to_dict())
