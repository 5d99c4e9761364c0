"""Calibrators: the scale/zero-point formula against PyTorch's observers, streaming, validation.

PyTorch's ``torch.ao.quantization`` observers are the oracle for min-max and moving-average min-max:
configured with distiq's integer ranges (symmetric: qint8 with ``[-(2**(b-1)-1), 2**(b-1)-1]``;
asymmetric: quint8 with ``[0, 2**b-1]``) they implement the same formula, ``eps`` guard included, so
scale and zero point must match bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from torch.ao.quantization import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

from distiq.quant.calibrate import calibrate
from distiq.quant.observers import (
    OBSERVERS,
    SCALE_EPS,
    Calibrator,
    QParams,
    dequantize,
    qparams_from_range,
    quantize_int,
)


def _torch_observer(cls, bits: int, symmetric: bool, axis: int | None, **kw):
    if symmetric:
        qm = 2 ** (bits - 1) - 1
        dtype, qmin, qmax = torch.qint8, -qm, qm
        scheme = torch.per_tensor_symmetric if axis is None else torch.per_channel_symmetric
    else:
        dtype, qmin, qmax = torch.quint8, 0, 2**bits - 1
        scheme = torch.per_tensor_affine if axis is None else torch.per_channel_affine
    if axis is not None:
        kw["ch_axis"] = axis
    return cls(dtype=dtype, qscheme=scheme, quant_min=qmin, quant_max=qmax, **kw)


def _batches(shift: float = 0.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(6, 5, 7, generator=g) * (1 + i) + shift for i in range(3)]


def _assert_same(qp: QParams, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
    assert torch.equal(qp.scale.reshape(-1), scale.reshape(-1).to(torch.float32))
    assert torch.equal(qp.zero_point.reshape(-1).long(), zero_point.reshape(-1).long())


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("shift", [0.0, 3.0, -10.0])  # mixed signs, mostly positive, all negative
def test_minmax_equals_pytorch_observer(bits, symmetric, axis, shift):
    cls = MinMaxObserver if axis is None else PerChannelMinMaxObserver
    oracle = _torch_observer(cls, bits, symmetric, axis)
    batches = _batches(shift)
    for b in batches:
        oracle(b)
    qp = calibrate(batches, "minmax", bits=bits, symmetric=symmetric, axis=axis)
    _assert_same(qp, *oracle.calculate_qparams())
    assert qp.scale.shape == (() if axis is None else (5,))
    # streaming three batches equals one pass over their concatenation
    whole = calibrate(torch.cat(batches), "minmax", bits=bits, symmetric=symmetric, axis=axis)
    assert torch.equal(qp.scale, whole.scale) and torch.equal(qp.zero_point, whole.zero_point)
    assert torch.equal(qp.lo, whole.lo) and torch.equal(qp.hi, whole.hi)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("axis", [None, 0])
def test_tiny_range_uses_pytorch_eps(symmetric, axis):
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(1)) * 1e-9
    cls = MinMaxObserver if axis is None else PerChannelMinMaxObserver
    oracle = _torch_observer(cls, 8, symmetric, axis)
    oracle(x)
    qp = calibrate(x, "minmax", symmetric=symmetric, axis=axis)
    _assert_same(qp, *oracle.calculate_qparams())
    assert torch.all(qp.scale == SCALE_EPS)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("axis", [None, 2])
@pytest.mark.parametrize("momentum", [0.01, 0.3])
def test_ema_equals_pytorch_moving_average_observer(symmetric, axis, momentum):
    cls = MovingAverageMinMaxObserver if axis is None else MovingAveragePerChannelMinMaxObserver
    oracle = _torch_observer(cls, 8, symmetric, axis, averaging_constant=momentum)
    batches = _batches(0.5) + _batches(-0.5)
    for b in batches:
        oracle(b)
    qp = calibrate(batches, "ema", symmetric=symmetric, axis=axis, momentum=momentum)
    _assert_same(qp, *oracle.calculate_qparams())
    if axis is None:  # the averaged range itself, not only the grid
        assert torch.equal(
            qp.hi,
            torch.maximum(oracle.max_val, -oracle.min_val)
            if symmetric
            else torch.maximum(oracle.max_val, torch.tensor(0.0)),
        )


def test_formula_hand_worked():
    qp = qparams_from_range(-1.0, 3.0, bits=8, symmetric=False)
    assert qp.scale.item() == pytest.approx(4 / 255)
    assert qp.zero_point.item() == 64  # round(255 / 4 = 63.75)
    assert (qp.qmin, qp.qmax) == (0, 255)
    qp = qparams_from_range(-1.0, 3.0, bits=8, symmetric=True)
    assert qp.scale.item() == pytest.approx(3 / 127) and qp.zero_point.item() == 0
    assert (qp.lo.item(), qp.hi.item(), qp.qmin, qp.qmax) == (-3.0, 3.0, -127, 127)
    qp = qparams_from_range(0.5, 2.0, bits=4, symmetric=False)  # range widened to contain 0
    assert (qp.lo.item(), qp.scale.item(), qp.zero_point.item()) == (0.0, pytest.approx(2 / 15), 0)
    assert (qp.qmin, qp.qmax) == (0, 15)
    qp = qparams_from_range(-2.0, -0.5, bits=2, symmetric=True)
    assert (qp.scale.item(), qp.qmin, qp.qmax) == (2.0, -1, 1)


@pytest.mark.parametrize("method", OBSERVERS.names())
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("axis", [None, 0])
@pytest.mark.parametrize("bits", [8, 3])
def test_every_calibrator_gives_a_usable_grid(method, symmetric, axis, bits):
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(4, 300, generator=g) + 0.5 for _ in range(2)]
    qp = calibrate(batches, method, bits=bits, symmetric=symmetric, axis=axis)
    shape = () if axis is None else (4,)
    assert qp.scale.shape == qp.zero_point.shape == qp.lo.shape == qp.hi.shape == shape
    assert qp.scale.dtype == torch.float32 and qp.zero_point.dtype == torch.int32
    assert torch.all(qp.scale > 0) and torch.all(torch.isfinite(qp.scale))
    assert torch.all(qp.lo <= 0) and torch.all(qp.hi >= 0)
    assert torch.all((qp.zero_point >= qp.qmin) & (qp.zero_point <= qp.qmax))
    x = torch.cat(batches, dim=1)
    q = quantize_int(x, qp)
    assert q.dtype == torch.int32 and q.min() >= qp.qmin and q.max() <= qp.qmax
    # inside the range, the round trip errs by at most half a step
    lo = qp.lo if axis is None else qp.lo[:, None]
    hi = qp.hi if axis is None else qp.hi[:, None]
    step = qp.scale if axis is None else qp.scale[:, None]
    inside = (x >= lo) & (x <= hi)
    err = (dequantize(q, qp) - x).abs()
    assert torch.all((err <= step / 2 + 1e-6) | ~inside)


@pytest.mark.parametrize("method", OBSERVERS.names())
@pytest.mark.parametrize("symmetric", [True, False])
def test_all_zero_input_gives_finite_scale(method, symmetric):
    qp = calibrate([torch.zeros(10, 3), torch.zeros(5)], method, symmetric=symmetric)
    assert qp.scale.item() == SCALE_EPS and qp.zero_point.item() == 0
    assert torch.equal(quantize_int(torch.zeros(3), qp), torch.zeros(3, dtype=torch.int32))


def test_zeros_then_data_starts_the_histogram_late():
    x = torch.linspace(-1, 2, 301)
    late = calibrate([torch.zeros(50), x], "percentile", percentile=100.0, symmetric=False)
    assert (late.lo.item(), late.hi.item()) == (-1.0, 2.0)


@pytest.mark.parametrize("bits", [1, 9, 0, 8.0, True, "8"])
def test_bits_are_validated(bits):
    with pytest.raises(ValueError, match="bits"):
        calibrate(torch.randn(10), bits=bits)


def test_input_errors():
    with pytest.raises(ValueError, match="no calibration samples"):
        calibrate([])
    with pytest.raises(ValueError, match="no calibration samples"):
        calibrate(iter(()), "kl")
    with pytest.raises(ValueError, match="known: .*ema.*kl.*minmax.*mse.*percentile"):
        calibrate(torch.randn(10), "entropy")
    with pytest.raises(ValueError, match="no option bin.*bins, percentile"):
        calibrate(torch.randn(10), "percentile", bin=10)
    with pytest.raises(ValueError, match="no option momentum"):
        calibrate(torch.randn(10), "minmax", momentum=0.1)
    with pytest.raises(ValueError, match="tensors, got tuple"):
        calibrate([(torch.randn(3), 0)])
    with pytest.raises(ValueError, match="NaN"):
        calibrate(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="channels"):
        calibrate([torch.randn(3, 4), torch.randn(5, 4)], axis=0)
    with pytest.raises(ValueError, match="out of range"):
        calibrate(torch.randn(3, 4), axis=2)
    for method, option in [
        ("ema", {"momentum": 0.0}),
        ("percentile", {"percentile": 101}),
        ("kl", {"bins": 4}),
        ("kl", {"stride": 0}),
        ("mse", {"bins": 2.5}),
    ]:
        with pytest.raises(ValueError):
            calibrate(torch.randn(10), method, **option)
    with pytest.raises(ValueError, match="no data observed"):
        OBSERVERS.get("minmax")().qparams()
    with pytest.raises(ValueError, match="symmetric"):
        calibrate(torch.randn(10), symmetric="yes")


def test_numpy_and_empty_batches_are_accepted():
    x = torch.randn(100, generator=torch.Generator().manual_seed(3))
    a = calibrate([x[:0], x.numpy(), torch.empty(0, 4)], "minmax")
    b = calibrate(x, "minmax")
    assert torch.equal(a.scale, b.scale)


def test_negative_axis_is_normalised():
    w = torch.randn(8, 3, 3, generator=torch.Generator().manual_seed(4))
    qp = calibrate(w, "minmax", axis=-1)
    assert qp.axis == 2 and qp.scale.shape == (3,)
    assert torch.equal(qp.hi, w.abs().amax(dim=(0, 1)))


def test_user_registered_calibrator_is_found_by_name():
    class FixedRange(Calibrator):
        def __init__(self, bits=8, symmetric=True, axis=None, amax: float = 2.0):
            super().__init__(bits, symmetric, axis)
            self.amax = amax

        def _observe(self, rows):
            pass

        def _range(self):
            c = self.channels or 1
            return torch.full((c,), -self.amax), torch.full((c,), self.amax)

    OBSERVERS.register("test-fixed")(FixedRange)
    try:
        qp = calibrate(torch.randn(5), "test-fixed", amax=1.27)
        assert qp.scale.item() == pytest.approx(0.01)
    finally:
        OBSERVERS._items.pop("test-fixed")
