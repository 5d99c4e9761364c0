"""``distiq.export_onnx``: float models as plain ONNX, quantized ones as int8 (or int4) QDQ ONNX.

A quantized model is first *frozen*: each quantized Conv/Linear of a copy is replaced by a module
holding its integer weight (and, where the input grid is known, its int32 bias) as integer buffers that
feed ``DequantizeLinear``, and activation quantizers switch to ``distiq::qdq`` (see
:mod:`distiq.quant.onnx_ops`). ``torch.onnx.export`` then writes exactly the QDQ graph ONNX Runtime's
CPU provider fuses into ``QLinearConv`` / ``QGemm``: integer initializers (the file is about a quarter of
the float one), an int32 bias with scale ``input_scale * weight_scale``, and ``Q -> DQ`` pairs on the
activations. Dynamic-mode Linear layers become ``DynamicQuantizeLinear + MatMulInteger`` instead,
which ORT fuses into its dynamic integer matmul. The batch dimension stays dynamic; the file passes
``onnx.checker`` and is written atomically.

Weights of 4 bits or fewer are stored as ONNX ``INT4`` initializers (two per byte, opset 21
``DequantizeLinear`` with a per-channel axis), so a 4-bit file is about an eighth of the float one.
What ONNX Runtime (1.32, CPU) then runs, as :func:`~distiq.quant.deploy.kernels` reports it: it has no
integer Conv/Gemm for INT4 weights, so ``DQ(int4) -> Conv/Gemm`` runs as ``DequantizeLinear`` (the
weight expanded to float) and a float kernel, the activation Q/DQ pairs too; a weight-only Linear is
written as ``MatMul`` with the transposed weight, which ORT fuses into ``MatMulNBits`` (4-bit weights
unpacked inside its kernel) unless it has fused it with a following ReLU into a float Gemm first.
``int4=False`` keeps int8 containers instead: a file twice as large that ORT runs on ``QLinearConv``
/ ``QGemm``. Dynamic-mode layers always keep int8 (``MatMulInteger`` takes no INT4).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import os
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from distiq.errors import DistiqError
from distiq.io import atomic_path

from .fuse import set_module
from .modules import ActQuant, QuantConv2d, QuantLinear, WeightQuant, quant_layers, set_state
from .onnx_ops import translations
from .trace import _tensors

if TYPE_CHECKING:
    from distiq.onnx.graph import Graph

Tensor = torch.Tensor
#: ONNX metadata key naming the CPU target (:mod:`distiq.quant.target`) a quantized file was made for.
TARGET_KEY = "distiq.target"
#: Weights of at most this many bits are written as INT4 initializers.
INT4_BITS = 4
#: The first ONNX opset whose DequantizeLinear takes INT4.
INT4_OPSET = 21


def weight_integers(wq: WeightQuant, w: Tensor) -> Tensor:
    """The integers a weight quantizer maps ``w`` to: its own (learned rounding, e.g. AdaRound's) when
    it defines them, else round-to-nearest on its grid, as its fake quantization computes them."""
    own = getattr(wq, "integers", None)
    if own is not None:
        return own(w)
    scale = wq.effective_scale().detach().to(torch.float32)
    zp = wq.zero_point.to(torch.int32)
    shape = [-1] + [1] * (w.dim() - 1) if scale.dim() else []
    return torch.clamp(torch.round(w / scale.reshape(shape)) + zp.reshape(shape), wq.qmin, wq.qmax)


class _FrozenLayer(nn.Module):
    """A quantized layer reduced to integers: int8 weight (+ int32 bias) buffers and its quantizers.

    ``int4``: name the weight buffer ``weight_int4``, which :func:`_int4_initializers` rewrites as an
    INT4 initializer after export (torch has no 4-bit dtype to export directly), and keep the bias
    float: ORT fuses no INT4 layer into an integer kernel, so an int32 bias (and its scale tensor, 8
    bytes a channel) would buy nothing, and the float bias is the one the simulation adds.
    """

    def __init__(self, layer: QuantConv2d | QuantLinear, int4: bool = False) -> None:
        super().__init__()
        wq = layer.weight_quant
        scale = wq.effective_scale().detach().to(torch.float32)
        zp = wq.zero_point.to(torch.int32)
        q = weight_integers(wq, layer.weight.detach())
        self.weight_name = "weight_int4" if int4 else "weight_int8"
        self.register_buffer(self.weight_name, q.to(torch.int8))
        self.register_buffer("weight_scale", scale.clone())
        self.register_buffer("weight_zero_point", zp.to(torch.int8))
        self.input_quant, self.output_quant, self.relu = layer.input_quant, layer.output_quant, layer.relu
        self.register_buffer("bias_float", None)
        grid = layer.input_grid[0] if layer.input_grid else None
        if layer.bias is not None and grid is not None and grid.enabled and not int4:
            bias_scale = (grid.effective_scale().detach() * scale).to(torch.float32).expand(q.shape[0])
            bias_q = torch.round(layer.bias.detach() / bias_scale).clamp(-(2**31), 2**31 - 1)
            self.register_buffer("bias_int32", bias_q.to(torch.int32))
            self.register_buffer("bias_scale", bias_scale.clone())
            self.register_buffer("bias_zero_point", torch.zeros_like(self.bias_int32))
        elif layer.bias is not None:
            self.bias_float = layer.bias.detach().clone()

    def _weight_bias(self) -> tuple[Tensor, Tensor | None]:
        axis = 0
        q = getattr(self, self.weight_name)
        w = torch.ops.distiq.dequantize(q, self.weight_scale, self.weight_zero_point, axis)
        if hasattr(self, "bias_int32"):
            b = torch.ops.distiq.dequantize(self.bias_int32, self.bias_scale, self.bias_zero_point, 0)
            return w, b
        return w, self.bias_float

    def _finish(self, y: Tensor) -> Tensor:
        if self.relu:
            y = F.relu(y)
        return self.output_quant(y) if self.output_quant is not None else y

    def _input(self, x: Tensor) -> Tensor:
        return self.input_quant(x) if self.input_quant is not None else x


class _FrozenConv2d(_FrozenLayer):
    def __init__(self, conv: QuantConv2d, int4: bool = False) -> None:
        super().__init__(conv, int4)
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        if conv.padding_mode != "zeros":
            raise DistiqError(f"export: padding_mode {conv.padding_mode!r} is unsupported when quantized")

    def forward(self, x: Tensor) -> Tensor:
        w, b = self._weight_bias()
        y = F.conv2d(self._input(x), w, b, self.stride, self.padding, self.dilation, self.groups)
        return self._finish(y)


class _FrozenLinear(_FrozenLayer):
    def forward(self, x: Tensor) -> Tensor:
        w, b = self._weight_bias()
        return self._finish(F.linear(self._input(x), w, b))


class _FrozenMatMulLinear(nn.Module):
    """A weight-only 4-bit Linear as ``MatMul(x, DQ(W^T int4, axis=1)) + bias``: the pattern ONNX
    Runtime fuses into ``MatMulNBits`` (it fuses no ``Gemm``, nor a ``MatMul`` whose input is
    quantized). ORT 1.32 first fuses a MatMul + Add followed by a ReLU into a float ``FusedGemm``,
    so in practice the layers without a ReLU after them get MatMulNBits; ``kernels`` says which."""

    def __init__(self, layer: QuantLinear) -> None:
        super().__init__()
        wq = layer.weight_quant
        q = weight_integers(wq, layer.weight.detach())
        self.register_buffer("weight_int4", q.t().contiguous().to(torch.int8))
        self.register_buffer("weight_scale", wq.effective_scale().detach().to(torch.float32).clone())
        self.register_buffer("weight_zero_point", torch.zeros_like(self.weight_scale, dtype=torch.int8))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), False)
        self.relu, self.output_quant = layer.relu, layer.output_quant

    def forward(self, x: Tensor) -> Tensor:
        w = torch.ops.distiq.dequantize(self.weight_int4, self.weight_scale, self.weight_zero_point, 1)
        y = torch.matmul(x, w)
        if self.bias is not None:
            y = y + self.bias
        if self.relu:
            y = F.relu(y)
        return self.output_quant(y) if self.output_quant is not None else y


class _FrozenDynamicLinear(nn.Module):
    """A dynamic-mode Linear: int8 weight ``[in, out]`` for ``MatMulInteger``, float bias."""

    def __init__(self, layer: QuantLinear) -> None:
        super().__init__()
        wq = layer.weight_quant
        scale = wq.effective_scale().detach().to(torch.float32)
        q = weight_integers(wq, layer.weight.detach())
        self.register_buffer("weight_t", q.to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale.clone())
        self.register_buffer("weight_zero_point", torch.zeros_like(scale, dtype=torch.int8))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.distiq.dynamic_linear(
            x, self.weight_t, self.weight_scale, self.weight_zero_point, self.bias
        )


def _int4_weight(layer: QuantConv2d | QuantLinear, int4: bool) -> bool:
    return int4 and layer.weight_quant.bits <= INT4_BITS


def freeze(model: nn.Module, int4: bool = True) -> nn.Module:
    """An export-ready copy of a quantized model: integer layers, quantizers in the "export" state.

    ``int4``: weights of at most 4 bits become INT4 initializers (see the module docstring).
    """
    frozen = copy.deepcopy(model).eval()
    for path, layer in quant_layers(frozen).items():
        if not layer.weight_quant.enabled:
            continue  # float weights (switched off by a sensitivity search): exported as float
        four = _int4_weight(layer, int4)
        if isinstance(layer.input_quant, ActQuant) and layer.input_quant.source.dynamic:
            if not isinstance(layer, QuantLinear):
                raise DistiqError(f"export: dynamic quantization of {path} ({type(layer).__name__})")
            set_module(frozen, path, _FrozenDynamicLinear(layer))
        elif isinstance(layer, QuantConv2d):
            set_module(frozen, path, _FrozenConv2d(layer, four))
        elif four and not layer.input_grid and layer.input_quant is None:  # weight-only: MatMulNBits
            set_module(frozen, path, _FrozenMatMulLinear(layer))
        else:
            set_module(frozen, path, _FrozenLinear(layer, four))
    set_state(frozen, "export")
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def _scalar(inits: dict[str, onnx.TensorProto], name: str) -> bool:
    return name in inits and len(inits[name].dims) == 0


def _compact(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop what a runtime does not need and can outweigh int8 weights: exporter metadata (stack
    traces), node names, inferred shapes of intermediate values, all-zero int32 bias zero points
    (optional in ``DequantizeLinear``), attributes at their default; intermediate values get short
    names."""
    graph = model.graph
    del graph.value_info[:]
    del model.metadata_props[:]
    del graph.metadata_props[:]
    for value in [*graph.input, *graph.output, *graph.initializer]:
        del value.metadata_props[:]
    inits = {i.name: i for i in graph.initializer}
    # weights keep their module path: it names the layer in reports and deployability checks
    keep = {v.name for v in [*graph.input, *graph.output]}
    keep |= {n for n in inits if n.rsplit(".", 1)[-1] in ("weight", "weight_int8", "weight_int4", "weight_t")}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    for node in graph.node:
        del node.metadata_props[:]
        node.ClearField("doc_string")
        node.ClearField("name")
        _drop_default_attributes(node, opsets)
        zp = inits.get(node.input[2]) if node.op_type == "DequantizeLinear" and len(node.input) == 3 else None
        if zp is not None and zp.data_type == onnx.TensorProto.INT32 and not numpy_helper.to_array(zp).any():
            del node.input[2]
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and _scalar(inits, node.input[1]):
            kept = [a for a in node.attribute if a.name != "axis"]  # meaningless per tensor
            del node.attribute[:]
            node.attribute.extend(kept)
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for init in graph.initializer:
        init.name = short(init.name)
    _drop_unused_initializers(graph)
    return model


#: Attributes whose default the ONNX spec gives in words, not as a schema default: one per spatial axis
SPATIAL_DEFAULTS = {"strides": 1, "dilations": 1, "pads": 0}
#: Attributes the spec says a runtime infers when absent: a Conv's kernel shape is its weight's
INFERRED = {("Conv", "kernel_shape")}


def _drop_default_attributes(node: onnx.NodeProto, opsets: dict[str, int]) -> None:
    """Remove the attributes a node sets to its operator's default (the exporter writes ``group=1``,
    ``strides=[1, 1]``, ``auto_pad="NOTSET"``... on every Conv and pool): every runtime applies the
    defaults itself, and in a 4-bit file these bytes weigh as much as a small layer's weights."""
    domain = node.domain or "ai.onnx"
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 0), domain.replace("ai.onnx", ""))
    except onnx.defs.SchemaError:  # an op ONNX does not know (or a domain not imported) keeps them all
        return
    kept = [a for a in node.attribute if not _is_default(a, schema)]
    if len(kept) < len(node.attribute):
        del node.attribute[:]
        node.attribute.extend(kept)


