"""Real 4-bit files: INT4 initializers (opset 21), about an eighth of the float file, holding exactly
the simulated model's integers; ORT agrees with the simulation; the deployability check says which
kernels ORT runs for them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import distiq as dq
from distiq.quant import deploy_check, export, export_onnx, kernels, quantize
from distiq.quant.deploy import onnx_outputs
from distiq.quant.export import weight_integers
from distiq.quant.modules import quant_layers


def _big_model() -> nn.Module:
    """Mostly weights (a 64x... conv and a 2304x256 linear), so sizes are the weights' sizes."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(8, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 6 * 6, 256), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(256, 10)).eval()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    model = _big_model()
    x = torch.randn(128, 8, 8, 8)
    tmp = tmp_path_factory.mktemp("int4")
    float_path = export_onnx(model, tmp / "float.onnx", x[:2])
    q = quantize(model, x, bits=4, method="minmax", weight_method="minmax")
    return model, x, q, float_path, export_onnx(q, tmp / "w4.onnx", x[:2]), tmp


def _four_bit(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {
        i.name: numpy_helper.to_array(i).astype(np.int8)
        for i in proto.graph.initializer
        if i.data_type == onnx.TensorProto.INT4
    }


def test_int4_initializers_hold_the_simulated_integers_at_an_eighth_of_the_size(big):
    model, x, q, float_path, path, tmp = big
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 21
    four = _four_bit(proto)
    assert sorted(four) == ["0.weight_int4", "3.weight_int4", "5.weight_int4"]
    for name, layer in quant_layers(q).items():  # the file's integers are the simulation's, element-wise
        expected = weight_integers(layer.weight_quant, layer.weight.detach()).to(torch.int8).numpy()
        assert np.array_equal(four[f"{name}.weight_int4"], expected)
        assert np.abs(expected).max() <= 7
    ratio = path.stat().st_size / float_path.stat().st_size
    assert ratio <= 0.15 and ratio >= 0.125  # 4 of 32 bits, plus scales and biases
    int8_path = export_onnx(q, tmp / "w4-int8.onnx", x[:2], int4=False)  # containers twice as large
    assert 0.24 <= int8_path.stat().st_size / float_path.stat().st_size <= 0.27
    assert not _four_bit(onnx.load(str(int8_path)))


def test_ort_runs_the_4bit_file_as_simulated(big):
    model, x, q, float_path, path, _ = big
    test = torch.randn(300, 8, 8, 8)
    with torch.no_grad():
        sim = q(test)
    got = onnx_outputs(path, test)
    assert float((sim.argmax(1) == got.argmax(1)).double().mean()) >= 0.99
    assert float((sim - got).abs().max()) <= 0.02 * float(sim.abs().max())


def test_deploy_check_says_int4_weights_run_float_kernels(big):
    _, _, q, float_path, path, _ = big
    # agreement is checked on a trained model (the last test); this random one is about the kernels
    report = deploy_check(float_path, path, simulated=q, batch_sizes=(), warn=False)
    assert [(k.layer, k.op, k.weight, k.kernel) for k in report.after] == [
        ("0", "Conv", "int4", "float"), ("3", "Gemm", "int4", "float"), ("5", "Gemm", "int4", "float"),
    ]  # fmt: skip
    for k in report.after:
        assert "INT4" in k.reason and "DequantizeLinear expands the 4-bit weight to float" in k.detail
    assert "| int4 |" in report.table()
    assert all(k.weight == "float" for k in report.before)


def test_weight_only_linear_becomes_matmulnbits(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128)).eval()
    x = torch.randn(200, 256)
    q = quantize(model, mode="weight-only", bits=4, weight_method="minmax", example_input=x[:2])
    float_path = export_onnx(model, tmp_path / "f.onnx", x[:2])
    path = export_onnx(q, tmp_path / "w4.onnx", x[:2])
    (k,) = kernels(path)
    assert (k.op, k.weight, k.kernel, k.runtime_op) == ("MatMul", "int4", "integer", "MatMulNBits")
    assert "unpacks the 4-bit weight inside the kernel" in k.detail
    (w,) = _four_bit(onnx.load(str(path))).values()
    assert w.shape == (256, 128)  # stored transposed, [in, out], as MatMul reads it
    with torch.no_grad():
        sim = q(x)
    got = onnx_outputs(path, x)
    # MatMulNBits quantizes activations to int8 per block at run time: close, not bit-identical
    assert float((sim - got).abs().max()) <= 0.02 * float(sim.abs().max())
    assert float_path.stat().st_size > 7 * path.stat().st_size


