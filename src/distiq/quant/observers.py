"""Calibrators (observers): stream batches through ``observe(x)``, read the range from ``qparams()``.

Mechanism apart from policy: :class:`Calibrator` handles inputs (per-tensor or per-channel rows,
validation, streaming) and the one scale/zero-point formula (:func:`qparams_from_range`); each
registered subclass only decides the range. A user adds a calibrator by subclassing
:class:`Calibrator` (implement ``_observe(rows)`` and ``_range()``, or ``observe``/``qparams``
outright) and decorating it with ``@OBSERVERS.register("name")``; :func:`distiq.quant.calibrate.calibrate`
and recipes then find it by name.

Registered names:

* ``"minmax"``: running min and max; scale and zero point equal PyTorch's ``MinMaxObserver`` /
  ``PerChannelMinMaxObserver`` exactly (same float32 arithmetic, same ``eps`` guard).
* ``"ema"``: moving-average min-max, PyTorch's ``MovingAverageMinMaxObserver`` semantics (the first
  batch sets the range, then ``lo += momentum * (batch_min - lo)``).
* ``"percentile"``, ``"kl"``, ``"mse"``: histogram based (:mod:`distiq.quant.histogram`); per-channel
  they keep one histogram per channel, which is meant for weights rather than wide activations.

Entropy (``"kl"``) versus ONNX Runtime's ``CalibrationMethod.Entropy``: distiq follows TensorRT: a
histogram of ``|x|`` (2048 bins, zeros left out), candidates from bin 128 up, ``2**(bits-1)`` levels per
sign (``2**bits`` for non-negative data calibrated asymmetrically, as in NVIDIA's pytorch-quantization),
``Q`` spread only over nonzero bins. ORT histograms ``x`` over ``[-amax, amax]`` with ``num_bins=128``
and ``num_quantized_bins=128`` by default, so its search has a single candidate, the full min-max range;
with more bins its ``num_quantized_bins`` counts levels over *both* signs (128 acts like 7 bits), it
spreads ``Q`` over empty bins too, truncates ``Q`` to integers and smooths both distributions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distiq.errors import DistiqError
from distiq.quant.histogram import StreamingHistogram, entropy_threshold, mse_range, quantile
from distiq.registry import Registry

Tensor = torch.Tensor

#: Lower bound on a scale, PyTorch's choice (``torch.finfo(torch.float32).eps``): all-zero data get a
#: finite, nonzero scale and quantize to the zero point instead of dividing by zero.
SCALE_EPS = torch.finfo(torch.float32).eps

OBSERVERS: Registry = Registry("calibrator")


@dataclass(frozen=True, eq=False)
class QParams:
    """A calibrated quantization grid.

    Attributes:
        scale: float32, shape ``[]`` per-tensor or ``[C]`` per-channel.
        zero_point: int32, same shape; 0 when symmetric.
        lo, hi: float32, the range the grid represents: ``-amax, amax`` when symmetric, otherwise the
            chosen range widened to contain 0.
        bits: Integer width, 2 to 8.
        symmetric: Signed integers ``[-(2**(bits-1)-1), 2**(bits-1)-1]`` with zero point 0, or
            unsigned ``[0, 2**bits-1]`` with a zero point.
        axis: Channel axis of the tensor calibrated (non-negative), or ``None`` for per-tensor.
    """

    scale: Tensor
    zero_point: Tensor
    lo: Tensor
    hi: Tensor
    bits: int
    symmetric: bool
    axis: int | None = None

    @property
    def qmin(self) -> int:
        """Smallest integer of the grid."""
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        """Largest integer of the grid."""
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1


def check_bits(bits: object) -> int:
    """``bits`` if it is an int from 2 to 8, else :class:`~distiq.errors.DistiqError`."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise DistiqError(f"bits must be an integer from 2 to 8, got {bits!r}")
    return bits