def _is_default(attr: onnx.AttributeProto, schema: onnx.defs.OpSchema) -> bool:
    """Whether ``attr`` says nothing the runtime would not assume without it."""
    if attr.name not in schema.attributes:
        return False
    if (schema.name, attr.name) in INFERRED:
        return True
    if attr.name in SPATIAL_DEFAULTS and attr.type == onnx.AttributeProto.INTS:
        return all(v == SPATIAL_DEFAULTS[attr.name] for v in attr.ints)
    default = schema.attributes[attr.name].default_value
    value = onnx.helper.get_attribute_value
    return default.type == attr.type and value(default) == value(attr)


#: Ops whose every output value is one of their input values: requantizing their output on the grid of
#: their input changes nothing
VALUE_SELECTING_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")


def _drop_identity_requantize(model: onnx.ModelProto) -> int:
    """Remove ``Q -> DQ`` pairs that requantize a value-selecting op's output (MaxPool, Reshape...) on
    the very grid its input was dequantized from: ``Q(MaxPool(DQ(q))) == MaxPool(q)`` exactly, so the pair
    is an identity. Only where every reader of the pair is a layer with INT4 weights: ORT runs those on
    float kernels, whereas an int8 layer needs the ``DQ -> MaxPool -> Q`` pattern to stay integer.
    Returns the number of pairs removed."""
    from distiq.onnx.graph import Graph  # here, not at import: distiq.onnx imports distiq.quant

    g = Graph(model)
    pairs = [(q, dq) for q in model.graph.node if (dq := _identity_pair(g, q)) is not None]
    for q, dq in pairs:
        for reader in g.readers[dq.output[0]]:
            reader.input[:] = [q.input[0] if n == dq.output[0] else n for n in reader.input]
        model.graph.node.remove(q)
        model.graph.node.remove(dq)
    _drop_unused_initializers(model.graph)
    return len(pairs)


