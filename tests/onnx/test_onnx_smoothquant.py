"""SmoothQuant on ONNX graphs: the smoothed float graph computes what the original does, the scales are
the paper's formula, and with an outlier channel static int8 gets closer to float with it than without."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import distiq as dq
from distiq.onnx import report_path
from distiq.onnx.graph import load
from distiq.onnx.smoothquant import smooth, smoothing_scales

H = 8


def _model(path, rng: np.random.Generator, gamma: np.ndarray | None = None) -> str:
    """x -> LayerNorm -> MatMul(w1) -> a; a feeds three MatMuls (q, k, v) and the residual Add
    (so its scale cannot be folded); q * 0.5 -> MatMul(w5) (a foldable Mul); outputs y, y2.

    A given ``gamma`` is an outlier pattern: w1's rows are divided by it, so every channel of the
    LayerNorm's output contributes alike to ``a`` (large activations meeting small weights, what
    SmoothQuant rebalances)."""
    w1 = rng.normal(0, 0.3, (H, H)).astype(np.float32)
    if gamma is None:
        gamma = rng.uniform(0.5, 1.5, H).astype(np.float32)
    else:
        w1 = w1 / gamma[:, None]
    inits = {
        "gamma": gamma,
        "beta": rng.normal(0, 0.1, H).astype(np.float32),
        "w1": w1,
        "wq": rng.normal(0, 0.3, (H, H)).astype(np.float32),
        "wk": rng.normal(0, 0.3, (H, H)).astype(np.float32),
        "wv": rng.normal(0, 0.3, (H, H)).astype(np.float32),
        "w5": rng.normal(0, 0.3, (H, 4)).astype(np.float32),
        "half": np.array(0.5, np.float32),
    }
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "w1"], ["a"], name="fc1"),
        helper.make_node("MatMul", ["a", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["a", "wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["a", "wv"], ["v"], name="v"),
        helper.make_node("Add", ["q", "k"], ["qk"]),
        helper.make_node("Add", ["v", "a"], ["va"]),
        helper.make_node("Add", ["qk", "va"], ["y"]),
        helper.make_node("Mul", ["q", "half"], ["h"]),
        helper.make_node("MatMul", ["h", "w5"], ["y2"], name="fc5"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", H])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", H]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["n", 4]),
        ],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return str(path)


def _run(model: onnx.ModelProto | str, x: np.ndarray) -> list[np.ndarray]:
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_scales_follow_the_formula_by_hand():
    # s = x^a / w^(1-a): sqrt(4/1) = 2, sqrt(1/4) = 0.5; a dead channel or a zero weight row keeps 1
    s = smoothing_scales(np.array([4.0, 1.0, 0.0, 9.0]), np.array([1.0, 4.0, 2.0, 0.0]), 0.5)
    np.testing.assert_allclose(s, [2.0, 0.5, 1.0, 1.0], rtol=1e-6)
    s = smoothing_scales(np.array([8.0, 1.0]), np.array([1.0, 16.0]), 0.75)
    np.testing.assert_allclose(s, [8**0.75, 1 / 2], rtol=1e-6)  # 16^0.25 = 2


def test_smoothed_graph_equals_the_original(tmp_path):
    rng = np.random.default_rng(0)
    path = _model(tmp_path / "m.onnx", rng)
    x = rng.normal(0, 1, (64, H)).astype(np.float32) * np.linspace(0.5, 6, H, dtype=np.float32)
    model = load(path)
    smoothed, groups = smooth(model, x, 0.5)
    folds = {g["tensor"]: g["fold"] for g in groups}
    assert folds == {"ln": "LayerNormalization", "a": "inserted Mul", "h": "Mul"}
    assert {g["tensor"]: sorted(g["layers"]) for g in groups}["a"] == ["wk", "wq", "wv"]
    onnx.checker.check_model(smoothed, full_check=True)
    for got, want in zip(_run(smoothed, x), _run(path, x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # and the weights did change: the scales are far from 1 on these inputs
    w = {i.name: numpy_helper.to_array(i) for i in smoothed.graph.initializer}
    assert not np.allclose(
        w["wq"], numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "wq"))
    )


def test_layernorm_fold_uses_the_calibration_maxima(tmp_path):
    """The scale of the LayerNorm -> MatMul pair, computed here from the LayerNorm's output in numpy:
    w1's rows are multiplied by it, gamma and beta divided."""
    rng = np.random.default_rng(1)
    path = _model(tmp_path / "m.onnx", rng)
    x = rng.normal(0, 1, (32, H)).astype(np.float32)
    model = onnx.load(path)
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    mu, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    ln = (x - mu) / np.sqrt(var + 1e-5) * init["gamma"] + init["beta"]
    s = np.sqrt(np.abs(ln).max(0) / np.abs(init["w1"]).max(1))
    smoothed, _ = smooth(load(path), x, 0.5)
    new = {i.name: numpy_helper.to_array(i) for i in smoothed.graph.initializer}
    ln_node = next(n for n in smoothed.graph.node if n.op_type == "LayerNormalization")
    np.testing.assert_allclose(new["w1"], init["w1"] * s[:, None], rtol=1e-4)
    np.testing.assert_allclose(new[ln_node.input[1]], init["gamma"] / s, rtol=1e-4)
    np.testing.assert_allclose(new[ln_node.input[2]], init["beta"] / s, rtol=1e-4)


