"""SmoothQuant for an ONNX graph: move activation outliers into the weights before calibration.

Xiao et al., 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models". ``Y = X W`` equals ``(X diag(s)^-1) (diag(s) W)`` for any positive per-input-channel ``s``.
Transformer activations have a few channels whose magnitude is tens of times the others' (in BERT
the LayerNorm outputs that feed Q/K/V and the first MLP layer); a per-tensor activation grid wide
enough for them leaves the other channels a handful of levels, while weights are easy to quantize per
output channel. Choosing

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)

(``max|X_j|`` over the calibration data, ``max|W_j|`` over row ``j`` of every weight reading ``X``)
balances the two: at ``alpha = 0.5`` both sides of channel ``j`` get the range
``sqrt(max|X_j| max|W_j|)``.

Where the ``1/s`` goes, so that the float graph computes exactly what it did (up to float rounding):

* into the producing ``LayerNormalization``'s gamma and beta, when nothing else reads its output;
* into the constant of a producing ``Mul`` (``Div``), when nothing else reads its output (the
  ``0.5`` of an exported GELU);
* otherwise into a new ``Mul`` by ``1/s`` on a branch that only those MatMuls read. In a post-LN
  model (BERT, MiniLM) every LayerNorm output is also the next residual, which must stay unscaled,
  so this is the usual case there: one element-wise op on ``[batch, sequence, hidden]`` per group.

MatMuls sharing an input (Q, K and V) get one scale set, from all their weights' rows. ``Shape``
readers of a tensor do not count as readers of its values. ONNX Runtime's own SmoothQuant path needs
Intel Neural Compressor (and imports a module its 3.8 release removed); this one needs neither.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .collect import batches, run, session
from .graph import Graph, Layer, classify

#: The paper's default migration strength.
ALPHA = 0.5
#: Readers that use a tensor's shape, not its values: scaling the tensor does not change them.
SHAPE_READERS = ("Shape", "Size")


def smoothing_scales(x_max: np.ndarray, w_max: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """``s_j = x_max_j**alpha / w_max_j**(1 - alpha)``, float32; a channel where either maximum is 0
    (a dead channel, a zero weight row) keeps ``s_j = 1``, where the formula would divide by 0 or
    erase the channel."""
    x = np.asarray(x_max, np.float64)
    w = np.asarray(w_max, np.float64)
    live = (x > 0) & (w > 0)
    s = np.ones_like(x)
    s[live] = x[live] ** alpha / w[live] ** (1 - alpha)
    return s.astype(np.float32)


def channel_max(model: onnx.ModelProto, tensors: Iterable[str], data: Any, *, batch_size: int = 64,
                limit: int | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """``max|x|`` per channel (the last axis) of each tensor, over every other axis and every batch
    of ``data``, run through ONNX Runtime (one pass, nothing kept beyond a batch)."""
    names = list(dict.fromkeys(tensors))
    sess = session(model, names)
    found: dict[str, np.ndarray] = {}
    for feed, _ in batches(data, sess.get_inputs(), batch_size, limit):
        values = run(sess, names, feed)
        for name in names:
            v = np.abs(np.asarray(values[name], np.float32))
            m = v.reshape(-1, v.shape[-1]).max(0) if v.size else np.zeros(v.shape[-1], np.float32)
            found[name] = m if name not in found else np.maximum(found[name], m)
    return found


def _in_axis(layer: Layer) -> int:
    """The weight's input-channel axis (the one that multiplies the activation's last axis)."""
    return 1 - layer.axis


def _groups(g: Graph, skip: list[str]) -> tuple[dict[str, list[Layer]], list[dict]]:
    """MatMul/Gemm layers grouped by their input tensor, and the groups that cannot be smoothed
    (a weight also read by a node outside the group)."""
    layers, _ = classify(g, -1, skip)
    by_input: dict[str, list[Layer]] = {}
    for layer in layers:
        if layer.node.op_type in ("MatMul", "Gemm"):
            by_input.setdefault(layer.node.input[0], []).append(layer)
    groups, refused = {}, []
    for tensor, members in by_input.items():
        nodes = {id(layer.node) for layer in members}
        shared = [m.name for m in members if any(id(r) not in nodes for r in g.readers[m.weight])]
        if shared:
            reason = f"weight of {', '.join(shared)} is also read elsewhere"
            refused.append({"tensor": tensor, "layers": [m.name for m in members], "fold": None,
                            "reason": reason})  # fmt: skip
        else:
            groups[tensor] = members
    return groups, refused


def smooth(
    model: onnx.ModelProto,
    data: Any,
    alpha: float = ALPHA,
    *,
    min_outlier_ratio: float = 0.0,
    skip: list[str] | None = None,
    batch_size: int = 64,
    limit: int | None = None,
) -> tuple[onnx.ModelProto, list[dict]]:
    """The smoothed float model (same outputs as ``model``) and what was done to each input tensor.

    Args:
        model: The float model (not modified).
        data: Calibration data (as :func:`distiq.onnx.collect.batches` takes it) for ``max|X_j|``.
        alpha: Migration strength: 0 moves nothing of the activation's range into the weights
            (``s = 1 / max|W_j|``), 1 all of it.
        min_outlier_ratio: Smooth a tensor only when its largest channel maximum is at least this
            many times the median one (0: every tensor read by MatMul/Gemm weights).
        skip: Layer names left alone (as ``quantize_onnx``'s ``skip``).
        batch_size: Calibration batch size.
        limit: Calibration batches read at most.

    Returns:
        ``(model, groups)``; each group: ``tensor``, ``layers``, ``fold`` ("LayerNormalization", "Mul",
        "Div", "inserted Mul", or None when left alone), ``outlier_ratio``, ``scale_min``/``scale_max``
        or ``reason``.
    """
    out = copy.deepcopy(model)
    g = Graph(out)
    groups, info = _groups(g, list(skip or []))
    x_max = channel_max(out, groups, data, batch_size=batch_size, limit=limit) if groups else {}
    inserted: list[tuple[str, onnx.NodeProto]] = []  # (first reader's output, the new Mul before it)
    for tensor, members in groups.items():
        xm = x_max[tensor]
        ratio = float(xm.max() / max(float(np.median(xm)), 1e-12))
        entry = {"tensor": tensor, "layers": [m.name for m in members], "outlier_ratio": ratio}
        if ratio < min_outlier_ratio:
            info.append(entry | {"fold": None, "reason": f"outlier ratio {ratio:.1f} < {min_outlier_ratio}"})
            continue
        weights = [numpy_helper.to_array(g.inits[m.weight]) for m in members]
        w_max = np.max(
            [np.abs(w).max(axis=1 - _in_axis(m)) for w, m in zip(weights, members, strict=True)], 0
        )
        s = smoothing_scales(xm, w_max, alpha)
        fold = _fold_producer(g, tensor, members, s)
        if fold is None:
            fold = "inserted Mul"
            inserted.append(_insert_mul(g, tensor, members, s))
        for w, m in zip(weights, members, strict=True):
            shape = [-1, 1] if _in_axis(m) == 0 else [1, -1]
            g.inits[m.weight].CopyFrom(
                numpy_helper.from_array((w * s.reshape(shape)).astype(w.dtype), m.weight)
            )
        info.append(entry | {"fold": fold, "scale_min": float(s.min()), "scale_max": float(s.max())})
    if inserted:
        _place(out, inserted)
    used = {n for node in out.graph.node for n in node.input} | {o.name for o in out.graph.output}
    for init in [i for i in out.graph.initializer if i.name not in used]:  # folded-away originals
        out.graph.initializer.remove(init)
    return out, info


def _value_readers_only(g: Graph, tensor: str, members: list[Layer]) -> bool:
    """Whether the group's MatMuls are the only nodes reading ``tensor``'s values."""
    nodes = {id(m.node) for m in members}
    readers = [r for r in g.readers.get(tensor, []) if r.op_type not in SHAPE_READERS]
    return tensor not in g.outputs and all(id(r) in nodes for r in readers)


def _float_init(g: Graph, name: str) -> np.ndarray | None:
    value = g.array(name)
    return value if value is not None and value.dtype == np.float32 else None


def _replace_input(g: Graph, node: onnx.NodeProto, i: int, value: np.ndarray, tensor: str) -> None:
    """Point input ``i`` of ``node`` at a new initializer ``value``: the old one may be shared (ORT
    gives every layer's GELU the same ``0.5``), so it is never rewritten in place."""
    name = f"{tensor}_smooth_{i}"
    g.model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    node.input[i] = name


def _fold_producer(g: Graph, tensor: str, members: list[Layer], s: np.ndarray) -> str | None:
    """Divide ``tensor`` by ``s`` inside the op that makes it, if it is a LayerNormalization over the
    last axis or a Mul/Div by a constant that broadcasts along it; returns the op folded into."""
    node = g.producer.get(tensor)
    if node is None or not _value_readers_only(g, tensor, members):
        return None
    channels = len(s)
    if node.op_type == "LayerNormalization":
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        params = [(i, _float_init(g, node.input[i])) for i in (1, 2) if len(node.input) > i and node.input[i]]
        if axis != -1 or any(p is None or p.shape != (channels,) for _, p in params):
            return None
        for i, p in params:
            _replace_input(g, node, i, p / s, tensor)
        return "LayerNormalization"
    if node.op_type in ("Mul", "Div"):
        positions = [1] if node.op_type == "Div" else [0, 1]  # x / c: only the divisor is foldable
        for i in positions:
            c = _float_init(g, node.input[i])
            if c is None or g.array(node.input[1 - i]) is not None:
                continue
            if c.size not in (1, channels) or (c.size == channels and c.shape[-1] != channels):
                continue
            full = np.broadcast_to(c.reshape(-1), (channels,))
            _replace_input(g, node, i, full / s if node.op_type == "Mul" else full * s, tensor)
            return node.op_type
    return None


def _insert_mul(g: Graph, tensor: str, members: list[Layer], s: np.ndarray) -> tuple[str, onnx.NodeProto]:
    """A ``Mul`` by ``1/s`` that the group's MatMuls read instead of ``tensor``; returns where it goes."""
    inv = f"{tensor}_smooth_inv_scale"
    g.model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
    smoothed = f"{tensor}_smoothed"
    mul = helper.make_node("Mul", [tensor, inv], [smoothed], name=f"{tensor}_smooth")
    for m in members:
        m.node.input[0] = smoothed
    first = next(n for n in g.model.graph.node if smoothed in n.input)
    return first.output[0], mul


def _place(model: onnx.ModelProto, inserted: list[tuple[str, onnx.NodeProto]]) -> None:
    """Put each new Mul just before its first reader (the graph stays topologically sorted)."""
    before = {}
    for output, mul in inserted:
        before.setdefault(output, []).append(mul)
    nodes = []
    for node in model.graph.node:
        nodes += before.get(node.output[0], [])
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


__all__ = ["ALPHA", "channel_max", "smooth", "smoothing_scales"]
