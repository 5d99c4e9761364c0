"""``distiq.export_onnx``: float models as plain ONNX, quantized ones as int8 QDQ ONNX.

A quantized model is first *frozen*: each quantized Conv/Linear of a copy is replaced by a module
holding its int8 weight (and, where the input grid is known, its int32 bias) as integer buffers that
feed ``DequantizeLinear``, and activation quantizers switch to ``distiq::qdq`` (see
:mod:`distiq.quant.onnx_ops`). ``torch.onnx.export`` then writes exactly the QDQ graph ONNX Runtime's
CPU provider fuses into ``QLinearConv`` / ``QGemm``: integer initializers (the file is about a quarter of
the float one), an int32 bias with scale ``input_scale * weight_scale``, and ``Q -> DQ`` pairs on the
activations. Dynamic-mode Linear layers become ``DynamicQuantizeLinear + MatMulInteger`` instead,
which ORT fuses into its dynamic integer matmul. The batch dimension stays dynamic; the file passes
``onnx.checker`` and is written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from distiq.errors import DistiqError
from distiq.io import atomic_path

from .fuse import set_module
from .modules import ActQuant, QuantConv2d, QuantLinear, quant_layers, set_state
from .onnx_ops import TRANSLATIONS
from .trace import _tensors

Tensor = torch.Tensor
#: ONNX metadata key naming the CPU target (:mod:`distiq.quant.target`) a quantized file was made for.
TARGET_KEY = "distiq.target"


class _FrozenLayer(nn.Module):
    """A quantized layer reduced to integers: int8 weight (+ int32 bias) buffers and its quantizers."""

    def __init__(self, layer: QuantConv2d | QuantLinear) -> None:
        super().__init__()
        wq = layer.weight_quant
        scale = wq.effective_scale().detach().to(torch.float32)
        zp = wq.zero_point.to(torch.int32)
        shape = [-1] + [1] * (layer.weight.dim() - 1) if scale.dim() else []
        w = layer.weight.detach()
        q = torch.clamp(torch.round(w / scale.reshape(shape)) + zp.reshape(shape), wq.qmin, wq.qmax)
        self.register_buffer("weight_int8", q.to(torch.int8))
        self.register_buffer("weight_scale", scale.clone())
        self.register_buffer("weight_zero_point", zp.to(torch.int8))
        self.input_quant, self.output_quant, self.relu = layer.input_quant, layer.output_quant, layer.relu
        self.register_buffer("bias_float", None)
        grid = layer.input_grid[0] if layer.input_grid else None
        if layer.bias is not None and grid is not None and grid.enabled:
            bias_scale = (grid.effective_scale().detach() * scale).to(torch.float32).expand(q.shape[0])
            bias_q = torch.round(layer.bias.detach() / bias_scale).clamp(-(2**31), 2**31 - 1)
            self.register_buffer("bias_int32", bias_q.to(torch.int32))
            self.register_buffer("bias_scale", bias_scale.clone())
            self.register_buffer("bias_zero_point", torch.zeros_like(self.bias_int32))
        elif layer.bias is not None:
            self.bias_float = layer.bias.detach().clone()

    def _weight_bias(self) -> tuple[Tensor, Tensor | None]:
        axis = 0
        w = torch.ops.distiq.dequantize(self.weight_int8, self.weight_scale, self.weight_zero_point, axis)
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
    def __init__(self, conv: QuantConv2d) -> None:
        super().__init__(conv)
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


class _FrozenDynamicLinear(nn.Module):
    """A dynamic-mode Linear: int8 weight ``[in, out]`` for ``MatMulInteger``, float bias."""

    def __init__(self, layer: QuantLinear) -> None:
        super().__init__()
        wq = layer.weight_quant
        scale = wq.effective_scale().detach().to(torch.float32)
        shape = [-1, 1] if scale.dim() else []
        q = torch.clamp(torch.round(layer.weight.detach() / scale.reshape(shape)), wq.qmin, wq.qmax)
        self.register_buffer("weight_t", q.to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale.clone())
        self.register_buffer("weight_zero_point", torch.zeros_like(scale, dtype=torch.int8))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.distiq.dynamic_linear(
            x, self.weight_t, self.weight_scale, self.weight_zero_point, self.bias
        )


def freeze(model: nn.Module) -> nn.Module:
    """An export-ready copy of a quantized model: integer layers, quantizers in the "export" state."""
    frozen = copy.deepcopy(model).eval()
    for path, layer in quant_layers(frozen).items():
        if not layer.weight_quant.enabled:
            continue  # float weights (switched off by a sensitivity search): exported as float
        if isinstance(layer.input_quant, ActQuant) and layer.input_quant.source.dynamic:
            if not isinstance(layer, QuantLinear):
                raise DistiqError(f"export: dynamic quantization of {path} ({type(layer).__name__})")
            set_module(frozen, path, _FrozenDynamicLinear(layer))
        elif isinstance(layer, QuantConv2d):
            set_module(frozen, path, _FrozenConv2d(layer))
        else:
            set_module(frozen, path, _FrozenLinear(layer))
    set_state(frozen, "export")
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def _scalar(inits: dict[str, onnx.TensorProto], name: str) -> bool:
    return name in inits and len(inits[name].dims) == 0


def _compact(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop what a runtime does not need and can outweigh int8 weights: exporter metadata (stack
    traces), node names, inferred shapes of intermediate values, all-zero int32 bias zero points
    (optional in ``DequantizeLinear``); intermediate values get short names."""
    graph = model.graph
    del graph.value_info[:]
    del model.metadata_props[:]
    del graph.metadata_props[:]
    for value in [*graph.input, *graph.output, *graph.initializer]:
        del value.metadata_props[:]
    inits = {i.name: i for i in graph.initializer}
    # weights keep their module path: it names the layer in reports and deployability checks
    keep = {v.name for v in [*graph.input, *graph.output]}
    keep |= {n for n in inits if n.rsplit(".", 1)[-1] in ("weight", "weight_int8", "weight_t")}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string, node.name = "", ""
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
    used = {n for node in graph.node for n in node.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return model


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
            custom_translation_table=TRANSLATIONS,
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
) -> Path:
    """Write ``model`` as ONNX: plain float, or int8 QDQ when it came from :func:`distiq.quantize`.

    Args:
        model: A float model, or a simulated-quantized one (static, qat, weight-only or dynamic).
        path: Destination ``.onnx`` file, replaced atomically.
        example_input: An input batch (its batch size does not matter: the batch stays dynamic).
        opset: ONNX opset (default: the exporter's).

    Returns:
        ``path``.

    Raises:
        DistiqError: The model cannot be written (e.g. activations below 8 bits, which ONNX QDQ
            cannot express).
    """
    from .modules import is_quantized

    was_training = model.training
    target = freeze(model) if is_quantized(model) else copy.deepcopy(model).eval()
    try:
        proto = to_onnx(target, example_input, opset)
    finally:
        model.train(was_training)
    report = getattr(model, "quant_report", None)
    if getattr(report, "target", ""):
        # which kernels the integer grids were made for: deploy_check compares it with the CPU it runs on
        onnx.helper.set_model_props(proto, {TARGET_KEY: report.target})
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path
