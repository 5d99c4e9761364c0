"""Quantizer modules and the quantized Conv2d / Linear layers that carry them.

A simulated-quantized model is the float model with three kinds of module added:

* :class:`WeightQuant` fake-quantizes a layer's weight (per output channel by default, symmetric int8),
  its grid computed from the weight itself.
* :class:`ActQuant` fake-quantizes an activation tensor on one per-tensor grid (asymmetric uint8 by
  default), calibrated by streaming batches through a registered calibrator, or (``dynamic``)
  recomputed from each batch at run time as ONNX Runtime's ``DynamicQuantizeLinear`` does.
* :class:`QuantConv2d` / :class:`QuantLinear` replace ``nn.Conv2d`` / ``nn.Linear``; they keep their
  ``weight`` and ``bias`` (so state-dict keys do not change) and apply, in order: input quantizer (only
  where the input is not already on a grid), weight quantizer, the layer, a fused ReLU, the output
  quantizer. :class:`QuantOutput` puts a quantizer after any other module (a pool, the ReLU after a
  residual add) so that every reader of that tensor sees the same grid.

Every quantizer has a ``state``: ``"off"`` (identity), ``"observe"`` (identity, feeding the
calibrator), ``"quant"`` (fake quantization with straight-through or LSQ gradients) or ``"export"``
(the ``distiq::qdq`` op of :mod:`distiq.quant.onnx_ops`, which exports as QuantizeLinear/DequantizeLinear).
This layout maps one to one onto ONNX QDQ: each quantizer becomes one Q/DQ pair on the same tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distiq.errors import DistiqError

from . import onnx_ops  # noqa: F401  (registers torch.ops.distiq.*, used in the "export" state)
from .calibrate import calibrate
from .fake_quant import fake_quantize, lsq_fake_quantize, lsq_grad_factor
from .observers import OBSERVERS, check_bits

Tensor = torch.Tensor
STATES = ("off", "observe", "quant", "export")


def _grid(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


class _Quantizer(nn.Module):
    """Shared state of weight and activation quantizers: grid, buffers, optional learnable scale."""

    def __init__(self, bits: int, symmetric: bool, channels: int | None = None) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.symmetric = bool(symmetric)
        shape = () if channels is None else (channels,)
        self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32))
        self.learned_scale: nn.Parameter | None = None
        self.state = "off"
        self.enabled = True  # False: identity whatever the state (a layer kept in float)

    @property
    def qmin(self) -> int:
        return _grid(self.bits, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return _grid(self.bits, self.symmetric)[1]

    def effective_scale(self) -> Tensor:
        """The scale in use: the learned one (LSQ) if any, else the calibrated buffer."""
        if self.learned_scale is not None:
            return self.learned_scale.abs().clamp_min(1e-8)
        return self.scale

    def make_learnable(self) -> None:
        """Turn the calibrated scale into a parameter trained with LSQ gradients (for QAT)."""
        if self.learned_scale is None:
            self.learned_scale = nn.Parameter(self.scale.detach().clone())

    def freeze(self) -> None:
        """Copy the learned scale back into the buffer and stop learning it."""
        if self.learned_scale is not None:
            self.scale.copy_(self.effective_scale().detach())
            self.learned_scale = None

    @property
    def export_qparams(self) -> tuple[float, int]:
        """Per-tensor scale and zero point as Python numbers, read before tracing: the exporter bakes
        them into Q/DQ initializers (buffers are symbolic while ``torch.export`` traces, and the
        tensor-qparams overload of ``fake_quantize_per_tensor_affine`` cannot be traced)."""
        cached = self.__dict__.get("_export_qparams")
        if cached is None:  # not set by set_state (a grid outside the model): read it now
            cached = (float(self.effective_scale()), int(self.zero_point))
        return cached

    def set_qparams(self, scale: Tensor, zero_point: Tensor) -> None:
        self.scale = scale.detach().to(torch.float32).clone()
        self.zero_point = zero_point.detach().to(torch.int32).clone()
        if self.learned_scale is not None:
            self.learned_scale.data.copy_(self.scale)

    def _export_range(self) -> tuple[int, int]:
        """ONNX's int8 / uint8 range; grids narrower than 8 bits have no QDQ form."""
        if self.bits != 8:
            raise DistiqError(f"{self.bits}-bit activations cannot be written as ONNX QDQ (8 bits only)")
        return (-128, 127) if self.symmetric else (0, 255)

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        if getattr(self, "max_int", None) not in (None, 2 ** (self.bits - 1) - 1):
            kind += f" [-{self.max_int}, {self.max_int}]"
        learned = ", learned scale" if self.learned_scale is not None else ""
        disabled = "" if self.enabled else ", disabled"
        return f"bits={self.bits}, {kind}, state={self.state}{learned}{disabled}"


