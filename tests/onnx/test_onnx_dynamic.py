"""Dynamic int8 of a MatMul/Gemm graph: weights int8 per output channel, activations quantized at run
time. ONNX Runtime fuses the pattern into its dynamic integer matmul, and the file computes what a
hand-written integer reference computes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import distiq as dq
from distiq.onnx import report_path
from distiq.quant.deploy import kernels


class MLP(nn.Module):
    """Two Linear layers (exported as Gemm) around a bare matrix product (MatMul on an initializer)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.w2 = nn.Parameter(0.1 * torch.randn(64, 48))
        self.fc3 = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(F.relu(self.fc1(x)) @ self.w2))


@pytest.fixture(scope="module")
def mlp(tmp_path_factory, export):
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    return model, export(model, tmp_path_factory.mktemp("mlp") / "mlp.onnx", x[:2]), x.numpy()


def _run(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _dynamic_reference(model: MLP, x: np.ndarray, weight_max: int) -> np.ndarray:
    """The integer computation, written out: each input quantized to uint8 on its batch's range
    (``DynamicQuantizeLinear``: range widened to hold 0, round half to even), weights symmetric per
    output channel on ``[-weight_max, weight_max]``, products summed in integers, then rescaled."""

    def qmatmul(h: np.ndarray, w_in_out: np.ndarray) -> np.ndarray:
        lo, hi = min(h.min(), 0.0), max(h.max(), 0.0)
        s = np.float32((hi - lo) / 255)
        z = np.clip(np.round(-lo / s), 0, 255)
        hq = np.clip(np.round(h / s) + z, 0, 255).astype(np.int64) - int(z)
        ws = np.abs(w_in_out).max(axis=0) / weight_max
        wq = np.clip(np.round(w_in_out / ws), -weight_max, weight_max).astype(np.int64)
        return (hq @ wq).astype(np.float32) * (s * ws)

    p = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    h = np.maximum(qmatmul(x, p["fc1.weight"].T) + p["fc1.bias"], 0)
    h = np.maximum(qmatmul(h, p["w2"]), 0)
    return qmatmul(h, p["fc3.weight"].T) + p["fc3.bias"]


def test_dynamic_runs_integer_matmuls_and_matches_the_integer_reference(mlp, tmp_path):
    model, path, x = mlp
    # target "generic": weights on [-64, 64], exact on every CPU's kernels (see distiq.quant.target)
    out = dq.quantize_onnx(path, None, tmp_path / "dyn.onnx", mode="dynamic", target="generic")
    found = {k.layer: k for k in kernels(out)}
    assert set(found) == {"fc1", "w2", "fc3"}
    assert {k.runtime_op for k in found.values()} <= {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
    assert all(k.kernel == "integer" for k in found.values())
    got, ref = _run(out, x), _dynamic_reference(model, x, weight_max=64)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    want = _run(path, x)
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()  # and close to float
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95


def test_dynamic_with_calibration_samples_reports_layer_errors(mlp, tmp_path):
    _, path, x = mlp
    out = dq.quantize_onnx(path, x, tmp_path / "dyn.onnx", mode="dynamic", check_samples=128)
    report = json.loads(report_path(out).read_text())
    assert report["ranges"] == {} and report["calibration_samples"] == 0  # nothing calibrated
    errors = {e["layer"]: e for e in report["layer_errors"]}
    assert set(errors) == {"fc1", "w2", "fc3"} and all(e["sqnr_db"] > 25 for e in errors.values())
    assert [e["input_grid"] for e in report["layers"]] == [None] * 3


def test_static_mlp_runs_qgemm_and_qlinearmatmul(mlp, tmp_path):
    _, path, x = mlp
    out = dq.quantize_onnx(path, x, tmp_path / "static.onnx", method="minmax")
    assert {k.layer: k.runtime_op for k in kernels(out)} == {
        "fc1": "QGemm",
        "w2": "QLinearMatMul",
        "fc3": "QGemm",
    }
    got, want = _run(out, x), _run(path, x)
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_convs_stay_float_in_dynamic_mode_with_a_warning(tmp_path, export):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)).eval()
    path = export(model, tmp_path / "conv.onnx", torch.rand(2, 8, 6, 6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = dq.quantize_onnx(path, None, tmp_path / "dyn.onnx", mode="dynamic")
    (message,) = [str(w.message) for w in caught]
    assert message.startswith("quantize_onnx: 0 (Conv) stays float: dynamic mode quantizes MatMul/Gemm only")
    assert {k.layer: k.kernel for k in kernels(out)} == {"0": "float", "3": "integer"}