@pytest.mark.parametrize("bits", [2, 3])
def test_fewer_bits_also_use_int4_containers(bits, tmp_path):
    model = _big_model()
    x = torch.randn(64, 8, 8, 8)
    q = quantize(model, x, bits=bits, method="minmax", weight_method="minmax", thin_conv_channels=0)
    four = _four_bit(onnx.load(str(export_onnx(q, tmp_path / "q.onnx", x[:2]))))
    assert len(four) == 3 and all(np.abs(a).max() <= 2 ** (bits - 1) - 1 for a in four.values())


def test_adaround_integers_reach_the_file_and_ort_agrees(tmp_path):
    train, test = dq.data.load("digits", "train"), dq.data.load("digits", "test")
    torch.manual_seed(0)
    model = dq.models.create("lenet5", image_size=8)
    dq.train(model, train, epochs=2, lr=3e-3, batch_size=64, progress=False)
    model.eval()
    calib = dq.data.as_arrays(train).x[:256]
    q = quantize(model, calib, bits=4, rounding="adaround", adaround={"iters": 60, "progress": False})
    float_path = export_onnx(model, tmp_path / "f.onnx", calib[:2])
    path = export_onnx(q, tmp_path / "q.onnx", calib[:2])
    four = _four_bit(onnx.load(str(path)))
    differs = 0
    for name, layer in quant_layers(q).items():
        w, wq = layer.weight.detach(), layer.weight_quant
        learned = wq.integers(w)  # floor(w / s) + learned 0/1 offset
        assert np.array_equal(four[f"{name}.weight_int4"], learned.to(torch.int8).numpy())
        nearest = torch.round(w / wq.scale.reshape([-1] + [1] * (w.dim() - 1))).clamp(-7, 7)
        differs += int((learned != nearest).sum())
    assert differs > 0  # the file holds the learned rounding, not nearest
    report = deploy_check(float_path, path, data=test, simulated=q, batch_sizes=(), warn=False)
    assert report.agreement >= 0.99
    assert abs(report.accuracy["onnx"] - report.accuracy["simulated"]) <= 0.003


def _pooled_cnn() -> nn.Module:
    """conv -> relu -> maxpool -> conv -> relu -> maxpool -> linear: two MaxPools between 4-bit layers."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_files_leave_out_attributes_the_runtime_assumes(tmp_path):
    """group=1, unit strides and dilations, zero pads, NOTSET auto_pad, a Conv's kernel shape (its
    weight's): absent from the file; a stride of 2 and a padding of 1 stay, and ORT still computes the
    torch model's output."""
    model, x = _pooled_cnn(), torch.randn(16, 1, 12, 12)
    path = export_onnx(model, tmp_path / "float.onnx", x[:2])
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in convs]
    assert attrs == [{"pads": [1, 1, 1, 1]}, {"strides": [2, 2]}]
    pools = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MaxPool"]
    assert all(sorted(a.name for a in n.attribute) == ["kernel_shape", "strides"] for n in pools)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(onnx_outputs(path, x).numpy(), expected, rtol=1e-4, atol=1e-5)


def _pool_readers(path) -> list[list[str]]:
    """The ops that read each MaxPool's output."""
    nodes = onnx.load(str(path)).graph.node
    pools = [n.output[0] for n in nodes if n.op_type == "MaxPool"]
    return [[n.op_type for n in nodes if out in n.input] for out in pools]


def test_requantizing_a_maxpool_on_its_own_grid_is_left_out_of_4bit_files_only(tmp_path, monkeypatch):
    """Q(MaxPool(DQ(q))) on the grid q came from is q's max: the 4-bit file (float kernels) drops that
    pair and ORT's output stays bit for bit the one of the file that keeps it; the int8 file keeps
    DQ -> MaxPool -> Q, the pattern ORT runs as an integer MaxPool."""
    model, x = _pooled_cnn(), torch.randn(64, 1, 12, 12)
    q = quantize(model, x, bits=4, act_bits=8, method="minmax", thin_conv_channels=0)
    four = export_onnx(q, tmp_path / "w4.onnx", x[:2])
    eight = export_onnx(q, tmp_path / "w4-int8.onnx", x[:2], int4=False)
    monkeypatch.setattr(export, "_drop_identity_requantize", lambda proto: 0)
    kept = export_onnx(q, tmp_path / "w4-kept.onnx", x[:2])
    ops = _ops(four)
    assert _pool_readers(four) == [["Conv"], ["Reshape"]]
    assert _pool_readers(kept) == [["QuantizeLinear"], ["Reshape"]]  # the last pool: no grid of its own
    assert _ops(kept).count("QuantizeLinear") == ops.count("QuantizeLinear") + 1
    assert _ops(eight).count("QuantizeLinear") == ops.count("QuantizeLinear") + 1
    assert torch.equal(onnx_outputs(four, x), onnx_outputs(kept, x))
    assert four.stat().st_size < kept.stat().st_size
