"""The stage measurements the report shows: robustness on a declared draw of the test split."""

from __future__ import annotations

import torch

import distiq as dq
from distiq.pipeline.measure import measure
from distiq.pipeline.recipe import EvaluateSpec


def test_robustness_on_a_declared_sample_of_the_test_split(tmp_path):
    torch.manual_seed(0)
    model = dq.models.create("mlp", image_size=8, hidden=(16,)).eval()
    test = dq.data.load("digits", "test")
    onnx = dq.export_onnx(model, tmp_path / "m.onnx", test.x[:1])
    spec = EvaluateSpec(latency=False, bootstrap=0, robustness_samples=40)
    metrics = measure(model, onnx, test, spec)
    assert metrics["robustness_samples"] == 40 < len(test)
    curves = list(metrics["robustness"].values())
    assert curves and all(abs(v * 40 - round(v * 40)) < 1e-9 for c in curves for v in c.values())
    assert measure(model, onnx, test, EvaluateSpec(latency=False, bootstrap=0))["robustness_samples"] == len(
        test
    )
