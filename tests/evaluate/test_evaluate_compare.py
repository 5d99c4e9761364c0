"""Prediction flips and per-class degradation against a hand-worked example and scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, recall_score

import distiq as dq
from distiq.evaluate import compare, compare_predictions, per_class_degradation, prediction_flips

# Hand-worked: reference right on samples 0, 1, 3; candidate right on 0, 2.
Y = [0, 1, 2, 0, 2]
REF = [0, 1, 1, 0, 1]
CAND = [0, 2, 2, 1, 1]


def test_flips_hand_worked():
    f = prediction_flips(REF, CAND, Y)
    # changed: samples 1, 2, 3; broken: 1 and 3; fixed: 2; sample 4 wrong in both, unchanged.
    assert (f.n, f.flipped, f.correct_to_wrong, f.wrong_to_correct, f.wrong_to_wrong) == (5, 3, 2, 1, 0)
    assert f.flip_rate == pytest.approx(0.6) and f.agreement == pytest.approx(0.4)
    assert json.loads(json.dumps(f.to_dict()))["agreement"] == pytest.approx(0.4)


def test_per_class_degradation_hand_worked_and_sklearn():
    changes = per_class_degradation(REF, CAND, Y, classes=["a", "b", "c"])
    # class 0 (samples 0, 3): 2/2 -> 1/2; class 1 (sample 1): 1 -> 0; class 2 (samples 2, 4): 0 -> 1/2
    assert [c.accuracy_drop for c in changes] == pytest.approx([0.5, 1.0, -0.5])
    assert [c.support for c in changes] == [2, 1, 2] and changes[2].name == "c"
    assert [c.accuracy_candidate for c in changes] == pytest.approx(recall_score(Y, CAND, average=None))
    f1_r = f1_score(Y, REF, average=None, zero_division=0)
    f1_c = f1_score(Y, CAND, average=None, zero_division=0)
    assert [c.f1_drop for c in changes] == pytest.approx(f1_r - f1_c)


def test_comparison_bundle():
    cmp = compare_predictions(REF, CAND, Y)
    assert cmp.accuracy_reference == pytest.approx(0.6) and cmp.accuracy_candidate == pytest.approx(0.4)
    assert (cmp.mcnemar.only_a_correct, cmp.mcnemar.only_b_correct) == (2, 1)
    assert cmp.worst_class.index == 1
    out = json.loads(json.dumps(cmp.to_dict()))
    assert out["worst_class"]["index"] == 1 and out["flips"]["flipped"] == 3


def test_compare_models_and_evaluate_agreement():
    data = dq.data.subsample(dq.data.load("digits", "test"), 120, seed=0)
    torch.manual_seed(0)
    a, b = dq.models.create("mlp", image_size=8), dq.models.create("mlp", image_size=8)
    cmp = compare(a, b, data)
    with torch.no_grad():
        pa, pb = a.eval()(data.x).argmax(1).numpy(), b.eval()(data.x).argmax(1).numpy()
    assert cmp.flips.agreement == pytest.approx(np.mean(pa == pb))
    got = dq.evaluate(b, data, ("accuracy", "agreement"), teacher=a)
    assert got["agreement"] == pytest.approx(np.mean(pa == pb))
    assert got["accuracy"] == pytest.approx(np.mean(pb == data.y.numpy()))
    with pytest.raises(ValueError, match="teacher"):
        dq.evaluate(b, data, ("agreement",))
    with pytest.raises(ValueError, match="known: .*agreement.*ece"):
        dq.evaluate(b, data, ("nope",))
