"""Rewriting a float ONNX graph into the int8 graph the torch path exports.

Static: the QDQ graph of :func:`distiq.export_onnx` — a ``QuantizeLinear -> DequantizeLinear`` pair on
every planned activation tensor (uint8, asymmetric, the grid's scale and zero point shared by the
tensors that re-apply it), int8 weight initializers per output channel on the target's weight range
feeding ``DequantizeLinear``, and int32 biases with scale ``input_scale * weight_scale``: the pattern ORT's
CPU provider fuses into ``QLinearConv`` / ``QGemm`` / ``QLinearMatMul``. Dynamic: each MatMul/Gemm becomes
``DynamicQuantizeLinear + MatMulInteger + Cast + Mul (+ Add)``, as the torch path's dynamic export, which
ORT fuses into its dynamic integer matmul.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from distiq.quant.modules import WeightQuant

from .graph import Layer, Plan


@dataclass(frozen=True)
class WeightGrid:
    """How weights are quantized: bits, per channel or not, calibrator, largest integer (the target's)."""

    bits: int = 8
    per_channel: bool = True
    method: str = "minmax"
    max_int: int = 127


def quantize_weight(w: np.ndarray, axis: int, grid: WeightGrid) -> tuple[np.ndarray, np.ndarray]:
    """``(int8 weight, float32 scale)``: the torch path's :class:`WeightQuant` grid along ``axis``
    (per-channel scale of shape ``[C]``, or a scalar)."""
    moved = torch.tensor(np.moveaxis(w, axis, 0))
    wq = WeightQuant(grid.bits, grid.per_channel, grid.method, moved.shape[0], max_int=grid.max_int)
    wq.calibrate_(moved)
    scale = wq.effective_scale().detach().to(torch.float32)
    shape = [-1] + [1] * (moved.dim() - 1) if scale.dim() else []
    q = torch.clamp(torch.round(moved / scale.reshape(shape)), wq.qmin, wq.qmax).to(torch.int8)
    return np.moveaxis(q.numpy(), 0, axis), scale.numpy()


class _Builder:
    """New initializers and nodes, emitted in an order that keeps the graph topologically sorted."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = copy.deepcopy(model)
        self.inits = {i.name: i for i in self.model.graph.initializer}
        self.before: dict[int, list[onnx.NodeProto]] = {}  # node index -> nodes to emit before it
        self.after: dict[str, list[onnx.NodeProto]] = {}  # tensor -> nodes to emit once it exists
        self.weights: dict[str, np.ndarray] = {}  # weight quantized -> its scale

    def init(self, name: str, array: np.ndarray) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(array, name)
            self.model.graph.initializer.append(self.inits[name])
        return name

    def finish(self, rename: dict[str, str], dropped: set[int] = frozenset()) -> onnx.ModelProto:
        """Nodes in order, readers of each renamed tensor redirected, unused initializers removed."""
        graph = self.model.graph
        ordered: list[onnx.NodeProto] = []
        for name in [i.name for i in graph.input]:
            ordered += self.after.get(name, [])
        for index, node in enumerate(graph.node):
            ordered += self.before.get(index, [])
            if index not in dropped:
                node.input[:] = [rename.get(n, n) for n in node.input]
                ordered.append(node)
            for out in node.output:
                ordered += self.after.get(out, [])
        del graph.node[:]
        graph.node.extend(ordered)
        used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
        for init in [i for i in graph.initializer if i.name not in used]:
            graph.initializer.remove(init)
        return self.model


def static_qdq(
    model: onnx.ModelProto,
    layers: list[Layer],
    plan: Plan,
    act: dict[str, tuple[float, int, bool]],
    grid: WeightGrid,
) -> onnx.ModelProto:
    """The int8 QDQ graph of ``model``.

    Args:
        model: The float model (not modified).
        layers: The nodes whose weights are quantized.
        plan: Where the activation grids go (:func:`distiq.onnx.graph.plan_activations`).
        act: Grid tensor -> ``(scale, zero_point, symmetric)``.
        grid: How weights are quantized.
    """
    b = _Builder(model)
    rename: dict[str, str] = {}  # every reader of a quantized tensor reads its dequantized copy
    for tensor in [*plan.grids, *plan.tied]:
        source = plan.grid_of(tensor)
        scale, zero_point, symmetric = act[source]
        s = b.init(f"{source}_scale", np.array(scale, dtype=np.float32))
        z = b.init(f"{source}_zero_point", np.array(zero_point, dtype=np.int8 if symmetric else np.uint8))
        b.after.setdefault(tensor, []).extend(
            [
                helper.make_node("QuantizeLinear", [tensor, s, z], [f"{tensor}_q"]),
                helper.make_node("DequantizeLinear", [f"{tensor}_q", s, z], [f"{tensor}_dq"]),
            ]
        )
        rename[tensor] = f"{tensor}_dq"
    for layer, index in zip(layers, _positions(b.model, layers), strict=True):
        node = b.model.graph.node[index]
        nodes, w_scale = _weight(b, layer, grid, rename)
        in_scale = act[plan.input_grid[layer.name]][0]
        nodes += _int32_bias(b, layer, node, in_scale * w_scale)
        b.before.setdefault(index, []).extend(nodes)
    return b.finish(rename)


def _positions(model: onnx.ModelProto, layers: list[Layer]) -> list[int]:
    outputs = {n.output[0]: i for i, n in enumerate(model.graph.node)}
    return [outputs[layer.node.output[0]] for layer in layers]


def _weight(b: _Builder, layer: Layer, grid: WeightGrid, rename: dict[str, str]) -> tuple[list, np.ndarray]:
    """The int8 weight initializer and its ``DequantizeLinear``; returns ``(nodes, weight scale)``.
    A weight shared by several nodes is quantized once, under the first one's name."""
    done = b.weights.get(layer.weight)
    if done is not None:
        return [], done
    w = numpy_helper.to_array(b.inits[layer.weight])
    q, scale = quantize_weight(w, layer.axis, grid)
    base = f"{layer.name}.weight"
    rename[layer.weight] = f"{base}_dq"
    b.weights[layer.weight] = scale
    names = [
        b.init(f"{base}_int8", q),
        b.init(f"{base}_scale", scale),
        b.init(f"{base}_zero_point", np.zeros(scale.shape, dtype=np.int8)),
    ]
    attrs = {"axis": layer.axis} if scale.ndim else {}
    return [helper.make_node("DequantizeLinear", names, [f"{base}_dq"], **attrs)], scale


def _int32_bias(b: _Builder, layer: Layer, node, bias_scale: np.ndarray) -> list:
    """An int32 bias (zero point 0, scale ``input_scale * weight_scale``) where ORT's integer kernels
    need one; a bias of another shape stays float."""
    bias = layer.bias
    if bias is None or bias not in b.inits:
        return []
    value = numpy_helper.to_array(b.inits[bias])
    channels = numpy_helper.to_array(b.inits[layer.weight]).shape[layer.axis]
    if value.ndim != 1 or len(value) != channels:
        return []
    scale = np.broadcast_to(bias_scale.astype(np.float32), (channels,)).copy()
    q = np.clip(np.round(value / scale), -(2**31), 2**31 - 1).astype(np.int32)
    base = f"{layer.name}.bias"
    names = [b.init(f"{base}_int32", q), b.init(f"{base}_scale", scale)]
    node.input[2] = f"{base}_dq"
    return [helper.make_node("DequantizeLinear", names, [f"{base}_dq"], axis=0)]


def dynamic_qdq(model: onnx.ModelProto, layers: list[Layer], grid: WeightGrid) -> onnx.ModelProto:
    """Each MatMul/Gemm of ``layers`` as ``DynamicQuantizeLinear + MatMulInteger`` on an int8
    ``[in, out]`` weight, scaled back to float, plus its float bias."""
    b = _Builder(model)
    positions = _positions(b.model, layers)
    for layer, index in zip(layers, positions, strict=True):
        node = b.model.graph.node[index]
        b.before.setdefault(index, []).extend(_dynamic_nodes(b, layer, node, grid))
    return b.finish({}, dropped=set(positions))


def _dynamic_nodes(b: _Builder, layer: Layer, node, grid: WeightGrid) -> list[onnx.NodeProto]:
    w = numpy_helper.to_array(b.inits[layer.weight])
    q, scale = quantize_weight(w, layer.axis, grid)
    q_t = q.T if layer.axis == 0 else q  # MatMulInteger takes [in, out]
    base, x, y = f"{layer.name}.weight", node.input[0], node.output[0]
    w_t = b.init(f"{base}_t", np.ascontiguousarray(q_t))
    w_s = b.init(f"{base}_scale", scale)
    w_z = b.init(f"{base}_zero_point", np.zeros(scale.shape, dtype=np.int8))
    out = y if layer.bias is None else f"{y}_nobias"
    nodes = [
        helper.make_node("DynamicQuantizeLinear", [x], [f"{y}_xq", f"{y}_xs", f"{y}_xz"]),
        helper.make_node("MatMulInteger", [f"{y}_xq", w_t, f"{y}_xz", w_z], [f"{y}_acc"]),
        helper.make_node("Cast", [f"{y}_acc"], [f"{y}_accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{y}_xs", w_s], [f"{y}_s"]),
        helper.make_node("Mul", [f"{y}_accf", f"{y}_s"], [out]),
    ]
    if layer.bias is not None:
        nodes.append(helper.make_node("Add", [out, layer.bias], [y]))
    return nodes


__all__ = ["WeightGrid", "dynamic_qdq", "quantize_weight", "static_qdq"]
