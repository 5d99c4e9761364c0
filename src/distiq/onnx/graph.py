"""Reading an ONNX file someone else made, and deciding which of its tensors get an int8 grid.

Why a plan before any rewriting: where the activation grids sit decides whether ONNX Runtime fuses the
QDQ graph into integer kernels, so this follows the same placement rules as the torch path
(:mod:`distiq.quant.ptq`), on tensors instead of modules:

* every quantized Conv/Gemm/MatMul quantizes its output (after a ReLU that is its only reader), except a
  graph output — ``DQ -> Conv -> Q`` is what ORT fuses into ``QLinearConv``; MatMul/Gemm outputs may
  stay float instead (``float_matmul``: ORT fuses ``DQ -> MatMul`` into ``MatMulIntegerToFloat`` and
  ``DQ -> Gemm`` into a float-output ``QGemm``), one rounding less where float ops read them anyway;
* its input is walked back through value-preserving ops (ReLU, MaxPool, Flatten, Reshape, ...) to a
  tensor that already has a grid, whose grid is then re-applied after each op in between (ORT runs
  them on uint8); failing that, a new grid goes on the input itself, nearest the reader, as the torch
  path places it on the module nearest the layer: after a ReLU, not before it, and after a max pool,
  so that it is calibrated on what the layer reads. Every reader of that tensor sees the same grid.

Nodes distiq does not know (another domain, an op with weights it has no integer form for) stay float
and are listed with the reason; standard weightless ops (Add, Softmax, ReduceMean, ...) simply compute
in float between grids.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from distiq.errors import DataError, DistiqError
from distiq.quant.deploy import read_onnx

#: Ops whose weight (an initializer) distiq quantizes, and ORT runs as QLinearConv / QGemm / QLinearMatMul.
QUANTIZABLE = ("Conv", "Gemm", "MatMul")
#: Ops that move or select values without computing new ones: a grid on their input holds on their output.
PRESERVING = (
    "Relu", "MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout",
)  # fmt: skip
#: Ops with weights that distiq has no integer form for: they stay float and are named in a warning.
WEIGHTED_FLOAT = ("ConvTranspose", "LSTM", "GRU", "RNN", "Attention", "QAttention")
#: The lowest opset with per-channel ``DequantizeLinear``.
MIN_OPSET = 13


def layer_name(node: onnx.NodeProto) -> str:
    """A quantized node's name in reports: its weight's name without ``.weight`` (``classifier.fc``,
    the module path of a torch export), unless the exporter made the name up (torch names a weight it
    folded a BatchNorm into ``onnx::Conv_89``, which says nothing): then the module path its node's
    name spells (``/features/layer1/layer1.0/conv1/Conv`` -> ``features.layer1.0.conv1``)."""
    weight = node.input[1]
    parts = [p for p in node.name.strip("/").split("/") if p][:-1]  # the last part is the op ("Conv")
    if not weight.startswith("onnx::") or not parts:
        return weight.removesuffix(".weight")
    path: list[str] = []
    for part in parts:  # torch repeats a parent in a child's scope: layer1/layer1.0 -> layer1.0
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def load(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """The float ONNX model at ``path``, checked, at opset >= 13, with ORT's basic (hardware-independent)
    graph optimisations applied: BatchNorm folded into convs, constants folded, so weights are
    initializers. A missing, corrupt or already quantized file is a :class:`DataError` naming it."""
    model = read_onnx(path)

    def bad(what: str, e: Exception) -> DataError:
        return DataError(f"{path}: {what} ({' '.join(str(e).split())[:300]})")

    try:
        if any(uses_external_data(i) for i in model.graph.initializer):  # weights beside the file
            onnx.load_external_data_for_model(model, str(Path(path).parent))
        onnx.checker.check_model(model)
    except (OSError, onnx.checker.ValidationError) as e:
        raise bad("not a valid ONNX model", e) from None
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise DataError(f"{path}: already quantized (it holds QuantizeLinear/DequantizeLinear nodes)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as e:  # onnx's converter raises its C++ errors as plain exceptions
            raise bad(f"opset {opset} could not be converted to {MIN_OPSET}", e) from None
    return _basic_optimised(model, path)


def _basic_optimised(model: onnx.ModelProto, path: str | os.PathLike[str]) -> onnx.ModelProto:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "basic.onnx"
        onnx.save(model, str(src))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(dst)
        try:
            ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT's own exception types
            raise DataError(
                f"{path}: ONNX Runtime cannot load it ({' '.join(str(e).split())[:300]})"
            ) from None
        optimised = onnx.load(str(dst))
    for name in ("producer_name", "producer_version"):
        setattr(optimised, name, getattr(model, name))
    return optimised


@dataclass
class Graph:
    """Lookups over one graph: initializers, producer and readers of each tensor."""

    model: onnx.ModelProto
    inits: dict[str, onnx.TensorProto] = field(init=False)
    producer: dict[str, onnx.NodeProto] = field(init=False)
    readers: dict[str, list[onnx.NodeProto]] = field(init=False)
    outputs: set[str] = field(init=False)

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.inits = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.readers = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def array(self, name: str) -> np.ndarray | None:
        """An initializer's value, or ``None`` for a computed tensor."""
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None