def _identity_pair(g: Graph, q: onnx.NodeProto) -> onnx.NodeProto | None:
    """The DQ after ``q`` when ``DQ -> op -> q -> DQ`` (op value-selecting, its output read by ``q``
    alone, one grid throughout) feeds only INT4-weight layers; else ``None``."""
    op = g.producer.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
    if op is None or op.op_type not in VALUE_SELECTING_OPS or len(g.readers[q.input[0]]) != 1:
        return None
    source, pair = g.producer.get(op.input[0]), g.readers.get(q.output[0], [])
    if source is None or source.op_type != "DequantizeLinear" or len(pair) != 1:
        return None
    dq = pair[0]
    if dq.op_type != "DequantizeLinear" or not _grid(g, q) == _grid(g, source) == _grid(g, dq):
        return None
    readers = g.readers.get(dq.output[0], [])
    return dq if readers and all(_int4_weighted(g, r) for r in readers) else None


def _grid(g: Graph, node: onnx.NodeProto) -> tuple:
    """A Q/DQ node's scale and zero point, by value (a computed one by name)."""
    names = node.input[1:3]
    return tuple(n if v is None else v.tobytes() for n, v in zip(names, map(g.array, names), strict=True))


def _int4_weighted(g: Graph, node: onnx.NodeProto) -> bool:
    """Whether ``node``'s weight (its second input) is dequantized from an INT4 initializer."""
    weight = g.producer.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None or weight.op_type != "DequantizeLinear" or weight.input[0] not in g.inits:
        return False
    return g.inits[weight.input[0]].data_type == onnx.TensorProto.INT4


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove the initializers no node reads any more."""
    used = {n for node in graph.node for n in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _int4_initializers(model: onnx.ModelProto) -> int:
    """Rewrite every ``*.weight_int4`` initializer (int8 values in ``[-8, 7]``) as ONNX ``INT4``, two
    values a byte, and drop its all-zero zero point (optional in ``DequantizeLinear``, and it would have
    to be INT4 too); the file's default-domain opset is raised to 21, the first with INT4 in
    ``DequantizeLinear``. Returns the number of initializers rewritten."""
    import ml_dtypes

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done = 0
    for node in graph.node:
        name = node.input[0] if node.op_type == "DequantizeLinear" else ""
        if not name.endswith(".weight_int4") or inits[name].data_type == onnx.TensorProto.INT4:
            continue
        values = numpy_helper.to_array(inits[name])
        if values.min() < -8 or values.max() > 7:
            raise DistiqError(f"export: {name} holds values outside INT4's [-8, 7]")
        inits[name].CopyFrom(numpy_helper.from_array(values.astype(ml_dtypes.int4), name))
        if len(node.input) == 3:
            zp = inits.get(node.input[2])
            if zp is None or numpy_helper.to_array(zp).any():
                raise DistiqError(f"export: {name} has a non-zero zero point; INT4 weights are symmetric")
            del node.input[2]
        done += 1
    if done:
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < INT4_OPSET:
                opset.version = INT4_OPSET
        _drop_unused_initializers(graph)
    return done


class _NoTorchvisionNotice(logging.Filter):
    """Drops the exporter's "torchvision is not installed. Skipping ..." lines (four per export):
    distiq never uses torchvision's ops, so they only bury the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed")


