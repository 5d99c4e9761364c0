"""``quantize``: grids equal PyTorch's observers and ORT's dynamic formula, quantizers sit where ORT's
QDQ fusions need them, unquantizable layers are named and left in float, the float model is untouched."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

import distiq as dq
from distiq.errors import DistiqError
from distiq.quant import ActQuant, QuantConv2d, QuantLinear, quantize, set_state
from distiq.quant.fuse import fold_bn_
from distiq.quant.modules import QuantOutput


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is faster, and on a shared machine far steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name: str = "vgg-small", seed: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    return dq.models.create(name, image_size=8, **options).eval()


def _calib(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_weights_match_pytorch_per_channel_fake_quant():
    model = _model("lenet5")
    q = quantize(model, mode="weight-only", example_input=_calib(2))
    for path in ("features.conv1", "classifier.fc2"):
        w = model.get_submodule(path).weight.detach()
        layer = q.get_submodule(path)
        obs = PerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
        )
        obs(w)
        scale, zp = obs.calculate_qparams()
        ref = torch.fake_quantize_per_channel_affine(w, scale, zp.to(torch.int32), 0, -127, 127)
        assert torch.allclose(layer.weight_quant(layer.weight), ref, rtol=0, atol=1e-7)
    assert torch.equal(model.features.conv1.weight, q.features.conv1.weight)  # not re-trained


def test_input_grid_is_minmax_over_streamed_batches():
    model = _model()
    calib = _calib(96)
    batches = (calib[i : i + 32] for i in range(0, 96, 32))  # a one-shot generator, streamed
    q = quantize(model, batches, method="minmax", thin_conv_channels=0)
    obs = MinMaxObserver(dtype=torch.quint8, quant_min=0, quant_max=255)
    obs(calib)
    scale, zp = obs.calculate_qparams()
    grid = q.features.conv1.input_quant
    assert torch.equal(grid.scale, scale.reshape(())) and int(grid.zero_point) == int(zp)
    assert q.quant_report.calibration_samples == 96
    whole = quantize(model, calib, method="minmax", thin_conv_channels=0)
    for (name, a), b in zip(q.named_buffers(), whole.buffers(), strict=True):
        assert torch.equal(a, b), name


def test_placement_follows_the_dataflow():
    q = quantize(_model(), _calib(), method="minmax", thin_conv_channels=0)
    f = q.features
    assert isinstance(f.conv1, QuantConv2d) and f.conv1.relu and isinstance(f.relu1, nn.Identity)
    assert isinstance(f.conv1.input_quant, ActQuant) and f.conv1.output_quant is not None
    assert f.conv2.input_quant is None  # conv1's output grid is already on it
    assert f.conv3.input_quant.source is f.conv2.output_quant  # re-applied after the max pool
    assert isinstance(q.classifier.flatten, QuantOutput)  # avg pool + flatten: a new grid
    assert q.classifier.fc.input_quant is None
    assert q.classifier.fc.input_grid[0] is q.classifier.flatten.quant
    assert q.classifier.fc.output_quant is None  # logits stay float
    assert all(entry["input"] for entry in q.quant_report.layers)

    r = quantize(_model("resnet8"), _calib(), method="minmax").features
    assert isinstance(r.layer1[0].relu2, QuantOutput)  # after the residual add: shared by both paths
    assert r.layer2[0].conv1.input_quant is None and r.layer2[0].shortcut.conv.input_quant is None
    assert r.layer2[0].conv1.input_grid[0] is r.layer1[0].relu2.quant


@pytest.mark.parametrize("name", ["vgg-small", "resnet8", "mlp"])
def test_quantizers_off_give_the_folded_float_model(name):
    model = _model(name)
    x = _calib(8, seed=1)
    q = quantize(model, _calib(), method="minmax")
    set_state(q, "off")
    with torch.no_grad():
        assert torch.allclose(q(x), model(x), rtol=1e-4, atol=1e-5)
    set_state(q, "quant")
    with torch.no_grad():
        err = (q(x) - model(x)).abs().max()
    assert 0 < err < 0.1 * model(x).abs().max()


def test_dynamic_grid_is_ort_dynamic_quantize_linear():
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(2)) * 3 + 1
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
        "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [
            helper.make_tensor_value_info("y", TensorProto.UINT8, [4, 16]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("z", TensorProto.UINT8, []),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y, s, z = sess.run(None, {"x": x.numpy()})
    quant = ActQuant(8, False, dynamic=True)
    scale, zp = quant.runtime_qparams(x)
    assert float(scale) == pytest.approx(float(s), rel=1e-6) and int(zp) == int(z)
    quant.state = "quant"
    assert np.allclose(quant(x).numpy(), (y.astype(np.float32) - float(z)) * float(s), atol=1e-6)


def test_dynamic_mode_quantizes_linear_layers_only():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize(_model("lenet5"), mode="dynamic", example_input=_calib(2))
    assert isinstance(q.classifier.fc1, QuantLinear) and q.classifier.fc1.input_quant.dynamic
    assert type(q.features.conv1) is nn.Conv2d
    assert any("features.conv1" in str(w.message) for w in caught)


class WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):  # x: [N, 1, 8, 8] read as 8 steps of 8 features
        out, _ = self.lstm(torch.relu(self.embed(x.squeeze(1))))
        return self.head(out[:, -1])


def test_unquantizable_layer_is_named_and_left_float():
    model = WithLSTM().eval()
    with pytest.warns(UserWarning, match="lstm stays in float: LSTM"):
        q = quantize(model, _calib(), method="minmax")
    assert type(q.lstm) is nn.LSTM
    assert torch.equal(q.lstm.weight_hh_l0, model.lstm.weight_hh_l0)
    assert isinstance(q.embed, QuantLinear) and isinstance(q.head, QuantLinear)
    assert [e["layer"] for e in q.quant_report.float_layers] == ["lstm"]
    assert q(_calib(4)).shape == (4, 3)


def test_skip_keeps_a_layer_float_and_the_original_is_untouched():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    q = quantize(model, _calib(), skip=["features.conv1"])
    assert type(q.features.conv1) is nn.Conv2d and isinstance(q.features.relu1, QuantOutput)
    assert q.features.conv2.input_grid[0] is q.features.relu1.quant  # quantized after the float ReLU
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert type(model.features.conv1) is nn.Conv2d and isinstance(model.features.bn1, nn.BatchNorm2d)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"mode": "int3"}, "mode"),
        ({"bits": 9}, "bits"),
        ({"method": "entropyy"}, "entropyy"),
        ({"skip": ["features.conv9"]}, "features.conv9"),
        ({"epochs": 2}, "qat"),
        ({"thin_conv_channels": -1}, "thin_conv_channels"),
    ],
)
def test_bad_options_raise_naming_them(options, needle):
    with pytest.raises(DistiqError, match=needle):
        quantize(_model(), _calib(), **options)


def test_static_needs_calibration_data():
    with pytest.raises(DistiqError, match="calib_data"):
        quantize(_model(), example_input=_calib(2))


def test_fold_then_trace_example_of_one_sample():
    model = _model("resnet8")
    groups = fold_bn_(copy.deepcopy(model), _calib(1))
    assert len(groups) == 9