def node_label(node: onnx.NodeProto) -> str:
    """How a node is named to users: its name, else its op and first output."""
    return node.name or f"{node.op_type}({node.output[0]})"


def _attr(node: onnx.NodeProto, name: str, default):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


@dataclass
class Layer:
    """A node whose weight gets an int8 grid.

    Attributes:
        node: The Conv/Gemm/MatMul node.
        name: Its name in reports (:func:`layer_name`, made unique within the graph: plans and reports
            are keyed by it).
        axis: The weight's output-channel axis (0 for Conv and transposed Gemm weights, 1 for MatMul).
        in_channels: Input channels (Conv), for the thin-conv rule.
    """

    node: onnx.NodeProto
    name: str
    axis: int
    in_channels: int = 0

    @property
    def weight(self) -> str:
        return self.node.input[1]

    @property
    def bias(self) -> str | None:
        return self.node.input[2] if len(self.node.input) > 2 and self.node.input[2] else None


def classify(g: Graph, thin_conv_channels: int, skip: list[str]) -> tuple[list[Layer], list[dict]]:
    """``(layers, float_nodes)``: the nodes whose weights can be quantized, and each node with a weight
    (or of an unknown kind) that stays float, with the reason and ``chosen`` (True when kept float on
    purpose: ``skip``, thin convs) as in the torch path's report, and ``weight`` where it has one."""
    layers, floats = [], []
    taken: set[str] = set()

    def keep(node: onnx.NodeProto, reason: str, chosen: bool = False, layer: Layer | None = None) -> None:
        name = layer.name if layer is not None else node_label(node)
        entry = {"layer": name, "op": node.op_type, "reason": reason, "chosen": chosen}
        if node.op_type in QUANTIZABLE + WEIGHTED_FLOAT and len(node.input) > 1:
            entry["weight"] = node.input[1]  # what the deployability check names the node by
        floats.append(entry)

    for node in g.model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            keep(node, f"op {node.domain}::{node.op_type} of another domain has no quantized form in distiq")
        elif node.op_type in WEIGHTED_FLOAT:
            keep(node, f"{node.op_type} has no quantized implementation in distiq")
        elif node.op_type in QUANTIZABLE:
            layer, reason = _layer(g, node)
            if layer is None:
                keep(node, reason)
                continue
            layer.name = _unique(layer.name, taken)
            if layer.name in skip or node_label(node) in skip:
                keep(node, "kept in float on request (skip)", True, layer)
            elif node.op_type == "Conv" and layer.in_channels <= thin_conv_channels:
                reason = (
                    f"{layer.in_channels} input channel(s): ONNX Runtime's integer conv is slower than its "
                    f"float conv on so few (thin_conv_channels={thin_conv_channels})"
                )
                keep(node, reason, True, layer)
            else:
                layers.append(layer)
    _check_skip(g, skip, taken)
    return layers, floats


def _check_skip(g: Graph, skip: list[str], names: set[str]) -> None:
    """A ``skip`` entry that names no Conv/Gemm/MatMul is a typo: say so, with the closest names,
    instead of quantizing the layer the user meant to keep float."""
    known = names | {node_label(n) for n in g.model.graph.node if n.op_type in QUANTIZABLE}
    for name in skip:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3) or sorted(known)[:5]
            raise DistiqError(f"skip: no Conv/Gemm/MatMul named {name!r}; closest: {', '.join(close)}")


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name#2``, ``name#3``... when another node has it (a weight shared by two nodes)."""
    unique, k = name, 1
    while unique in taken:
        k += 1
        unique = f"{name}#{k}"
    taken.add(unique)
    return unique