def _outlier_model(tmp_path):
    """LayerNorm whose gamma makes channel 3 forty times the others (BERT's outlier channels)."""
    rng = np.random.default_rng(2)
    gamma = np.full(H, 1.0, np.float32)
    gamma[3] = 40.0
    path = _model(tmp_path / "outlier.onnx", rng, gamma)
    calib = rng.normal(0, 1, (256, H)).astype(np.float32)
    test = rng.normal(0, 1, (256, H)).astype(np.float32)
    return path, calib, test


def _error(path, out, x) -> float:
    got, want = _run(str(out), x)[1], _run(path, x)[1]  # y2: after four quantized MatMuls
    return float(np.sqrt(((got - want) ** 2).mean() / (want**2).mean()))


def test_outlier_channel_static_error_lower_with_smoothquant(tmp_path):
    path, calib, test = _outlier_model(tmp_path)
    options = {"mode": "static", "method": "minmax", "matmul_outputs": "float"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = dq.quantize_onnx(path, calib, tmp_path / "plain.onnx", **options)
        smoothed = dq.quantize_onnx(path, calib, tmp_path / "sq.onnx", smooth_quant=0.5, **options)
        chosen = dq.quantize_onnx(
            path, calib, tmp_path / "chosen.onnx", smooth_quant=[None, 0.5], val_data=calib[:128], **options
        )
    e_plain, e_sq = _error(path, plain, test), _error(path, smoothed, test)
    assert e_plain > 0.1 and e_sq < 0.25 * e_plain, (e_plain, e_sq)  # measured: 0.19 and 0.012
    report = json.loads(report_path(chosen).read_text())["smoothing"]
    assert report["alpha"] == 0.5 and report["metric"] == "mean_cosine"
    assert report["scores"]["0.5"] > report["scores"]["None"]
    assert _error(path, chosen, test) == pytest.approx(e_sq, rel=1e-6)


def test_smooth_quant_refuses_what_it_cannot_do(tmp_path):
    path, calib, _ = _outlier_model(tmp_path)
    with pytest.raises(dq.DistiqError, match="mode 'static'"):
        dq.quantize_onnx(path, calib, tmp_path / "d.onnx", mode="dynamic", smooth_quant=0.5)
    with pytest.raises(dq.DistiqError, match="re-iterable"):
        dq.quantize_onnx(path, iter([calib]), tmp_path / "s.onnx", smooth_quant=0.5)
    with pytest.raises(dq.DistiqError, match="need val_data"):
        dq.quantize_onnx(path, calib, tmp_path / "s.onnx", smooth_quant=[0.3, 0.5])
    with pytest.raises(dq.DistiqError, match=r"\[0, 1\]"):
        dq.quantize_onnx(path, calib, tmp_path / "s.onnx", smooth_quant=1.5)
