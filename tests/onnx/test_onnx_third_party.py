"""A CNN distiq did not build, given only as an ONNX file: residual Add, Concat, global average pool
and a node of another domain (``com.microsoft::Gelu``, put in with ``onnx.helper``). Quantized, it
keeps the float file's accuracy in ONNX Runtime, runs integer kernels, and leaves the unknown node
float with a warning naming it."""

from __future__ import annotations

import json
import warnings

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import distiq as dq
from distiq.onnx import report_path
from distiq.quant.deploy import kernels


class ThirdPartyNet(nn.Module):
    """Written as someone outside distiq would: functional ReLUs, a residual block, two branches
    concatenated, a GELU, adaptive average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.left = nn.Conv2d(16, 8, 1)
        self.right = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(x + self.b(F.relu(self.a(x))))
        x = F.max_pool2d(x, 2)
        x = torch.cat([F.relu(self.left(x)), F.gelu(self.right(x))], 1)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _gelu_to_custom_domain(path) -> None:
    """Move the exported ``Gelu`` (opset 20) to the ``com.microsoft`` domain: a contrib op ONNX Runtime
    runs, but an op of another domain to any quantizer."""
    model = onnx.load(str(path))
    (gelu,) = [n for n in model.graph.node if n.op_type == "Gelu"]
    gelu.domain = "com.microsoft"
    del gelu.attribute[:]
    model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, stripes, train_briefly, export):
    train, test = stripes(1024, seed=0), stripes(1000, seed=1)
    torch.manual_seed(0)
    model = train_briefly(ThirdPartyNet(), train)
    out = tmp_path_factory.mktemp("third_party")
    float_path = export(model, out / "float.onnx", train.x[:2], opset=20)
    _gelu_to_custom_domain(float_path)
    calib = dq.data.subsample(train, 256, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        int8_path = dq.quantize_onnx(float_path, calib, out / "int8.onnx", method="kl", check_data=test)
    report = json.loads(report_path(int8_path).read_text())
    return float_path, int8_path, report, [str(w.message) for w in caught], test, model


def test_int8_keeps_the_float_files_accuracy_in_ort(quantized):
    _, _, report, _, test, model = quantized
    acc = report["deploy"]["accuracy"]
    torch_acc = float((model(test.x).argmax(1) == test.y).double().mean())
    assert acc["float"] == pytest.approx(torch_acc, abs=0.002)  # the float file is the model
    assert acc["float"] > 0.9  # learnt: the comparison means something
    assert abs(acc["onnx"] - acc["float"]) <= 0.01
    assert report["deploy"]["samples"] == len(test) and report["deploy"]["float_agreement"] >= 0.98
    # no simulated model of a foreign file: the kernels are judged against the file's own QDQ arithmetic
    assert report["deploy"]["compared_with"] == "qdq-reference" and report["deploy"]["agreement"] >= 0.99


def test_evaluate_of_the_int8_file_gives_the_reported_accuracy(quantized):
    _, int8_path, report, _, test, _ = quantized
    assert dq.evaluate(str(int8_path), test)["accuracy"] == pytest.approx(
        report["deploy"]["accuracy"]["onnx"], abs=1 / len(test)
    )


def test_unknown_node_stays_float_and_is_named_in_a_warning(quantized):
    _, int8_path, report, messages, _, _ = quantized
    (named,) = [m for m in messages if "com.microsoft::Gelu" in m]
    assert named.startswith("quantize_onnx: ") and "stays float" in named
    (entry,) = [e for e in report["float_nodes"] if e["op"] == "Gelu"]
    assert not entry["chosen"] and entry["layer"] in named
    gelu = [n for n in onnx.load(str(int8_path)).graph.node if n.op_type == "Gelu"]
    assert [n.domain for n in gelu] == ["com.microsoft"]


def test_int8_file_runs_integer_kernels(quantized):
    _, int8_path, report, messages, _, _ = quantized
    by_layer = {k["layer"]: k for k in report["deploy"]["after"]}
    assert {layer: by_layer[layer]["runtime_op"] for layer in ("a", "b", "left", "right", "fc")} == {
        "a": "QLinearConv",
        "b": "QLinearConv",
        "left": "QLinearConv",
        "right": "QLinearConv",
        "fc": "QGemm",
    }
    # three input channels: float on purpose (ORT's integer conv is slower there), named, not warned
    stem = by_layer["stem"]
    assert stem["kernel"] == "float" and stem["reason"].startswith("kept in float: 3 input channel")
    assert report["deploy"]["warnings"] == [] and not [m for m in messages if "float kernel" in m]
    assert {k.layer: k.runtime_op for k in kernels(int8_path)}["a"] == "QLinearConv"  # read afresh
    assert [k.kernel for k in kernels(quantized[0])] == ["float"] * 6  # the float file's, for contrast


def test_report_holds_ranges_and_layer_errors(quantized):
    _, _, report, _, _, _ = quantized
    layers = {entry["layer"]: entry for entry in report["layers"]}
    assert set(layers) == {"a", "b", "left", "right", "fc"}
    # the residual Add's ReLU output feeds both branches (after the max pool): one grid for both
    assert layers["left"]["input_grid"] == layers["right"]["input_grid"]
    assert layers["fc"]["output_grid"] is None  # the logits stay float
    for grid in {e["input_grid"] for e in layers.values()} | {e["output_grid"] for e in layers.values()}:
        r = report["ranges"].get(grid) if grid else None
        assert grid is None or (r["scale"] > 0 and 0 <= r["zero_point"] <= 255 and r["lo"] <= 0 < r["hi"])
    errors = {e["layer"]: e for e in report["layer_errors"]}
    assert set(errors) == set(layers) and all(e["sqnr_db"] > 20 for e in errors.values())
    assert report["calibration_samples"] == 256


def test_no_deployment_warning_for_a_file_that_deploys(quantized, tmp_path, stripes):
    float_path, *_ = quantized
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dq.quantize_onnx(float_path, stripes(128, seed=2).x, tmp_path / "q.onnx", method="minmax")
    assert [type(w.message) for w in caught] == [UserWarning]  # the Gelu's, no DeploymentWarning
    assert "com.microsoft::Gelu" in str(caught[0].message)
