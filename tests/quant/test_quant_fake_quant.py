"""Fake quantization against PyTorch's ``fake_quantize_per_*_affine`` (forward and STE gradient), and
LSQ's step-size gradient against the formula of Esser et al. (2020), written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from distiq.quant.fake_quant import fake_quantize, lsq_fake_quantize, lsq_grad_factor


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is faster, and on a shared machine far steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _grid(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("symmetric", [True, False])
def test_per_tensor_matches_pytorch_forward_and_gradient(bits, symmetric):
    g = torch.Generator().manual_seed(bits)
    x = (torch.randn(4000, generator=g) * 2).requires_grad_()
    qmin, qmax = _grid(bits, symmetric)
    scale, zp = (0.037, 0) if symmetric else (0.041, 3)
    ours = fake_quantize(x, scale, zp, qmin, qmax)
    ours.backward(torch.arange(4000.0))
    x_ref = x.detach().clone().requires_grad_()
    ref = torch.fake_quantize_per_tensor_affine(x_ref, scale, zp, qmin, qmax)
    ref.backward(torch.arange(4000.0))
    assert torch.allclose(ours, ref, rtol=0, atol=1e-7)
    assert torch.equal(x.grad, x_ref.grad)
    assert 0 < int((x.grad == 0).sum()) < 4000  # some values clamped, some not


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("symmetric", [True, False])
def test_per_channel_matches_pytorch(axis, symmetric):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(6, 5, 7, generator=g) * 3).requires_grad_()
    channels = x.shape[axis]
    scale = torch.rand(channels, generator=g) * 0.05 + 0.01
    zp = (
        torch.zeros(channels, dtype=torch.int32)
        if symmetric
        else torch.randint(0, 16, (channels,), generator=g)
    )
    qmin, qmax = _grid(8 if symmetric else 4, symmetric)
    ours = fake_quantize(x, scale, zp, qmin, qmax, axis=axis)
    ours.sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    ref = torch.fake_quantize_per_channel_affine(x_ref, scale, zp.to(torch.int32), axis % 3, qmin, qmax)
    ref.sum().backward()
    assert torch.allclose(ours, ref, rtol=0, atol=1e-6)
    assert torch.equal(x.grad, x_ref.grad)


def test_straight_through_gradient_by_hand():
    # scale 0.5, grid [-2, 2] (3-bit symmetric would be [-3, 3]; use explicit limits)
    x = torch.tensor([-1.6, -1.0, -0.2, 0.3, 0.9, 1.2], requires_grad=True)
    y = fake_quantize(x, 0.5, 0, -2, 2)
    assert torch.equal(y.detach(), torch.tensor([-1.0, -1.0, -0.0, 0.5, 1.0, 1.0]))
    y.sum().backward()
    # round(x / 0.5) = [-3, -2, 0, 1, 2, 2]: only -3 lies outside [-2, 2]
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0]))


def test_lsq_forward_equals_fixed_fake_quant_and_scale_gradient_is_the_papers():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(300, generator=g) * 2).requires_grad_()
    s = torch.tensor(0.3, requires_grad=True)
    qmin, qmax = -7, 7
    y = lsq_fake_quantize(x, s, 0, qmin, qmax)
    assert torch.allclose(y, fake_quantize(x, 0.3, 0, qmin, qmax), atol=1e-6)
    upstream = torch.randn(300, generator=g)
    y.backward(upstream)
    v = x.detach() / 0.3
    per_element = torch.where(v <= qmin, float(qmin), torch.where(v >= qmax, float(qmax), v.round() - v))
    factor = 1 / math.sqrt(300 * qmax)
    assert factor == pytest.approx(lsq_grad_factor(300, qmax))
    expected = float((upstream * per_element).sum()) * factor
    assert float(s.grad) == pytest.approx(expected, rel=1e-5)
    inside = ((v > qmin) & (v < qmax)).float()
    assert torch.allclose(x.grad, upstream * inside)


def test_lsq_per_channel_with_zero_point():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(3, 10, generator=g).requires_grad_()
    s = torch.tensor([0.1, 0.2, 0.05], requires_grad=True)
    zp = torch.tensor([2, 0, 5])
    y = lsq_fake_quantize(w, s, zp, 0, 15, axis=0, grad_factor=1.0)
    ref = torch.fake_quantize_per_channel_affine(w.detach(), s.detach(), zp.to(torch.int32), 0, 0, 15)
    assert torch.allclose(y, ref, atol=1e-6)
    y.sum().backward()
    v = w.detach() / s.detach()[:, None]
    lo, hi = (0 - zp)[:, None].float(), (15 - zp)[:, None].float()
    per = torch.where(v <= lo, lo, torch.where(v >= hi, hi, v.round() - v))
    assert torch.allclose(s.grad, per.sum(1), atol=1e-5)
