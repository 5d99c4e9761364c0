"""Export: int8 QDQ files that pass the checker, hold integer weights, run on ORT's integer kernels and
agree with the simulated model; dynamic and float exports; atomic writes."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import distiq as dq
from distiq.errors import DistiqError
from distiq.quant import DeploymentWarning, deploy_check, export_onnx, kernels, quantize


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is faster, and on a shared machine far steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    train, test = dq.data.load("digits", "train"), dq.data.load("digits", "test")
    return train, test


def _trained(name: str, digits, epochs: int = 3, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    model = dq.models.create(name, image_size=8, **options)
    dq.train(model, digits[0], epochs=epochs, lr=3e-3, batch_size=64, progress=False)
    return model.eval()


def _run(path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.numpy()})[0]


@pytest.fixture(scope="module")
def static(digits, tmp_path_factory):
    model = _trained("vgg-small", digits)
    q = quantize(model, dq.data.subsample(digits[0], 256), method="minmax", thin_conv_channels=0)
    out = tmp_path_factory.mktemp("static")
    example = digits[0].x[:1]  # batch 1: the batch dimension must stay dynamic anyway
    return (
        model,
        q,
        export_onnx(model, out / "float.onnx", example),
        export_onnx(q, out / "int8.onnx", example),
    )


def test_static_file_is_valid_small_and_integer(static):
    _, _, float_path, int8_path = static
    proto = onnx.load(str(int8_path))
    onnx.checker.check_model(proto, full_check=True)
    inits = {i.name: i for i in proto.graph.initializer}
    dq_inputs = [n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    weights = [inits[name] for name in dq_inputs if name.endswith(".weight_int8")]
    assert len(weights) == 6 and all(w.data_type == onnx.TensorProto.INT8 for w in weights)
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in inits for n in proto.graph.node)
    big_floats = [
        i.name for i in inits.values() if i.data_type == onnx.TensorProto.FLOAT and len(i.raw_data) > 1024
    ]
    assert big_floats == []
    assert os.path.getsize(int8_path) <= 0.3 * os.path.getsize(float_path)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


def test_ort_runs_integer_kernels(static):
    found = kernels(static[3])
    assert [k.layer for k in found] == [f"features.conv{i}" for i in range(1, 6)] + ["classifier.fc"]
    assert all(k.kernel == "integer" for k in found), found
    assert {k.runtime_op for k in found} == {"QLinearConv", "QGemm"}
    before = kernels(static[2])
    assert all(k.kernel == "float" and "weights are float" in k.reason for k in before)


def test_thin_first_conv_stays_float_on_purpose_and_the_check_does_not_flag_it(static, digits, tmp_path):
    """A 1-channel first conv is slower in ORT's int8 than in float (bench/quant_fashion_mnist.py):
    by default it stays float, named as a choice, and the deployability check does not warn about it."""
    model, _, float_path, _ = static
    q = quantize(model, dq.data.subsample(digits[0], 256), method="minmax")
    (entry,) = q.quant_report.float_layers
    assert entry["layer"] == "features.conv1" and entry["chosen"] and "1 input channel" in entry["reason"]
    path = export_onnx(q, tmp_path / "int8.onnx", digits[0].x[:1])
    found = {k.layer: k for k in kernels(path)}
    assert found.pop("features.conv1").kernel == "float"
    assert all(k.kernel == "integer" for k in found.values()), found
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = deploy_check(float_path, path, data=digits[1], simulated=q, batch_sizes=())
    assert not [w for w in caught if issubclass(w.category, DeploymentWarning)]
    (conv1,) = [k for k in report.after if k.layer == "features.conv1"]
    assert conv1.reason.startswith("kept in float: 1 input channel")
    assert report.agreement >= 0.99
    blind = deploy_check(float_path, path, batch_sizes=(), warn=False)  # no model: it cannot know why
    assert [w for w in blind.warnings if w.startswith("features.conv1 (Conv) runs a float kernel")]


def test_simulation_and_ort_agree(static, digits):
    model, q, float_path, int8_path = static
    x = digits[1].x
    with torch.no_grad():
        sim, ref = q(x).numpy(), model(x).numpy()
    got = _run(int8_path, x)
    assert (sim.argmax(1) == got.argmax(1)).mean() >= 0.99
    scale = np.abs(sim).max()
    assert np.median(np.abs(sim - got)) <= 1e-3 * scale and np.abs(sim - got).max() <= 0.05 * scale
    assert np.allclose(_run(float_path, x), ref, atol=1e-4)
    y = digits[1].y.numpy()
    assert abs((got.argmax(1) == y).mean() - (ref.argmax(1) == y).mean()) <= 0.02


def test_dynamic_export_uses_integer_matmul(digits, tmp_path):
    model = _trained("mlp", digits, hidden=(64, 32))
    q = quantize(model, mode="dynamic", example_input=digits[0].x[:2])
    path = export_onnx(q, tmp_path / "dyn.onnx", digits[0].x[:2])
    found = kernels(path)
    assert [k.op for k in found] == ["MatMulInteger"] * 3
    assert {k.runtime_op for k in found} <= {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
    x = digits[1].x
    with torch.no_grad():
        sim = q(x).numpy()
    got = _run(path, x)
    assert (sim.argmax(1) == got.argmax(1)).mean() >= 0.99
    diff, scale = np.abs(sim - got), np.abs(sim).max()
    assert np.median(diff) <= 1e-4 * scale and diff.max() <= 0.05 * scale


def test_int4_weight_only_export(digits, tmp_path):
    model = _trained("lenet5", digits)
    q = quantize(model, mode="weight-only", bits=4, example_input=digits[0].x[:2])
    path = export_onnx(q, tmp_path / "w4.onnx", digits[0].x[:2], int4=False)  # int8 containers
    proto = onnx.load(str(path))
    ints = [numpy_helper.to_array(i) for i in proto.graph.initializer if i.name.endswith(".weight_int8")]
    assert len(ints) == 5 and all(a.min() >= -7 and a.max() <= 7 for a in ints)
    with torch.no_grad():
        sim = q(digits[1].x).numpy()
    assert np.allclose(_run(path, digits[1].x), sim, atol=1e-4)
    assert all(k.kernel == "float" for k in kernels(path))  # weight-only: float compute by design


def test_failed_export_leaves_the_old_file(digits, tmp_path):
    model = dq.models.create("lenet5", image_size=8).eval()
    q = quantize(model, digits[0].x[:64], act_bits=4, method="minmax")
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(DistiqError, match="4-bit activations"):
        export_onnx(q, path, digits[0].x[:2])
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.onnx"]


def test_residual_network_runs_integer_adds(digits, tmp_path):
    model = _trained("resnet8", digits, epochs=1, width=0.5)
    q = quantize(
        model, dq.data.subsample(digits[0], 256), method="minmax", per_channel=False, thin_conv_channels=0
    )
    path = export_onnx(q, tmp_path / "r8.onnx", digits[0].x[:2])
    assert all(k.kernel == "integer" for k in kernels(path))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert ops.count("QLinearAdd") >= 2  # the residual sums whose output feeds a quantized conv
    with torch.no_grad():
        sim = q(digits[1].x).numpy()
    assert (sim.argmax(1) == _run(path, digits[1].x).argmax(1)).mean() >= 0.99


def test_export_prints_no_torchvision_notice(digits, tmp_path, caplog, capfd):
    model = dq.models.create("mlp", image_size=8, hidden=(8,)).eval()
    with caplog.at_level("INFO"):
        export_onnx(model, tmp_path / "m.onnx", digits[0].x[:2])
    captured = capfd.readouterr()
    assert "torchvision is not installed" not in caplog.text + captured.err + captured.out


def test_exports_share_one_torchlib_registry_each_with_its_own_copy():
    """The registry torch.onnx builds on every export is built once; the copy one export receives (and
    adds distiq's translations to) leaves the next one's untouched, and torch's method is restored."""
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    from distiq.quant.export import _torchlib_built_once

    original = ONNXRegistry.__dict__["from_torchlib"]
    with _torchlib_built_once():
        first = ONNXRegistry.from_torchlib()
        first.register_op(torch.ops.aten.relu.default, lambda x: x)
        second = ONNXRegistry.from_torchlib()
    assert ONNXRegistry.__dict__["from_torchlib"] is original
    plain = ONNXRegistry.from_torchlib()
    assert second.functions.keys() == plain.functions.keys() and second.opset_version == plain.opset_version
    relu = "aten::relu"
    assert second.functions[relu][0] is first.functions[relu][1]  # built once: the same entries
    assert plain.functions[relu][0] is not second.functions[relu][0]  # outside, torch builds anew
    assert len(first.functions[relu]) == len(plain.functions[relu]) + 1
    assert [m.onnx_function for m in second.functions[relu]] == [
        m.onnx_function for m in plain.functions[relu]
    ]
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 4)
    a, b = dq.quant.export.to_onnx(model, x), dq.quant.export.to_onnx(model, x)
    assert a.SerializeToString() == b.SerializeToString()
