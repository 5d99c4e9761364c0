"""Fake quantization: quantize then dequantize in float, with gradients that let a network train.

The forward pass is the integer grid's round trip, ``(clamp(round(x / s) + z, qmin, qmax) - z) * s``,
so a float network sees exactly the values an integer kernel would compute with. Rounding has zero
gradient almost everywhere, so training needs a surrogate:

* :func:`fake_quantize` uses the straight-through estimator (Bengio et al., 2013): the gradient passes
  unchanged where ``round(x / s) + z`` lies inside ``[qmin, qmax]`` and is zero where it is clamped,
  the rule of ``torch.fake_quantize_per_tensor_affine`` (which the tests use as the oracle).
* :func:`lsq_fake_quantize` also learns the scale: LSQ (Esser et al., 2020, "Learned Step Size
  Quantization") differentiates the round trip w.r.t. ``s`` with the STE for ``round``, giving
  ``round(x/s) - x/s`` inside the range and ``qmin - z`` or ``qmax - z`` outside, and multiplies that
  gradient by ``g = 1 / sqrt(N * qmax)`` (``N`` elements per scale) so the step size learns at a rate
  comparable to the weights'. For activations ``N`` is the features of one sample, as in the paper
  (``N_F``), not the batch's elements: the rate then does not depend on the batch size, and a batch
  split over processes learns the scale one process learns.

Division (``x / s``) rather than multiplication by ``1 / s`` is used on purpose: ONNX Runtime's
``QuantizeLinear`` divides, and the exported integer model must agree with this simulation.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def _along(t: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """Reshape per-channel ``t`` (shape ``[C]``) so it broadcasts along ``axis`` of ``x``."""
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


class _FakeQuantSTE(torch.autograd.Function):
    """Quantize-dequantize; straight-through gradient masked where the integer was clamped."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
        q = torch.round(x / scale) + zero_point
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(
    x: Tensor,
    scale: Tensor | float,
    zero_point: Tensor | int,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> Tensor:
    """Quantize-dequantize ``x`` on the grid ``(scale, zero_point, [qmin, qmax])``.

    Args:
        x: Any float tensor.
        scale: A scalar, or a ``[C]`` tensor for per-channel quantization along ``axis``.
        zero_point: Same shape as ``scale`` (integer valued).
        qmin: Smallest integer (e.g. ``-127`` for symmetric 8-bit, ``0`` for unsigned).
        qmax: Largest integer.
        axis: Channel axis of ``x`` for per-channel grids, ``None`` for one grid.

    Returns:
        A tensor like ``x`` holding only grid values; its gradient is the straight-through estimate.
    """
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    zero_point = torch.as_tensor(zero_point, device=x.device).to(x.dtype)
    if axis is not None:
        axis = axis % x.dim()
    return _FakeQuantSTE.apply(x, _along(scale, x, axis), _along(zero_point, x, axis), qmin, qmax)


def grad_scale(x: Tensor, factor: float) -> Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``factor`` in the backward pass."""
    scaled = x * factor
    return (x - scaled).detach() + scaled


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` whose gradient is the identity (the straight-through estimator)."""
    return (torch.round(x) - x).detach() + x


def lsq_grad_factor(elements_per_scale: int, qmax: int) -> float:
    """LSQ's gradient scale ``1 / sqrt(N * qmax)`` (Esser et al., 2020, section 2.2)."""
    return 1.0 / math.sqrt(max(elements_per_scale, 1) * max(qmax, 1))


def lsq_fake_quantize(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor | int,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    grad_factor: float | None = None,
) -> Tensor:
    """Fake quantization with a learnable step size (LSQ).

    ``y = (round_ste(clamp(x / s, qmin - z, qmax - z))) * s``: the STE passes ``x``'s gradient inside
    the range, and ``s`` receives ``g * (round(x/s) - x/s)`` per element inside, ``g * (qmin - z)`` below
    and ``g * (qmax - z)`` above. The zero point stays fixed (LSQ+ would learn it too).

    Args:
        x: Tensor to quantize.
        scale: Learnable scale, scalar or ``[C]`` along ``axis``; used as ``|scale|`` (at least
            ``1e-8``) so an optimiser step can never make it zero or negative.
        zero_point: Fixed integer offset (0 when symmetric).
        qmin: Smallest integer of the grid.
        qmax: Largest integer of the grid.
        axis: Channel axis for per-channel scales.
        grad_factor: Gradient multiplier of the scale; default ``1 / sqrt(N * qmax)`` with ``N`` the
            number of elements sharing one scale.
    """
    if axis is not None:
        axis = axis % x.dim()
    if grad_factor is None:
        per_scale = x.numel() // max(scale.numel(), 1)
        grad_factor = lsq_grad_factor(per_scale, qmax)
    s = _along(grad_scale(scale.abs().clamp_min(1e-8), grad_factor), x, axis)
    z = _along(torch.as_tensor(zero_point, device=x.device).to(x.dtype), x, axis)
    q = round_ste(torch.clamp(x / s, qmin - z, qmax - z))
    return q * s
