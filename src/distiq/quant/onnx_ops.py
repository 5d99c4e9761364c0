"""Three custom torch ops whose only purpose is to become the right ONNX nodes on export.

``torch.onnx.export`` (the ``torch.export`` based exporter) cannot trace PyTorch's own
``fake_quantize_*`` ops with a dynamic batch dimension (they have no symbolic-shape kernel), and would
store weights as float initializers followed by ``QuantizeLinear``. These ops say exactly what the
ONNX graph must contain, and each has a reference implementation, so the exported model's PyTorch
twin computes the same numbers:

* ``distiq::qdq(x, scale, zero_point, qmin, qmax)`` -> ``QuantizeLinear`` + ``DequantizeLinear``
  (uint8 when ``qmin == 0``, else int8): an activation quantizer.
* ``distiq::dequantize(q, scale, zero_point, axis)`` -> ``DequantizeLinear`` of an integer tensor,
  i.e. an int8 weight or int32 bias stored as an integer initializer (a quarter of the float bytes).
* ``distiq::dynamic_linear(x, w_t, w_scale, w_zero_point, bias)`` -> ``DynamicQuantizeLinear`` +
  ``MatMulInteger`` + ``Cast`` + ``Mul`` (+ ``Add``): the pattern ONNX Runtime fuses into its dynamic
  integer matmul (``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat``).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def _along(t: Tensor, like: Tensor, axis: int) -> Tensor:
    if t.dim() == 0:
        return t
    shape = [1] * like.dim()
    shape[axis] = -1
    return t.reshape(shape)


@torch.library.custom_op("distiq::qdq", mutates_args=())
def qdq(x: Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> Tensor:
    """Quantize-dequantize on a per-tensor grid, ONNX ``QuantizeLinear`` semantics (divide, round
    half to even, saturate)."""
    q = torch.clamp(torch.round(x / torch.tensor(scale, dtype=torch.float32)) + zero_point, qmin, qmax)
    return (q - zero_point) * torch.tensor(scale, dtype=torch.float32)


@qdq.register_fake
def _(x: Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("distiq::dequantize", mutates_args=())
def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int) -> Tensor:
    """``(q - zero_point) * scale`` along ``axis`` (ONNX ``DequantizeLinear``)."""
    zp = _along(zero_point, q, axis).to(torch.float32)
    return (q.to(torch.float32) - zp) * _along(scale, q, axis)


@dequantize.register_fake
def _(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int) -> Tensor:
    return torch.empty(q.shape, dtype=torch.float32, device=q.device)


@torch.library.custom_op("distiq::dynamic_linear", mutates_args=())
def dynamic_linear(
    x: Tensor, w_t: Tensor, w_scale: Tensor, w_zero_point: Tensor, bias: Tensor | None
) -> Tensor:
    """``x @ dequant(w_t) + bias`` with ``x`` quantized per tensor to uint8 from its own range, as
    ``DynamicQuantizeLinear`` does; ``w_t`` is the int8 weight transposed to ``[in, out]``."""
    lo = torch.clamp(x.min(), max=0.0)
    hi = torch.clamp(x.max(), min=0.0)
    scale = torch.clamp((hi - lo) / 255.0, min=torch.finfo(torch.float32).eps)
    zp = torch.clamp(torch.round(-lo / scale), 0, 255)
    xq = torch.clamp(torch.round(x / scale) + zp, 0, 255) - zp
    acc = xq @ (w_t.to(torch.float32) - w_zero_point.to(torch.float32))
    out = acc * (scale * w_scale)
    return out if bias is None else out + bias


@dynamic_linear.register_fake
def _(x: Tensor, w_t: Tensor, w_scale: Tensor, w_zero_point: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((*x.shape[:-1], w_t.shape[1]))


def translations() -> dict:
    """The ONNX form of each op, for ``torch.onnx.export``'s ``custom_translation_table``.

    onnxscript is imported here, on export, not with the module: it is about 2 s of every
    ``import distiq`` (every command, every worker process), and only an export needs it.
    """
    from onnxscript import ir
    from onnxscript import opset18 as op

    def qdq_onnx(x, scale: float, zero_point: int, qmin: int, qmax: int):
        dtype = ir.DataType.UINT8 if qmin == 0 else ir.DataType.INT8
        s = op.Constant(value=ir.tensor(scale, dtype=ir.DataType.FLOAT))
        z = op.Constant(value=ir.tensor(zero_point, dtype=dtype))
        return op.DequantizeLinear(op.QuantizeLinear(x, s, z), s, z)

    def dequantize_onnx(q, scale, zero_point, axis: int):
        return op.DequantizeLinear(q, scale, zero_point, axis=axis)

    def dynamic_linear_onnx(x, w_t, w_scale, w_zero_point, bias=None):
        xq, x_scale, x_zero_point = op.DynamicQuantizeLinear(x)
        acc = op.MatMulInteger(xq, w_t, x_zero_point, w_zero_point)
        out = op.Mul(op.Cast(acc, to=ir.DataType.FLOAT), op.Mul(x_scale, w_scale))
        return out if bias is None else op.Add(out, bias)

    return {
        torch.ops.distiq.qdq.default: qdq_onnx,
        torch.ops.distiq.dequantize.default: dequantize_onnx,
        torch.ops.distiq.dynamic_linear.default: dynamic_linear_onnx,
    }
