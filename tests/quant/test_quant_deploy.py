"""Deployability: kernels read back from ORT's optimised graph, reasons for float nodes, and the loud
warning when int8 is not faster."""

from __future__ import annotations

import pytest
import torch

import distiq as dq
from distiq.quant import DeploymentWarning, compare_latency, deploy_check, export_onnx, kernels, quantize
from distiq.quant import deploy as deploy_module


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is faster, and on a shared machine far steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    model = dq.models.create("vgg-small", image_size=8, width=0.5).eval()
    calib = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    q = quantize(model, calib, method="minmax", thin_conv_channels=0)
    # conv2's output, after ReLU and max pool, reaches conv3 unquantized: both must run in float
    q.features.conv2.output_quant = q.features.conv3.input_quant = None
    out = tmp_path_factory.mktemp("deploy")
    return export_onnx(model, out / "float.onnx", calib[:2]), export_onnx(q, out / "int8.onnx", calib[:2])


def test_float_node_is_named_with_its_reason(files):
    found = {k.layer: k for k in kernels(files[1])}
    conv2, conv3 = found.pop("features.conv2"), found.pop("features.conv3")
    assert conv2.kernel == conv3.kernel == "float"
    assert "output is not quantized" in conv2.reason and "input is not quantized" in conv3.reason
    assert conv2.runtime_op in ("Conv", "FusedConv")
    assert len(found) == 4 and all(k.kernel == "integer" for k in found.values())


def test_deploy_check_warns_loudly_when_int8_is_not_faster(files, monkeypatch):
    def slower(paths, batch_sizes, **_):
        return {b: {"float": 1.0, "int8": 1.5} for b in batch_sizes}

    monkeypatch.setattr(deploy_module, "compare_latency", slower)
    with pytest.warns(DeploymentWarning) as caught:
        report = deploy_check(*files, batch_sizes=(1, 256))
    messages = [str(w.message) for w in caught]
    assert any("INT8 IS NOT FASTER at batch 256" in m for m in messages)
    assert any("features.conv2" in m and "float kernel" in m for m in messages)
    assert report.latency[1]["ratio"] == pytest.approx(1.5)
    assert [k.kernel for k in report.before] == ["float"] * 6
    assert "| features.conv2 | Conv | float |" in report.table()


def test_compare_latency_times_every_file(files):
    times = compare_latency({"float": files[0], "int8": files[1]}, (1, 4), repeats=3, warmup=1)
    assert set(times) == {1, 4} and all(t > 0 for row in times.values() for t in row.values())