@contextlib.contextmanager
def _quiet_torchvision_notice():
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    notice = _NoTorchvisionNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


_TORCHLIB: dict[int, object] = {}


@functools.cache
def _torch_registry() -> tuple[type, classmethod, int] | None:
    """torch's (private) ONNX registry class, its own ``from_torchlib`` and its default opset, or None
    where the class does not look as in torch 2.13 (pyproject allows torch>=2.4): exports then build
    it as before."""
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        build, empty = cls.__dict__["from_torchlib"], cls()
        known = isinstance(build, classmethod) and isinstance(getattr(empty, "functions", None), dict)
        return (cls, build, empty.opset_version) if known else None
    except (ImportError, AttributeError, KeyError):
        return None


@contextlib.contextmanager
def _torchlib_built_once():
    """Let torch.onnx.export reuse the registry of torchlib functions it builds on every call.

    Building it walks every onnxscript torchlib function (about 0.75 s a call here, half of a small
    model's export); a pipeline exports a file per stage and per search trial. Each export gets its own
    copy, since the exporter adds distiq's translations to the registry it is given."""
    found = _torch_registry()
    if found is None:
        yield
        return
    cls, build, default_opset = found

    def from_torchlib(_cls, opset_version=default_opset):
        if opset_version not in _TORCHLIB:
            _TORCHLIB[opset_version] = build.__func__(_cls, opset_version)
        built, fresh = _TORCHLIB[opset_version], _cls()
        fresh._opset_version = built._opset_version
        fresh.functions = {name: list(entries) for name, entries in built.functions.items()}
        return fresh

    cls.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        cls.from_torchlib = build