class WeightQuant(_Quantizer):
    """Fake-quantizes a weight tensor; its grid comes from the weight, not from data.

    Args:
        bits: Integer width, 2 to 8.
        per_channel: One scale per output channel (axis 0), the usual choice: channels differ in range by
            orders of magnitude after BN folding, and one per-tensor scale would zero the small ones.
        method: Calibrator choosing the range (``"minmax"`` keeps every weight; ``"mse"`` clips, which
            pays off below 8 bits).
        channels: Number of output channels (for per-channel buffers).
        options: Calibrator options.
        max_int: Largest integer of the grid when narrower than the bits allow: 64 for a CPU target
            whose int8 kernels saturate (see :mod:`distiq.quant.target`), so the integer model
            computes exactly what this simulates.
    """

    def __init__(
        self,
        bits: int = 8,
        per_channel: bool = True,
        method: str = "minmax",
        channels: int | None = None,
        options: dict[str, Any] | None = None,
        max_int: int | None = None,
    ) -> None:
        super().__init__(bits, True, channels if per_channel else None)
        OBSERVERS.get(method)
        self.per_channel, self.method, self.options = per_channel, method, dict(options or {})
        natural = 2 ** (self.bits - 1) - 1
        self.max_int = natural if max_int is None else min(int(max_int), natural)

    @property
    def qmin(self) -> int:
        return -self.max_int

    @property
    def qmax(self) -> int:
        return self.max_int

    @torch.no_grad()
    def calibrate_(self, weight: Tensor) -> None:
        qp = calibrate(
            weight.detach(),
            self.method,
            self.bits,
            True,
            0 if self.per_channel else None,
            **self.options,
        )
        # the calibrator's range spread over the narrower grid: amax / max_int instead of amax / 127
        self.set_qparams(qp.scale * (qp.qmax / self.max_int), qp.zero_point)

    def forward(self, w: Tensor) -> Tensor:
        if self.state in ("off", "observe") or not self.enabled:
            return w
        axis = 0 if self.per_channel else None
        if self.learned_scale is not None:
            return lsq_fake_quantize(w, self.learned_scale, self.zero_point, self.qmin, self.qmax, axis)
        return fake_quantize(w, self.scale, self.zero_point, self.qmin, self.qmax, axis)