def qparams_from_range(
    lo: Tensor | float, hi: Tensor | float, bits: int, symmetric: bool, axis: int | None = None
) -> QParams:
    """Scale and zero point of a range, the standard affine formula in float32.

    Symmetric: ``amax = max(-min(lo, 0), max(hi, 0))``, ``scale = amax / (2**(bits-1) - 1)``, zero
    point 0. Asymmetric: ``lo' = min(lo, 0)``, ``hi' = max(hi, 0)``, ``scale = (hi' - lo') /
    (2**bits - 1)``, ``zero_point = clamp(round(-lo' / scale), 0, 2**bits - 1)`` (round half to even).
    Widening to contain 0 makes 0 exactly representable (zero padding, ReLU zeros). The scale is at
    least :data:`SCALE_EPS`, as in PyTorch's observers, whose results this reproduces bit for bit.
    """
    check_bits(bits)
    lo = torch.as_tensor(lo, dtype=torch.float32)
    hi = torch.as_tensor(hi, dtype=torch.float32)
    lo_neg = torch.minimum(lo, torch.zeros_like(lo))
    hi_pos = torch.maximum(hi, torch.zeros_like(hi))
    if symmetric:
        amax = torch.maximum(-lo_neg, hi_pos)
        scale = torch.clamp(amax / float(2 ** (bits - 1) - 1), min=SCALE_EPS)
        zero_point = torch.zeros(amax.shape, dtype=torch.int32)
        return QParams(scale, zero_point, -amax, amax, bits, True, axis)
    qmax = 2**bits - 1
    scale = torch.clamp((hi_pos - lo_neg) / float(qmax), min=SCALE_EPS)
    zero_point = torch.clamp(torch.round(-lo_neg / scale), 0, qmax).to(torch.int32)
    return QParams(scale, zero_point, lo_neg, hi_pos, bits, False, axis)


def _along(t: Tensor, x: Tensor, axis: int | None) -> Tensor:
    if axis is None:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def quantize_int(x: Tensor, qp: QParams) -> Tensor:
    """``clamp(round(x / scale) + zero_point, qmin, qmax)`` as int32 (for error analysis and tests)."""
    scale, zp = _along(qp.scale, x, qp.axis), _along(qp.zero_point, x, qp.axis)
    return torch.clamp(torch.round(x / scale) + zp, qp.qmin, qp.qmax).to(torch.int32)


def dequantize(q: Tensor, qp: QParams) -> Tensor:
    """``(q - zero_point) * scale`` as float32, the inverse of :func:`quantize_int` on the grid."""
    scale, zp = _along(qp.scale, q, qp.axis), _along(qp.zero_point, q, qp.axis)
    return (q.to(torch.float32) - zp) * scale


class Calibrator:
    """Base calibrator: validates options and inputs, turns each batch into per-channel rows.

    Args:
        bits: Integer width, 2 to 8.
        symmetric: Signed grid with zero point 0, or unsigned with a zero point.
        axis: ``None`` for one range per tensor, or the channel axis for one range per channel.
    """

    def __init__(self, bits: int = 8, symmetric: bool = True, axis: int | None = None) -> None:
        self.bits = check_bits(bits)
        if not isinstance(symmetric, bool):
            raise DistiqError(f"symmetric must be True or False, got {symmetric!r}")
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            raise DistiqError(f"axis must be None or an integer, got {axis!r}")
        self.symmetric, self.axis = symmetric, axis
        self.channel_axis: int | None = None  # axis made non-negative on the first batch
        self.channels: int | None = None

    def observe(self, x: Tensor) -> None:
        """Update the statistics with one batch (any shape; the channel axis must not change)."""
        x = torch.as_tensor(x).detach()
        if not x.is_floating_point():
            x = x.to(torch.float32)
        if x.numel() == 0:
            return
        if not bool(torch.isfinite(x).all()):
            raise DistiqError("calibration data contain NaN or infinite values")
        if self.axis is None:
            rows = x.reshape(1, -1)
        else:
            if not -x.dim() <= self.axis < x.dim():
                raise DistiqError(f"axis {self.axis} is out of range for a {x.dim()}-d tensor")
            ax = self.axis % x.dim()
            if self.channel_axis not in (None, ax):
                raise DistiqError(f"axis {self.axis} now means {ax}, was {self.channel_axis}")
            self.channel_axis = ax
            rows = x.movedim(ax, 0).reshape(x.shape[ax], -1)
        if self.channels is not None and rows.shape[0] != self.channels:
            raise DistiqError(f"expected {self.channels} channels, got {rows.shape[0]}")
        self.channels = rows.shape[0]
        self._observe(rows.to(torch.float32))

    def qparams(self) -> QParams:
        """The grid for everything observed so far (observing may continue afterwards)."""
        if self.channels is None:
            raise DistiqError("no data observed: call observe() with a non-empty tensor first")
        lo, hi = self._range()
        if self.axis is None:
            lo, hi = lo[0], hi[0]
        return qparams_from_range(lo, hi, self.bits, self.symmetric, self.channel_axis)

    def _observe(self, rows: Tensor) -> None:
        """Update with a ``[C, N]`` float32 batch (``C = 1`` per-tensor)."""
        raise NotImplementedError

    def _range(self) -> tuple[Tensor, Tensor]:
        """Per-channel ``(lo, hi)``, float32 tensors of shape ``[C]``."""
        raise NotImplementedError