def _layer(g: Graph, node: onnx.NodeProto) -> tuple[Layer | None, str]:
    """The :class:`Layer` of a Conv/Gemm/MatMul, or ``None`` and why it cannot be quantized."""
    weight = g.array(node.input[1]) if len(node.input) > 1 else None
    if weight is None or weight.dtype != np.float32:
        return None, "its weight is not a float32 initializer (computed, or another type)"
    name = layer_name(node)
    if node.op_type == "Conv":
        return Layer(node, name, 0, weight.shape[1] * _attr(node, "group", 1)), ""
    if weight.ndim != 2:
        return None, f"{node.op_type} weight of {weight.ndim} dimensions (2 expected)"
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
            return None, "Gemm with transA=1, alpha != 1 or beta != 1 has no quantized form in distiq"
        return Layer(node, name, 0 if _attr(node, "transB", 0) else 1), ""
    return Layer(node, name, 1), ""


@dataclass
class Plan:
    """Where the activation grids go.

    Attributes:
        grids: Tensors that get a calibrated grid of their own.
        tied: Tensor -> the grid tensor whose scale and zero point it re-applies.
        input_grid: Layer name -> the grid tensor of its input (for the int32 bias scale).
        output_grid: Layer name -> the grid tensor of its output (absent for a graph output).
    """

    grids: list[str] = field(default_factory=list)
    tied: dict[str, str] = field(default_factory=dict)
    input_grid: dict[str, str] = field(default_factory=dict)
    output_grid: dict[str, str] = field(default_factory=dict)

    def grid_of(self, tensor: str) -> str | None:
        """The grid a tensor is on (its own or the one it re-applies), or ``None``."""
        return tensor if tensor in self.grids else self.tied.get(tensor)


def _output_tensor(g: Graph, layer: Layer, float_matmul: bool = False) -> str | None:
    """Where a layer's output grid goes: after a ReLU that is its only reader; none on a graph output,
    nor on a MatMul/Gemm with ``float_matmul`` (ORT then runs ``MatMulIntegerToFloat`` / ``QGemm``
    with a float output)."""
    if float_matmul and layer.node.op_type in ("MatMul", "Gemm"):
        return None
    out = layer.node.output[0]
    readers = g.readers.get(out, [])
    if len(readers) == 1 and readers[0].op_type == "Relu" and out not in g.outputs:
        out = readers[0].output[0]
    return None if out in g.outputs else out


def grid_candidates(g: Graph, layers: list[Layer], float_matmul: bool = False) -> list[str]:
    """Every tensor that :func:`plan_activations` of any subset of ``layers`` can give a grid of its
    own: each layer's output tensor and its input. Calibrating these once lets the budget search
    (:mod:`distiq.onnx.budget`) rebuild the graph for any subset without calibrating again."""
    found = []
    for layer in layers:
        out = _output_tensor(g, layer, float_matmul)
        found += [layer.node.input[0]] + ([out] if out is not None else [])
    return list(dict.fromkeys(found))


def plan_activations(g: Graph, layers: list[Layer], float_matmul: bool = False) -> Plan:
    """Place the activation grids for ``layers`` (see the module docstring); with ``float_matmul``
    the MatMul/Gemm outputs stay float (only their inputs and weights are int8)."""
    plan = Plan()
    for layer in layers:
        out = _output_tensor(g, layer, float_matmul)
        if out is not None:
            plan.grids.append(out)
            plan.output_grid[layer.name] = out
    for layer in layers:
        chain = _chain(g, layer.node.input[0], plan)
        source = plan.grid_of(chain[-1])
        if source is None:  # a new grid on the input itself, nearest the reader (as the torch path)
            source, chain = chain[0], chain[:1]
            plan.grids.append(source)
        for tensor in chain[:-1]:  # value-preserving ops after the grid: the same grid again
            plan.tied.setdefault(tensor, source)
        plan.input_grid[layer.name] = source
    return plan


def _chain(g: Graph, tensor: str, plan: Plan) -> list[str]:
    """Tensors from ``tensor`` back through value-preserving ops, ending at one on a grid or at the
    first one made by another op (or a graph input)."""
    chain = [tensor]
    while plan.grid_of(tensor) is None:
        node = g.producer.get(tensor)
        if node is None or node.op_type not in PRESERVING or len(node.output) != 1:
            break
        tensor = node.input[0]
        chain.append(tensor)
    return chain


__all__ = [
    "Graph", "Layer", "Plan", "classify", "grid_candidates", "layer_name", "load", "node_label",
    "plan_activations",
]  # fmt: skip
