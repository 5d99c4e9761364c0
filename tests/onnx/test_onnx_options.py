"""Options of ``quantize_onnx`` that change the file: ``skip``, ``per_channel``, ``target``, and what
the deployability check is run on when no check data are given."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import distiq as dq
from distiq.onnx import report_path
from distiq.quant.deploy import DeploymentWarning, kernels


@pytest.fixture(scope="module")
def small(tmp_path_factory, export, stripes, train_briefly):
    """A small trained CNN (an untrained one has near-tied logits, whose top-1 flips under any noise)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip
    train_briefly(model, stripes(512, seed=4), epochs=6)
    calib = stripes(64, seed=5).x
    return export(model, tmp_path_factory.mktemp("opts") / "small.onnx", calib[:2]), calib


def _report(path) -> dict:
    return json.loads(report_path(path).read_text())


def test_skip_keeps_a_layer_float_without_a_warning(small, tmp_path):
    path, calib = small
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = dq.quantize_onnx(path, calib, tmp_path / "q.onnx", method="minmax", skip=["2"])
    assert caught == []
    report = _report(out)
    assert [e["layer"] for e in report["layers"]] == ["6"]
    floats = {e["layer"]: e for e in report["float_nodes"]}
    assert floats["2"]["chosen"] and floats["2"]["reason"] == "kept in float on request (skip)"
    assert floats["0"]["chosen"] and "3 input channel(s)" in floats["0"]["reason"]
    assert {k.layer: k.runtime_op for k in kernels(out)}["6"] == "QGemm"
    by_layer = {k["layer"]: k for k in report["deploy"]["after"]}
    assert by_layer["2"]["kernel"] == "float" and by_layer["2"]["reason"].startswith("kept in float")


def test_a_skip_typo_names_the_closest_layers(small, tmp_path):
    path, calib = small
    with pytest.raises(dq.DistiqError, match=r"skip: no Conv/Gemm/MatMul named '22'; closest: 2"):
        dq.quantize_onnx(path, calib, tmp_path / "q.onnx", skip=["22"])


def test_per_tensor_weights_and_the_generic_weight_range(small, tmp_path):
    path, calib = small
    options = {"method": "minmax", "per_channel": False, "target": "generic", "thin_conv_channels": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeploymentWarning)  # top-1 agreement is not what this is about
        out = dq.quantize_onnx(path, calib, tmp_path / "q.onnx", **options)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    weights = {k: v for k, v in inits.items() if k.endswith(".weight_int8")}
    assert set(weights) == {"0.weight_int8", "2.weight_int8", "6.weight_int8"}
    for name, q in weights.items():
        scale = inits[name.replace("_int8", "_scale")]
        assert scale.shape == () and q.dtype == np.int8
        assert np.abs(q).max() == 64  # generic target: [-64, 64], every CPU's kernels exact
    assert {k.kernel for k in kernels(out)} == {"integer"}
    assert _report(out)["target"] == "generic"


def test_without_check_data_the_check_says_it_ran_on_calibration_samples(small, tmp_path):
    path, calib = small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeploymentWarning)  # 32 samples: one flip is a warning
        out = dq.quantize_onnx(path, calib, tmp_path / "q.onnx", method="minmax", check_samples=32)
    report = _report(out)
    assert report["checked_on"] == "calibration samples (not held out)"
    assert report["deploy"]["samples"] == 32 and report["deploy"]["accuracy"] is None  # no labels
    assert report["deploy"]["agreement"] >= 0.9