@OBSERVERS.register("minmax")
class MinMaxCalibrator(Calibrator):
    """Running minimum and maximum: no clipping, so outliers set the step size."""

    def __init__(self, bits: int = 8, symmetric: bool = True, axis: int | None = None) -> None:
        super().__init__(bits, symmetric, axis)
        self.min_val: Tensor | None = None
        self.max_val: Tensor | None = None

    def _observe(self, rows: Tensor) -> None:
        lo, hi = torch.aminmax(rows, dim=1)
        if self.min_val is None or self.max_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = torch.minimum(self.min_val, lo)
            self.max_val = torch.maximum(self.max_val, hi)

    def _range(self) -> tuple[Tensor, Tensor]:
        assert self.min_val is not None and self.max_val is not None
        return self.min_val, self.max_val


@OBSERVERS.register("ema")
class MovingAverageMinMaxCalibrator(MinMaxCalibrator):
    """Exponential moving average of each batch's min and max (PyTorch's moving-average observer).

    Averaging damps a rare extreme batch, which min-max would keep forever; QAT uses it to follow
    activations that drift while the weights train.

    Args:
        momentum: Weight of the new batch, ``0 < momentum <= 1`` (1 keeps only the last batch).
    """

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = True,
        axis: int | None = None,
        momentum: float = 0.01,
    ) -> None:
        super().__init__(bits, symmetric, axis)
        if not 0 < momentum <= 1:
            raise DistiqError(f"momentum must be in (0, 1], got {momentum!r}")
        self.momentum = float(momentum)

    def _observe(self, rows: Tensor) -> None:
        lo, hi = torch.aminmax(rows, dim=1)
        if self.min_val is None or self.max_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = self.min_val + self.momentum * (lo - self.min_val)
            self.max_val = self.max_val + self.momentum * (hi - self.max_val)


class HistogramCalibrator(MinMaxCalibrator):
    """Base of the histogram methods: one :class:`StreamingHistogram` per channel, plus exact min/max.

    The histogram is of ``|x|`` when symmetric (the sign does not matter to a symmetric grid) and of
    ``x`` otherwise.

    Args:
        bins: Search bins (2048, as TensorRT); more bins, finer thresholds, slower searches. The
            histogram holds 32 times as many (re-binned when read), so that batches streamed in any
            order give the range one pass over them gives.
    """

    absolute: bool | None = None  # None: |x| when symmetric

    def __init__(
        self, bits: int = 8, symmetric: bool = True, axis: int | None = None, bins: int = 2048
    ) -> None:
        super().__init__(bits, symmetric, axis)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 8:
            raise DistiqError(f"bins must be an integer >= 8, got {bins!r}")
        self.bins = bins
        self.histograms: list[StreamingHistogram] = []

    def _observe(self, rows: Tensor) -> None:
        super()._observe(rows)
        if not self.histograms:
            self.histograms = [StreamingHistogram(self.bins) for _ in range(rows.shape[0])]
        absolute = self.symmetric if self.absolute is None else self.absolute
        for hist, row in zip(self.histograms, rows, strict=True):
            hist.add(row.abs() if absolute else row)

    def _range(self) -> tuple[Tensor, Tensor]:
        lo, hi = super()._range()
        pairs = [
            self._channel_range(h, float(a), float(b))
            for h, a, b in zip(self.histograms, lo, hi, strict=True)
        ]
        return (
            torch.tensor([p[0] for p in pairs], dtype=torch.float32),
            torch.tensor([p[1] for p in pairs], dtype=torch.float32),
        )

    def _channel_range(self, hist: StreamingHistogram, lo: float, hi: float) -> tuple[float, float]:
        raise NotImplementedError


