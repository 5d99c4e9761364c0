"""The ONNX path and distiq's PyTorch path on models both can take (BN folded by the exporter, residual
Adds, max pools, a global pool): the same calibrator on the same data gives the same activation grids
on the same tensors, and the layers get the torch module paths as names."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import distiq as dq
from distiq.onnx import report_path
from distiq.quant.modules import quant_layers


def _build(name: str, tmp_path_factory, export):
    """A distiq model with non-trivial BN statistics (so folding them matters), exported by torch."""
    torch.manual_seed(0)
    model = dq.models.create(name, image_size=8).eval()
    g = torch.Generator().manual_seed(1)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))
        bn.weight.data.copy_(0.5 + torch.rand(bn.num_features, generator=g))
        bn.bias.data.copy_(0.1 * torch.randn(bn.num_features, generator=g))
    calib = torch.rand(256, 1, 8, 8, generator=g)
    path = export(model, tmp_path_factory.mktemp("peer") / f"{name}.onnx", calib[:2])
    return model, path, calib


@pytest.fixture(scope="module", params=["resnet8", "vgg-small"])
def model_and_file(request, tmp_path_factory, export):
    """resnet8: residual Adds, strided 1x1 shortcuts, global pool; vgg-small: max pools after ReLUs."""
    return _build(request.param, tmp_path_factory, export)


@pytest.fixture(scope="module")
def resnet8(tmp_path_factory, export):
    return _build("resnet8", tmp_path_factory, export)


def _grids(model, path, calib, method, tmp_path):
    """``[(layer, which, onnx (scale, zero point), torch (scale, zero point))]`` for every grid."""
    torch_q = quant_layers(dq.quantize(model, calib, method=method))
    out = dq.quantize_onnx(path, calib, tmp_path / f"{method}.onnx", method=method)
    report = json.loads(report_path(out).read_text())
    pairs = []
    for entry in report["layers"]:
        layer = torch_q[entry["layer"]]
        for which, q in (("input_grid", layer.input_grid[0]), ("output_grid", layer.output_quant)):
            if entry[which] is None:
                assert q is None, (entry["layer"], which)  # the logits: float in both
                continue
            r = report["ranges"][entry[which]]
            pairs.append(
                (entry["layer"], which, (r["scale"], r["zero_point"]), (float(q.scale), int(q.zero_point)))
            )
    return report, torch_q, pairs


@pytest.mark.parametrize("method", ["kl", "minmax", "percentile"])
def test_same_calibrator_same_data_same_ranges(model_and_file, method, tmp_path):
    model, path, calib = model_and_file
    report, torch_q, pairs = _grids(model, path, calib, method, tmp_path)
    # the same layers: conv1 (one input channel) float in both, by choice
    assert {e["layer"] for e in report["layers"]} == set(torch_q) - {"features.conv1"}
    assert len(pairs) == 2 * len(report["layers"]) - 1
    for layer, which, (s_onnx, z_onnx), (s_torch, z_torch) in pairs:
        assert s_onnx == pytest.approx(s_torch, rel=0.01), (layer, which)
        assert abs(z_onnx - z_torch) <= 1, (layer, which)


def test_minmax_ranges_are_the_float_activations_extremes(resnet8, tmp_path):
    """Independent of both paths: the minmax grid after a ReLU spans [0, max] of that ReLU's output in
    the float torch model (BN unfolded), read with a forward hook."""
    model, path, calib = resnet8
    out = dq.quantize_onnx(path, calib, tmp_path / "mm.onnx", method="minmax")
    report = json.loads(report_path(out).read_text())
    seen: dict[str, float] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, y, name=name: seen.__setitem__(name, float(y.max()))
        )
        for name in ("features.layer1.0.relu1", "features.layer2.0.relu1", "features.layer3.0.relu1")
    ]
    with torch.no_grad():
        model(calib)
    for h in hooks:
        h.remove()
    layers = {e["layer"]: e for e in report["layers"]}
    for relu, top in seen.items():
        block = relu.removesuffix(".relu1")
        r = report["ranges"][layers[f"{block}.conv1"]["output_grid"]]
        assert r["zero_point"] == 0 and r["lo"] == 0
        assert r["hi"] == pytest.approx(top, rel=1e-5)
        assert r["scale"] == pytest.approx(top / 255, rel=1e-5)
