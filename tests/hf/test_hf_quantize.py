"""int8 sentence encoders: the row-quantized embedding tables by hand, and the whole file against float."""

import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed: pip install distiq[hf]")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tiny_bert import TEXTS  # noqa: E402

from distiq.errors import DistiqError  # noqa: E402
from distiq.hf.export import cosine_rows, export_encoder, onnx_embeddings  # noqa: E402
from distiq.hf.quantize import (  # noqa: E402
    dequantize_rows,
    quantize_embedding_tables,
    quantize_encoder,
    quantize_rows,
    text_batches,
)


def test_quantize_rows_by_hand():
    table = np.array([[0.5, -1.27, 0.0, 0.254], [0.0, 0.0, 0.0, 0.0]], np.float32)
    q, scale = quantize_rows(table, bits=8, group=0)
    np.testing.assert_allclose(scale[:, 0], [0.01, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(q, [[50, -127, 0, 25], [0, 0, 0, 0]])
    q4, s4 = quantize_rows(table, bits=4, group=2)
    np.testing.assert_allclose(s4, [[1.27 / 7, 0.254 / 7], [1.0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(q4[0], [3, -7, 0, 7])
    with pytest.raises(DistiqError, match="bits"):
        quantize_rows(table, bits=3, group=0)
    with pytest.raises(DistiqError, match="group"):
        quantize_rows(table, bits=4, group=3)


@pytest.mark.parametrize(("bits", "group"), [(8, 0), (4, 8), (4, 0)])
def test_gather_of_quantized_table_equals_dequantized_rows(tmp_path, bits, group):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(40, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["b", "s", 16])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    quantized, done = quantize_embedding_tables(model, bits=bits, group=group, min_elements=1)
    assert done == [{"table": "table", "shape": [40, 16], "bits": bits, "group": group}]
    assert "table" not in {i.name for i in quantized.graph.initializer}
    onnx.checker.check_model(quantized)
    ids = rng.integers(0, 40, size=(3, 5)).astype(np.int64)
    got = ort.InferenceSession(quantized.SerializeToString()).run(None, {"ids": ids})[0]
    expected = dequantize_rows(*quantize_rows(table, bits, group))[ids]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert np.abs(got - table[ids]).max() <= np.abs(table).max() / (2 ** (bits - 1) - 1)


def test_int8_encoder_stays_close_to_float(teacher, tokenizer, tmp_path):
    path = export_encoder(teacher, tokenizer, tmp_path / "t.onnx")
    # min_elements: the word table (~5,000 values) is quantized, the position table (2,048) is not
    report = quantize_encoder(path, tmp_path / "t8.onnx", embedding_bits=8, min_elements=4000)
    assert [t["table"] for t in report.tables] == ["model.embeddings.word_embeddings.weight"]
    assert len(report.float_matmuls) == 2 * 4  # scores and context of each attention layer
    ops = {n.op_type for n in onnx.load(str(tmp_path / "t8.onnx")).graph.node}
    assert "MatMulInteger" in ops
    ref = onnx_embeddings(path, tokenizer, TEXTS[:48])
    got = onnx_embeddings(tmp_path / "t8.onnx", tokenizer, TEXTS[:48])
    assert cosine_rows(got, ref).mean() > 0.99


@pytest.mark.parametrize("smooth_quant", [None, 0.75])
def test_static_int8_encoder_is_close_to_float_and_names_its_matmuls(
    teacher, tokenizer, tmp_path, smooth_quant
):
    path = export_encoder(teacher, tokenizer, tmp_path / "t.onnx")
    calib = text_batches(tokenizer, TEXTS[:64], batch_size=16)  # the first 64 calibrate, the rest test
    out = tmp_path / "static.onnx"
    report = quantize_encoder(
        path, out, mode="static", calib_data=calib, smooth_quant=smooth_quant, embedding_bits=None
    )
    roles = {"q", "k", "v", "attention-output", "intermediate", "output"}
    assert {(e["block"], e["role"]) for e in report.layer_errors} == {(b, r) for b in range(4) for r in roles}
    sqnr = [e["sqnr_db"] for e in report.layer_errors]
    assert sqnr == sorted(sqnr) and sqnr[0] > 10  # worst first
    # every weighted MatMul on ORT's integer kernel, the 8 attention MatMuls float
    assert report.kernels.get("MatMulIntegerToFloat") == 24
    assert len(report.float_matmuls) == 8
    # the report's error of one MatMul, recomputed here on the real tokens only (padding left out)
    name = "/model/encoder/layer.1/attention/self/query/MatMul_output_0"
    signal = noise = 0.0
    for feed in calib:
        outs = [_extra_output(f, name, feed).astype(np.float64) for f in (path, out)]
        real = feed["attention_mask"].astype(bool)
        signal += (outs[0][real] ** 2).sum()
        noise += ((outs[0][real] - outs[1][real]) ** 2).sum()
    reported = next(e for e in report.layer_errors if (e["block"], e["role"]) == (1, "q"))
    assert reported["sqnr_db"] == pytest.approx(10 * np.log10(signal / noise), abs=1e-6)
    got = onnx_embeddings(out, tokenizer, TEXTS[64:])
    ref = onnx_embeddings(path, tokenizer, TEXTS[64:])
    assert cosine_rows(got, ref).mean() > 0.999  # measured: 0.99991, 0.99998 with SmoothQuant
    if smooth_quant is not None:
        # per layer: Q/K/V and the intermediate read a LayerNorm that is also the residual (a Mul
        # inserted), the attention output reads a Reshape (inserted), the output GELU's 0.5 (folded)
        assert report.smoothing["alpha"] == 0.75
        assert report.smoothing["folds"] == {"inserted Mul": 12, "Mul": 4}


def _extra_output(path, name: str, feed: dict) -> np.ndarray:
    """The value of tensor ``name`` of the ONNX file at ``path`` on ``feed``."""
    model = onnx.load(str(path))
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString()).run([name], feed)[0]
