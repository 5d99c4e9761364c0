"""Model cost without running a benchmark: parameters, multiply-accumulates (MACs), file size.

MACs count the multiply-accumulates of convolutions and linear layers per sample, the layers that
dominate the cost of the CNNs distiq compresses; normalisation, activations and pooling are left out,
as in most papers' "FLOPs" tables (which are usually MACs). For a PyTorch model they are read with
forward hooks on one probe batch (the model's ``forward`` is never touched); for an ONNX file from
the graph's shapes, so a pruned or quantized export is counted the same way as the float model.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from distiq.errors import DataError

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class Complexity:
    """Size and cost of a model.

    Attributes:
        parameters: Number of parameter elements (ONNX: elements of the graph's non-int64 initializers).
        macs: Multiply-accumulates of Conv and Linear (ONNX: Conv, Gemm, MatMul and their
            quantized forms) for one sample.
        macs_per_layer: MACs by layer (module path, or ONNX node name).
        file_bytes: Size of the file on disk, when there is one.
    """

    parameters: int
    macs: int
    macs_per_layer: dict[str, int] = field(default_factory=dict)
    file_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    """Parameter elements of ``model`` (trainable or not); shared tensors counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def file_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the file at ``path`` (``DataError`` naming it when missing)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return path.stat().st_size


def _layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    per_sample_out = out.numel() // max(out.shape[0], 1)
    if isinstance(module, nn.Linear):
        return per_sample_out * module.in_features
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        # Every input element is multiplied by a (C_out / groups) x kernel slab of the weight.
        per_sample_in = inp.numel() // max(inp.shape[0], 1)
        return per_sample_in * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    return per_sample_out * (module.in_channels // module.groups) * math.prod(module.kernel_size)


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, dict[str, int]]:
    """MACs per sample of ``model`` on inputs of ``input_shape`` (without the batch dimension).

    A convolution costs ``out_elements · (C_in / groups) · prod(kernel)``, a linear layer
    ``out_elements · in_features``. Runs one forward pass of a zero batch of two samples in eval mode
    (restored afterwards); a layer called twice is counted twice.

    Returns:
        ``(total, per_layer)`` with ``per_layer`` keyed by module path.
    """
    per_layer: dict[str, int] = {}
    handles = []

    def hook(path: str):
        def record(module, inputs, output):
            per_layer[path] = per_layer.get(path, 0) + _layer_macs(module, inputs[0], output)

        return record

    for path, module in model.named_modules():
        if isinstance(module, (nn.Linear, *_CONV)):
            handles.append(module.register_forward_hook(hook(path)))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        device = param.device if param is not None else "cpu"
        model(torch.zeros((2, *input_shape), dtype=dtype, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return sum(per_layer.values()), per_layer


def model_complexity(
    model: nn.Module | str | os.PathLike[str], input_shape: tuple[int, ...] | None = None
) -> Complexity:
    """Parameters, MACs and (for a file) size of a module or an ``.onnx`` file.

    Args:
        model: A module or a path to an ONNX file.
        input_shape: Input shape without batch; required for a module.
    """
    if isinstance(model, nn.Module):
        if input_shape is None:
            raise ValueError("input_shape is needed to count a module's MACs")
        macs, per_layer = count_macs(model, tuple(input_shape))
        return Complexity(count_parameters(model), macs, per_layer)
    return onnx_complexity(model)


# ONNX: node type -> index of the input holding the weight (whose shape gives the reduction size).
_ONNX_CONV = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_ONNX_MATMUL = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"}


def onnx_complexity(path: str | os.PathLike[str]) -> Complexity:
    """Parameters, MACs per sample and file size of an ONNX file.

    MACs come from ONNX shape inference with the batch dimension fixed to 1: a convolution costs
    ``prod(output[1:]) · prod(weight[1:])`` (the weight ``[M, C/g, k...]`` holds the per-output
    reduction), a matrix product ``prod(output[1:]) · K``. Weights behind a ``DequantizeLinear``
    (QDQ int8 exports) are followed back to their initializer.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    path = Path(path)
    size = file_size(path)
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and others for bad files
        raise DataError(f"{path}: not a readable ONNX file ({e})") from None
    graph = proto.graph
    inits = {t.name: tuple(t.dims) for t in graph.initializer}
    # int64 initializers are shapes and axes (a Reshape's target, a Flatten's), not learned weights
    params = sum(math.prod(t.dims) for t in graph.initializer if t.data_type != onnx.TensorProto.INT64)
    for inp in graph.input:  # per sample: batch 1
        dims = inp.type.tensor_type.shape.dim
        if dims and inp.name not in inits:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(proto).graph
    shapes = dict(inits)
    for vi in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    producers = {o: n for n in inferred.node for o in n.output}
    constants = {
        n.output[0]: tuple(numpy_helper.to_array(a.t).shape)
        for n in inferred.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value"
    }
    shapes = constants | shapes

    def shape_of(name: str) -> tuple[int, ...] | None:
        # Follow DequantizeLinear / Cast / Transpose-free chains back to a known shape.
        while (
            name not in shapes
            and name in producers
            and producers[name].op_type
            in (
                "DequantizeLinear",
                "Cast",
                "Identity",
            )
        ):
            name = producers[name].input[0]
        return shapes.get(name)

    per_layer: dict[str, int] = {}
    for i, node in enumerate(inferred.node):
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        key = node.name or f"{node.op_type}_{i}"
        if node.op_type in _ONNX_CONV:
            w = shape_of(node.input[_ONNX_CONV[node.op_type]])
            if w is not None:
                per_layer[key] = math.prod(out[1:]) * math.prod(w[1:])
        elif node.op_type in _ONNX_MATMUL:
            a = shape_of(node.input[0])
            if a is not None:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[-2] if trans_a else a[-1]
                per_layer[key] = math.prod(out[1:]) * k
    return Complexity(params, sum(per_layer.values()), per_layer, size)
