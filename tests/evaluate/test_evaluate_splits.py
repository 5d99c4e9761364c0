"""Split runners: the right splits, the right summaries, fit/score plumbing; evaluate_full end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats as sstats
from torch import nn

import distiq as dq
from distiq.evaluate import cross_validate, data_ratios, evaluate_full, ratios_table, repeated_subsampling


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run ~10x faster on one thread when the other core is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Centroids(nn.Module):
    """Nearest class mean: a closed-form "training" that makes split runners fast to test."""

    def __init__(self, data):
        super().__init__()
        x = data.x.flatten(1)
        self.register_buffer("mu", torch.stack([x[data.y == c].mean(0) for c in range(10)]))

    def forward(self, x):
        return -torch.cdist(x.flatten(1), self.mu)


@pytest.fixture(scope="module")
def digits():
    return dq.data.load("digits")


def test_repeated_subsampling(digits):
    est = repeated_subsampling(Centroids, digits, repeats=4, test_fraction=0.25, seed=3)
    assert len(est.runs) == 4 and est.method == "subsampling"
    assert all(r["n_train"] + r["n_test"] == len(digits) for r in est.runs)
    accs = [r["accuracy"] for r in est.runs]
    assert len(set(accs)) > 1  # different splits, different numbers
    s = est.summary["accuracy"]
    lo, hi = sstats.t.interval(0.95, 3, loc=np.mean(accs), scale=sstats.sem(accs))
    assert (s.mean, s.ci_low, s.ci_high) == pytest.approx((np.mean(accs), lo, hi))
    assert "| accuracy |" in est.table()
    json.dumps(est.to_dict())


def test_kfold_tests_every_sample_once(digits):
    est = cross_validate(Centroids, digits, k=3, metrics=("accuracy", "f1_macro", "f1_weighted"))
    assert sum(r["n_test"] for r in est.runs) == len(digits)
    assert set(est.summary) == {"accuracy", "f1_macro", "f1_weighted"}


def test_data_ratios_pass_seed_and_subset_sizes(digits):
    seen = []

    def fit(train, seed):
        seen.append((len(train), seed))
        return Centroids(train)

    test = dq.data.load("digits", "test")
    out = data_ratios(fit, digits, test, ratios=(0.25, 1.0), repeats=2, metrics=("accuracy",))
    assert list(out) == [0.25, 1.0]
    assert seen == [(360, 0), (360, 1), (len(digits), 0), (len(digits), 1)]  # round(1438 / 4) = 360
    assert out[1.0].summary["accuracy"].std == 0.0  # same data, deterministic fit
    assert "| 0.25 | 360 |" in ratios_table(out)


def test_custom_score(digits):
    est = cross_validate(Centroids, digits, k=2, score=lambda m, t: {"n": float(len(t))})
    assert [r["n"] for r in est.runs] == [r["n_test"] for r in est.runs]


def test_evaluate_full_module_and_onnx_agree(tmp_path):
    from distiq.evaluate.latency import export_for_timing

    torch.manual_seed(0)
    data = dq.data.subsample(dq.data.load("digits", "test"), 150, seed=0)
    model = dq.models.create("lenet5", image_size=8)
    teacher = dq.models.create("mlp", image_size=8)
    rep = evaluate_full(model, data, teacher=teacher, bootstrap=50, severities=(2,), runs=3)
    d = json.loads(rep.to_json(tmp_path / "report.json"))
    assert set(d["metrics"]) == {"accuracy", "f1_macro", "f1_weighted", "ece", "agreement"}
    assert np.array(d["confusion_matrix"]).sum() == 150 and len(d["per_class_f1"]) == 10
    assert d["metrics"] == dq.evaluate(
        model, data, ("accuracy", "f1_macro", "f1_weighted", "ece", "agreement"), teacher=teacher
    )
    assert d["complexity"]["macs"] > 0 and d["complexity"]["file_bytes"] > 0
    assert [r["batch_size"] for r in d["latency"]] == [1, 32]
    path = export_for_timing(model, (1, 8, 8), tmp_path / "m.onnx")
    rep2 = evaluate_full(path, data, bootstrap=0, corruptions=(), latency_batch_sizes=())
    assert rep2.metrics["accuracy"] == pytest.approx(rep.metrics["accuracy"])
    assert rep2.complexity.macs == rep.complexity.macs
    assert rep2.complexity.parameters == rep.complexity.parameters