class ActQuant(_Quantizer):
    """Per-tensor activation quantizer: calibrated (static), recomputed per batch (dynamic) or tied.

    Args:
        bits: Integer width, 2 to 8 (ONNX export needs 8).
        symmetric: Signed grid with zero point 0, or (default) unsigned with a zero point, which gives
            a ReLU output all 256 levels.
        method: Registered calibrator (``"kl"``, ``"minmax"``, ``"percentile"``, ``"mse"``, ``"ema"``).
        options: Calibrator options (e.g. ``{"percentile": 99.99}``).
        dynamic: Compute the range of each batch at run time (ONNX Runtime's ``DynamicQuantizeLinear``:
            asymmetric, the range widened to contain 0); needs no calibration.
    """

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = False,
        method: str = "kl",
        options: dict[str, Any] | None = None,
        dynamic: bool = False,
    ) -> None:
        super().__init__(bits, symmetric)
        OBSERVERS.get(method)
        self.method, self.options, self.dynamic = method, dict(options or {}), dynamic
        self.observer: Any = None
        self._source: list[ActQuant] = []  # a list keeps the source out of this module's children

    @property
    def source(self) -> ActQuant:
        """The quantizer whose grid this one applies (itself unless tied)."""
        return self._source[0] if self._source else self

    def tie(self, source: ActQuant) -> ActQuant:
        """Apply ``source``'s grid (re-quantizing after a value-preserving op like max pooling)."""
        self._source = [source.source]
        return self

    def begin_observe(self) -> None:
        if not self._source and not self.dynamic:
            self.observer = OBSERVERS.get(self.method)(
                bits=self.bits, symmetric=self.symmetric, **self.options
            )
        self.state = "observe"

    def end_observe(self) -> bool:
        """Set the grid from what was observed; ``False`` if this quantizer saw no data."""
        observer, self.observer = self.observer, None
        if observer is None or observer.channels is None:
            return False
        qp = observer.qparams()
        self.set_qparams(qp.scale, qp.zero_point)
        return True

    def runtime_qparams(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Scale and zero point of one batch as ``DynamicQuantizeLinear`` computes them."""
        lo = torch.clamp(x.detach().min(), max=0.0)
        hi = torch.clamp(x.detach().max(), min=0.0)
        scale = torch.clamp((hi - lo) / self.qmax, min=torch.finfo(torch.float32).eps)
        zero_point = torch.clamp(torch.round(-lo / scale), 0, self.qmax)
        return scale, zero_point

    def forward(self, x: Tensor) -> Tensor:
        if self.state == "off" or not self.enabled:
            return x
        if self.state == "observe":
            if self.observer is not None:
                self.observer.observe(x)
            return x
        grid = self.source
        if not grid.enabled:
            return x
        if grid.dynamic:
            scale, zp = grid.runtime_qparams(x)
            return fake_quantize(x, scale, zp, grid.qmin, grid.qmax)
        if self.state == "export":
            lo, hi = grid._export_range()
            scale, zp = grid.export_qparams
            return torch.ops.distiq.qdq(x, scale, zp, lo, hi)
        if grid.learned_scale is not None:  # LSQ's N for activations: the features of one sample
            factor = lsq_grad_factor(x[0].numel() if x.dim() > 1 else x.numel(), grid.qmax)
            scale, zp = grid.learned_scale, grid.zero_point
            return lsq_fake_quantize(x, scale, zp, grid.qmin, grid.qmax, grad_factor=factor)
        return fake_quantize(x, grid.scale, grid.zero_point, grid.qmin, grid.qmax)

    def extra_repr(self) -> str:
        extra = ", dynamic" if self.dynamic else "" if not self._source else ", tied"
        return super().extra_repr() + f", method={self.method}{extra}"


class _QuantLayer:
    """What QuantConv2d and QuantLinear share: the quantizers around the layer and a fused ReLU."""

    weight_quant: WeightQuant
    input_quant: ActQuant | None
    output_quant: ActQuant | None
    relu: bool

    def _setup(self, float_layer: nn.Module, weight_quant: WeightQuant, relu: bool) -> None:
        self.weight = float_layer.weight
        self.bias = float_layer.bias
        self.weight_quant = weight_quant
        self.input_quant = None
        self.output_quant = None
        self.input_grid: list[ActQuant] = []  # the grid on the input, wherever it was applied
        self.relu = relu
        weight_quant.calibrate_(self.weight)

    def _finish(self, y: Tensor) -> Tensor:
        if self.relu:
            y = F.relu(y)
        if self.output_quant is not None:
            y = self.output_quant(y)
        return y


class QuantConv2d(_QuantLayer, nn.Conv2d):
    """``nn.Conv2d`` with weight, input and output fake quantization and an optional fused ReLU."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_quant: WeightQuant, relu: bool = False) -> QuantConv2d:
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
        )
        q._setup(conv, weight_quant, relu)
        return q

    def forward(self, x: Tensor) -> Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        return self._finish(self._conv_forward(x, self.weight_quant(self.weight), self.bias))

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu" if self.relu else "")


class QuantLinear(_QuantLayer, nn.Linear):
    """``nn.Linear`` with weight, input and output fake quantization and an optional fused ReLU."""

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_quant: WeightQuant, relu: bool = False) -> QuantLinear:
        q = cls(linear.in_features, linear.out_features, linear.bias is not None)
        q._setup(linear, weight_quant, relu)
        return q

    def forward(self, x: Tensor) -> Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        return self._finish(F.linear(x, self.weight_quant(self.weight), self.bias))

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu" if self.relu else "")


QUANT_LAYERS = (QuantConv2d, QuantLinear)


class QuantOutput(nn.Module):
    """Runs ``op`` and quantizes its output, so every reader of that tensor sees one grid."""

    def __init__(self, op: nn.Module, quant: ActQuant) -> None:
        super().__init__()
        self.op = op
        self.quant = quant

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.quant(self.op(*args, **kwargs))


def quantizers(model: nn.Module) -> Iterator[tuple[str, _Quantizer]]:
    """Every weight and activation quantizer of ``model`` with its path."""
    for name, module in model.named_modules():
        if isinstance(module, _Quantizer):
            yield name, module


def quant_layers(model: nn.Module) -> dict[str, _QuantLayer]:
    """The quantized Conv2d/Linear layers of ``model`` by path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)}


def set_state(model: nn.Module, state: str, weights: str | None = None) -> None:
    """Put every activation quantizer in ``state`` and every weight quantizer in ``weights`` (default:
    ``"off"`` with ``"off"``, else ``"quant"``; weights are exported by :mod:`distiq.quant.export`)."""
    if state not in STATES:
        raise DistiqError(f"quantizer state must be one of {', '.join(STATES)}, got {state!r}")
    if weights is None:
        weights = "off" if state == "off" else "quant"
    for _, q in quantizers(model):
        q.state = weights if isinstance(q, WeightQuant) else state
        if q.state == "export" and q.scale.dim() == 0:
            q._export_qparams = (float(q.effective_scale()), int(q.zero_point))


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` carries any quantizer (i.e. came from :func:`distiq.quantize`)."""
    return any(True for _ in quantizers(model))
