"""int8 sentence encoders: distiq's ONNX quantization (dynamic or static) plus a quantized embedding table.

MatMuls: :func:`distiq.quantize_onnx`, int8 weights per output channel, either ``mode="dynamic"``
(activations quantized at run time, ``MatMulInteger``) or ``mode="static"`` (activation grids
calibrated on training texts, ORT's ``MatMulIntegerToFloat``), optionally after SmoothQuant. The
attention MatMuls (query × key, scores × value) have no weights and stay float in both;
:func:`quantize_encoder` counts them instead of repeating one warning per layer.

Static defaults, and why (measured on all-MiniLM-L6-v2, 300 held-out fortunes, mean cosine to the
float file; dynamic int8 gives 0.992):

* MatMul outputs stay float (``matmul_outputs="float"``). Every MatMul of BERT is read by a float
  bias Add, and then a residual Add and a LayerNorm or a GELU, so an int8 grid there is one more
  rounding and buys no integer kernel: with those grids 0.920, without 0.989.
* Calibration by ``minmax``. A few hidden channels of the LayerNorm outputs carry values tens of
  times the others' (the outliers SmoothQuant is about) and they matter: calibrators that clip the
  tail (``percentile`` 0.872, ``kl`` 0.889) cut them off.
* The activation-activation MatMuls stay float: the scores ``Q Kᵀ`` feed a softmax whose inputs span
  tens of units with the mask's large negatives, and the probabilities' useful range is a few of the
  256 levels of a grid on ``[0, 1]``.
* SmoothQuant (``smooth_quant``, :mod:`distiq.onnx.smoothquant`) helps only at a strong migration:
  alpha 0.25 0.80 (on 96 other training texts), 0.5 0.983, 0.75 0.997, 0.85 0.998 (held-out) —
  MiniLM's outlier channels are tens, not hundreds, of times the median, and its weights take the
  extra range per output channel easily; so the strength is best chosen on validation texts.
* The word-embedding ``Gather`` stays float in the quantized graph (a Gather has no arithmetic to
  make integer); its table is stored as row-quantized integers instead (below).

Embeddings: in all-MiniLM-L6-v2 the word-embedding table is 30522 × 384 floats, 47 MB of its 90 MB,
and MatMul quantization leaves it float, so a student with half the layers would stay more than
half the teacher's size. :func:`quantize_embedding_tables` stores each large ``Gather`` table as
integers with one scale per row (8 bits) or per group of columns (4 bits, two values per byte) and
dequantizes only the gathered rows at run time (``Gather`` → unpack → ``Cast`` → ``Mul``), so the
arithmetic stays float and the cost is a few element-wise ops on ``[batch, sequence, hidden]``.
Rows are quantized symmetrically: ``q = round(w / s)`` with ``s = max|w| / (2**(bits-1) - 1)``
over the row or group.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from distiq.errors import DistiqError
from distiq.io import atomic_path
from distiq.onnx.api import report_path

from .minilm import MAX_LENGTH, tokenize

#: Gather tables with fewer elements than this stay float (position and token-type embeddings are
#: small; their bytes do not matter).
MIN_TABLE = 1 << 18


@dataclass
class EncoderQuantReport:
    """What :func:`quantize_encoder` did.

    Attributes:
        path: The int8 file.
        mode: "dynamic" or "static".
        float_matmuls: MatMuls left float (activation × activation: attention).
        tables: Embedding tables quantized: name, shape, bits.
        kernels: ORT's op for each compute node of the file, counted (the deployability check's
            ``runs as``: ``MatMulIntegerToFloat``, ``DynamicQuantizeMatMul``, ``FusedMatMul``...).
        layer_errors: Per weighted MatMul, worst first: ``layer``, ``block`` (encoder layer index),
            ``role`` (:func:`matmul_role`), ``sqnr_db`` and ``mse`` of its output against float on the
            kept calibration texts, real tokens only (padding left out); errors accumulate from the
            input onwards.
        smoothing: Static with SmoothQuant: the strength used, the scores of those tried, and how
            many input tensors were smoothed by each kind of fold.
    """

    path: str
    mode: str = "dynamic"
    float_matmuls: list[str] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)
    kernels: dict[str, int] = field(default_factory=dict)
    layer_errors: list[dict] = field(default_factory=list)
    smoothing: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


#: BERT's module paths of the weighted MatMuls in a layer -> short roles for tables.
ROLES = {
    "attention.self.query": "q",
    "attention.self.key": "k",
    "attention.self.value": "v",
    "attention.output.dense": "attention-output",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
}
_ROLE = re.compile(r"layer\.(\d+)\.(" + "|".join(re.escape(k) for k in ROLES) + r")(?:#\d+)?$")


def matmul_role(layer: str) -> dict:
    """``{"block", "role"}`` of a MatMul named as :func:`distiq.quantize_onnx` names it
    (``model.encoder.layer.3.attention.self.query`` -> ``{"block": 3, "role": "q"}``), so a table of
    36 errors says which layer and which projection; other names get ``{"block": None, "role": name}``."""
    m = _ROLE.search(layer)
    return {"block": int(m.group(1)), "role": ROLES[m.group(2)]} if m else {"block": None, "role": layer}


def text_batches(
    tokenizer: object, texts: Sequence[str], batch_size: int = 32, max_length: int = MAX_LENGTH
) -> list[dict[str, np.ndarray]]:
    """``[{"input_ids", "attention_mask"}]`` int64 feeds of ``texts`` in padded batches, as the exported
    file takes them: calibration and validation data for :func:`quantize_encoder` (a list, so it can be
    read more than once).

    Batched in order of length: padding positions compute values nothing reads, often outside the
    real tokens' range, and calibrators (and SmoothQuant's channel maxima) would widen the grids
    for them; batches of similar lengths pad little."""
    ordered = sorted(texts, key=len)
    out = []
    for start in range(0, len(ordered), batch_size):
        enc = tokenize(tokenizer, ordered[start : start + batch_size], max_length)
        out.append({name: enc[name].numpy() for name in ("input_ids", "attention_mask")})
    return out


def quantize_rows(table: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """``(integers, scales)`` of a ``[V, H]`` table, symmetric per row (``group=0``) or per column group.

    ``integers`` are int8 ``[V, H]`` in ``[-(2**(bits-1)-1), 2**(bits-1)-1]``; ``scales`` float32
    ``[V, groups]``. A row or group of zeros gets scale 1.
    """
    if bits not in (4, 8):
        raise DistiqError(f"embedding bits: expected 4 or 8, got {bits}")
    v, h = table.shape
    g = h if group <= 0 else group
    if h % g:
        raise DistiqError(f"embedding group: {g} does not divide the table width {h}")
    qmax = 2 ** (bits - 1) - 1
    blocks = table.reshape(v, h // g, g).astype(np.float32)
    scale = np.abs(blocks).max(-1) / qmax
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(blocks / scale[..., None]), -qmax, qmax).astype(np.int8)
    return q.reshape(v, h), scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The float table :func:`quantize_rows` stands for."""
    v, h = q.shape
    groups = scale.shape[1]
    return (q.reshape(v, groups, h // groups).astype(np.float32) * scale[..., None]).reshape(v, h)


def _pack4(q: np.ndarray) -> np.ndarray:
    """int4 values ``[V, H]`` (in [-7, 7]) as bytes ``[V, H/2]``: value + 8, even column in the low nibble."""
    u = (q.astype(np.int16) + 8).astype(np.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


def _gather_nodes(name: str, ids: str, out: str, bits: int) -> list:
    """Nodes computing ``out = dequantized table[ids]`` from initializers ``{name}_q`` / ``{name}_scale``."""
    p = f"{name}_dq"
    nodes = [helper.make_node("Gather", [f"{name}_q", ids], [f"{p}_rows"], axis=0)]
    nodes.append(helper.make_node("Gather", [f"{name}_scale", ids], [f"{p}_scale"], axis=0))
    rows = f"{p}_rows"
    if bits == 4:
        # bytes as floats b; high nibble floor(b / 16), low b - 16 * high (no integer bit ops: opset 17)
        nodes += [
            helper.make_node("Cast", [rows], [f"{p}_b"], to=TensorProto.FLOAT),
            helper.make_node("Div", [f"{p}_b", f"{p}_sixteen"], [f"{p}_b16"]),
            helper.make_node("Floor", [f"{p}_b16"], [f"{p}_hi"]),
            helper.make_node("Mul", [f"{p}_hi", f"{p}_sixteen"], [f"{p}_hi16"]),
            helper.make_node("Sub", [f"{p}_b", f"{p}_hi16"], [f"{p}_lo"]),
            helper.make_node("Unsqueeze", [f"{p}_lo", f"{p}_last"], [f"{p}_lo1"]),
            helper.make_node("Unsqueeze", [f"{p}_hi", f"{p}_last"], [f"{p}_hi1"]),
            helper.make_node("Concat", [f"{p}_lo1", f"{p}_hi1"], [f"{p}_pairs"], axis=-1),
            helper.make_node("Sub", [f"{p}_pairs", f"{p}_eight"], [f"{p}_vals"]),
        ]
        rows = f"{p}_vals"
    else:
        nodes.append(helper.make_node("Cast", [rows], [f"{p}_vals"], to=TensorProto.FLOAT))
        rows = f"{p}_vals"
    # [..., H] (or [..., H/2, 2]) -> [..., groups, H/groups] * scale [..., groups, 1] -> [..., H]
    nodes += [
        helper.make_node("Shape", [ids], [f"{p}_ids_shape"]),
        helper.make_node("Concat", [f"{p}_ids_shape", f"{p}_grouped"], [f"{p}_gshape"], axis=0),
        helper.make_node("Reshape", [rows, f"{p}_gshape"], [f"{p}_g"]),
        helper.make_node("Unsqueeze", [f"{p}_scale", f"{p}_last"], [f"{p}_scale1"]),
        helper.make_node("Mul", [f"{p}_g", f"{p}_scale1"], [f"{p}_gf"]),
        helper.make_node("Concat", [f"{p}_ids_shape", f"{p}_width"], [f"{p}_oshape"], axis=0),
        helper.make_node("Reshape", [f"{p}_gf", f"{p}_oshape"], [out]),
    ]
    return nodes


def quantize_embedding_tables(
    model: onnx.ModelProto, *, bits: int = 8, group: int = 0, min_elements: int = MIN_TABLE
) -> tuple[onnx.ModelProto, list[dict]]:
    """``model`` with every large float ``Gather`` table (an initializer used by that Gather only)
    stored as ``bits``-bit integers; returns ``(new model, [{"table", "shape", "bits", "group"}])``.

    Args:
        bits: 8 (one byte per value) or 4 (two per byte).
        group: Columns sharing one scale; 0: one scale per row. 4 bits wants small groups (32).
        min_elements: Smaller tables stay float.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    uses: dict[str, int] = {}
    for node in g.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    done = []
    new_nodes = []
    drop = set()
    for node in g.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (
            table is None
            or axis != 0
            or table.data_type != TensorProto.FLOAT
            or len(table.dims) != 2
            or int(np.prod(table.dims)) < min_elements
            or uses.get(table.name, 0) != 1
        ):
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(table)
        v, h = w.shape
        q, scale = quantize_rows(w, bits, group)
        groups = scale.shape[1]
        name = table.name
        stored = _pack4(q) if bits == 4 else q
        p = f"{name}_dq"
        extra = [
            numpy_helper.from_array(stored, f"{name}_q"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.array([-1], np.int64), f"{p}_last"),
            numpy_helper.from_array(np.array([groups, h // groups], np.int64), f"{p}_grouped"),
            numpy_helper.from_array(np.array([h], np.int64), f"{p}_width"),
        ]
        if bits == 4:
            extra += [
                numpy_helper.from_array(np.array(16.0, np.float32), f"{p}_sixteen"),
                numpy_helper.from_array(np.array(8.0, np.float32), f"{p}_eight"),
            ]
        g.initializer.extend(extra)
        drop.add(name)
        new_nodes += _gather_nodes(name, node.input[1], node.output[0], bits)
        done.append({"table": name, "shape": [v, h], "bits": bits, "group": group})
    kept = [i for i in g.initializer if i.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept)
    del g.node[:]
    g.node.extend(new_nodes)
    return model, done


def quantize_encoder(
    path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    mode: str = "dynamic",
    calib_data: Any = None,
    method: str = "minmax",
    smooth_quant: float | Sequence[float | None] | None = None,
    val_data: Any = None,
    check_samples: int = 256,
    embedding_bits: int | None = 8,
    embedding_group: int = 0,
    min_elements: int = MIN_TABLE,
) -> EncoderQuantReport:
    """int8 of an exported sentence encoder: distiq's MatMul quantization, then the tables.

    Args:
        path: The float ONNX file (from :func:`distiq.hf.export.export_encoder`).
        out_path: The int8 file to write.
        mode: "dynamic" or "static" (with the defaults the module docstring explains).
        calib_data: Static: token batches of training texts (:func:`text_batches`), never the texts
            the file is measured on; in dynamic mode, optional (only for the per-layer error).
        method: Static: the activation calibrator.
        smooth_quant: Static: SmoothQuant's strength, or several to choose from on ``val_data``
            (see :func:`distiq.quantize_onnx`).
        val_data: Token batches the SmoothQuant strength is chosen on (not the test texts).
        check_samples: Calibration texts kept for the per-layer error.
        embedding_bits: 8 or 4 for the embedding tables; None leaves them float.
        embedding_group: Columns per scale of the tables (0: per row).
        min_elements: Smaller tables stay float.
    """
    import distiq as dq

    out_path = Path(out_path)
    static = {"method": method, "matmul_outputs": "float", "smooth_quant": smooth_quant, "val_data": val_data}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dq.quantize_onnx(
            path, calib_data, out_path, mode=mode, check_samples=check_samples,
            error_mask="attention_mask", **(static if mode == "static" else {}),
        )  # fmt: skip
    report = EncoderQuantReport(str(out_path), mode)
    _read_report(report, json.loads(report_path(out_path).read_text()))
    for w in caught:
        text = str(w.message)
        if text.startswith("quantize_onnx: ") and "stays float" in text:
            report.float_matmuls.append(text.removeprefix("quantize_onnx: ").split(" (")[0])
        elif "runs a float kernel" not in text:  # the deployability check repeats the same nodes
            warnings.warn(text, w.category, stacklevel=2)
    if embedding_bits is not None:
        model = onnx.load(str(out_path))
        model, report.tables = quantize_embedding_tables(
            model, bits=embedding_bits, group=embedding_group, min_elements=min_elements
        )
        with atomic_path(out_path) as tmp:
            onnx.save(model, str(tmp))
    return report


def _read_report(report: EncoderQuantReport, quantized: dict) -> None:
    """Kernels, labelled per-layer errors (worst first) and the smoothing summary from
    :func:`distiq.quantize_onnx`'s report."""
    for node in quantized["deploy"]["after"]:
        report.kernels[node["runtime_op"]] = report.kernels.get(node["runtime_op"], 0) + 1
    errors = [e | matmul_role(e["layer"]) for e in quantized["layer_errors"]]
    report.layer_errors = sorted(errors, key=lambda e: e["sqnr_db"])
    smoothing = quantized.get("smoothing")
    if smoothing is not None:
        folds: dict[str, int] = {}
        for group in smoothing["groups"]:
            folds[str(group["fold"])] = folds.get(str(group["fold"]), 0) + 1
        report.smoothing = {k: smoothing[k] for k in ("alpha", "scores", "metric")} | {"folds": folds}