@OBSERVERS.register("percentile")
class PercentileCalibrator(HistogramCalibrator):
    """Clip at a percentile: symmetric at the ``percentile`` of ``|x|``; asymmetric, cutting
    ``(100 - percentile) / 2`` percent off each tail of ``x`` (as ONNX Runtime does).

    Args:
        percentile: In ``(0, 100]``; 99.99 clips one value in ten thousand.
    """

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = True,
        axis: int | None = None,
        bins: int = 2048,
        percentile: float = 99.99,
    ) -> None:
        super().__init__(bits, symmetric, axis, bins)
        if not 0 < percentile <= 100:
            raise DistiqError(f"percentile must be in (0, 100], got {percentile!r}")
        self.percentile = float(percentile)

    def _channel_range(self, hist: StreamingHistogram, lo: float, hi: float) -> tuple[float, float]:
        if self.symmetric:
            t = quantile(hist, self.percentile / 100)
            return -t, t
        tail = (100 - self.percentile) / 200
        return quantile(hist, tail), quantile(hist, 1 - tail)


@OBSERVERS.register("kl")
class EntropyCalibrator(HistogramCalibrator):
    """TensorRT's entropy calibration: the ``|x|`` threshold minimising ``KL(P || Q)``.

    Levels: ``2**(bits-1)`` (the magnitudes of a signed grid) when symmetric or when the data take
    both signs; ``2**bits`` when asymmetric and the data are non-negative (ReLU outputs: the whole
    unsigned grid covers ``[0, t]``). Asymmetric signed data get ``[max(-t, min), min(t, max)]``, a
    symmetric search clipped to the data, as ONNX Runtime does; prefer ``"mse"`` for skewed data.

    Args:
        start_bin: Smallest candidate threshold, in bins (128, as TensorRT).
        stride: Candidate step, in bins (1 tries every bin; larger is faster per channel).
    """

    absolute = True

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = True,
        axis: int | None = None,
        bins: int = 2048,
        start_bin: int = 128,
        stride: int = 1,
    ) -> None:
        super().__init__(bits, symmetric, axis, bins)
        for name, value in (("start_bin", start_bin), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DistiqError(f"{name} must be an integer >= 1, got {value!r}")
        self.start_bin, self.stride = start_bin, stride

    def _channel_range(self, hist: StreamingHistogram, lo: float, hi: float) -> tuple[float, float]:
        unsigned = not self.symmetric and lo >= 0
        levels = 2**self.bits if unsigned else 2 ** (self.bits - 1)
        view, t = hist.resampled(), 0.0
        if view.counts is not None:
            t = entropy_threshold(view.counts, view.edges, levels, self.start_bin, self.stride)
        t = min(t, hist.max)
        if self.symmetric:
            return -t, t
        return max(-t, lo), min(t, hi)


@OBSERVERS.register("mse")
class MSECalibrator(HistogramCalibrator):
    """The range minimising the expected quantize-dequantize MSE over the histogram.

    See :func:`distiq.quant.histogram.mse_range`: exact error of piecewise-uniform bins on the real
    integer grid, candidates at bin edges, coarse-then-fine (coordinate descent when asymmetric).
    """

    def _channel_range(self, hist: StreamingHistogram, lo: float, hi: float) -> tuple[float, float]:
        return mse_range(hist, self.bits, self.symmetric)