def to_onnx(model: nn.Module, example_input: Tensor, opset: int | None = None) -> onnx.ModelProto:
    """Trace ``model`` into an ONNX model with a dynamic batch dimension (input "input", output
    "output"), silencing the exporter's progress prints."""
    if not isinstance(example_input, Tensor) or example_input.dim() < 1:
        raise DistiqError("export: example_input must be a batch tensor [N, ...]")
    example = example_input[:2]
    if len(example) < 2:  # a batch of 1 would be specialised to a constant dimension
        example = example.expand(2, *example.shape[1:]).contiguous()
    with torch.no_grad():
        n_out = len(_tensors(model(example)))
    names = ["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    kwargs = {} if opset is None else {"opset_version": opset}
    with (
        warnings.catch_warnings(),
        redirect_stdout(io.StringIO()),
        _quiet_torchvision_notice(),
        _torchlib_built_once(),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            external_data=False,
            input_names=["input"],
            output_names=names,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            custom_translation_table=translations(),
            verbose=False,
            **kwargs,
        )
    return _compact(program.model_proto)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_input: Tensor,
    *,
    opset: int | None = None,
    int4: bool = True,
) -> Path:
    """Write ``model`` as ONNX: plain float, or int8 QDQ when it came from :func:`distiq.quantize`.

    Args:
        model: A float model, or a simulated-quantized one (static, qat, weight-only or dynamic).
        path: Destination ``.onnx`` file, replaced atomically.
        example_input: An input batch (its batch size does not matter: the batch stays dynamic).
        opset: ONNX opset (default: the exporter's; at least 21 when the file holds INT4 weights).
        int4: Store weights of 4 bits or fewer as INT4 (a file about 1/8 of the float one, run by ORT
            on float kernels or MatMulNBits); ``False``: int8 containers (about 1/4, integer kernels).

    Returns:
        ``path``.

    Raises:
        DistiqError: The model cannot be written (e.g. activations below 8 bits, which ONNX QDQ
            cannot express).
    """
    from .modules import is_quantized

    was_training = model.training
    target = freeze(model, int4) if is_quantized(model) else copy.deepcopy(model).eval()
    try:
        proto = to_onnx(target, example_input, opset)
    finally:
        model.train(was_training)
    if _int4_initializers(proto):
        _drop_identity_requantize(proto)
    report = getattr(model, "quant_report", None)
    if getattr(report, "target", ""):
        # which kernels the integer grids were made for: deploy_check compares it with the CPU it runs on
        onnx.helper.set_model_props(proto, {TARGET_KEY: report.target})
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path
