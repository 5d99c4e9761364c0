"""Feature distillation terms: adapters, resizing rules, values against numpy, training signal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distiq.distill.features import AttentionTerm, HintTerm, MergeTerm


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def set_identity(conv: nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.eye(conv.out_channels, conv.in_channels).view_as(conv.weight))
        conv.bias.zero_()


def block_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Average-pool [N, C, H, W] by non-overlapping k×k blocks."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))


def test_hint_value_with_identity_adapter_and_pooling():
    term = HintTerm((2, 8, 8), (2, 4, 4))
    set_identity(term.adapter)
    s = torch.randn(3, 2, 8, 8, generator=gen(0))
    t = torch.randn(3, 2, 4, 4, generator=gen(1))
    expected = np.mean((block_mean(s.numpy(), 2) - t.numpy()) ** 2)
    assert term(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_hint_shapes_and_adapters():
    up = HintTerm((4, 2, 2), (6, 4, 4))  # smaller student map: bilinear upsampling
    assert up.adapter.weight.shape == (6, 4, 1, 1)
    assert up(torch.randn(2, 4, 2, 2), torch.randn(2, 6, 4, 4)).dim() == 0
    vec = HintTerm((5,), (3,))
    assert isinstance(vec.adapter, nn.Linear)
    with torch.no_grad():
        vec.adapter.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]))
        vec.adapter.bias.fill_(0.5)
    s, t = torch.randn(4, 5, generator=gen(2)), torch.randn(4, 3, generator=gen(3))
    expected = np.mean((s.numpy()[:, :3] + 0.5 - t.numpy()) ** 2)
    assert vec(s, t).item() == pytest.approx(expected, rel=1e-5)
    pooled = HintTerm((4, 3, 3), (7,))  # map -> vector: global average pool, then linear
    assert pooled.adapter.weight.shape == (7, 4)
    assert pooled(torch.randn(2, 4, 3, 3), torch.randn(2, 7)).dim() == 0


def test_hint_rejects_vector_to_map_and_wrong_inputs():
    with pytest.raises(ValueError, match="vector student feature"):
        HintTerm((16,), (8, 4, 4))
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(D,\)"):
        HintTerm((8, 4), (8, 4, 4))
    term = HintTerm((4, 8, 8), (6, 4, 4))
    with pytest.raises(ValueError, match="student feature has shape"):
        term(torch.randn(2, 4, 7, 7), torch.randn(2, 6, 4, 4))


def test_hint_gradient_reaches_adapter_and_adam_lowers_loss():
    torch.manual_seed(0)
    term = HintTerm((4, 8, 8), (6, 4, 4))
    s = torch.randn(8, 4, 8, 8, generator=gen(4))
    mix = torch.randn(6, 4, generator=gen(5))
    # A target the adapter can reach: a channel mix of the 2x2-pooled student, plus an offset.
    t = torch.einsum("oc,nchw->nohw", mix, F.avg_pool2d(s, 2)) + 0.1
    t.requires_grad_(True)
    loss = term(s, t)
    loss.backward()
    assert term.adapter.weight.grad.abs().sum() > 0
    assert t.grad is None  # teacher detached
    opt = torch.optim.Adam(term.parameters(), lr=0.05)
    first = loss.item()
    for _ in range(30):
        opt.zero_grad()
        loss = term(s, t.detach())
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_attention_term_hand_value_and_validation():
    term = AttentionTerm((2, 1, 2), (1, 1, 2))
    assert list(term.parameters()) == []
    s = torch.tensor([[[[3.0, 0.0]], [[1.0, 2.0]]]])
    t = torch.tensor([[[[2.0, 2.0]]]])
    # maps [5, 2]/sqrt(29) and [1, 1]/sqrt(2): squared distance 2 - 14/sqrt(58).
    assert term(s, t).item() == pytest.approx(2 - 14 / math.sqrt(58), rel=1e-5)
    different = AttentionTerm((8, 4, 4), (16, 8, 8))
    assert different(torch.randn(2, 8, 4, 4), torch.randn(2, 16, 8, 8)).dim() == 0
    with pytest.raises(ValueError, match="spatial"):
        AttentionTerm((8,), (8, 4, 4))


def test_merge_value_with_identity_projection():
    # One teacher layer at twice the student's resolution: block-average, standardise per channel.
    term = MergeTerm((3, 4, 4), [(3, 8, 8)], eps=1e-5)
    set_identity(term.adapter)
    s = torch.randn(5, 3, 4, 4, generator=gen(6))
    t = torch.randn(5, 3, 8, 8, generator=gen(7)) * 10 + 3
    pooled = block_mean(t.numpy().astype(np.float64), 2)
    mean = pooled.mean(axis=(0, 2, 3), keepdims=True)
    var = pooled.var(axis=(0, 2, 3), keepdims=True)
    target = (pooled - mean) / np.sqrt(var + 1e-5)
    expected = np.mean((s.numpy() - target) ** 2)
    assert term(s, [t]).item() == pytest.approx(expected, rel=1e-4)


def test_merge_mixed_teachers_shapes_and_equal_layer_weight():
    shapes = [(8, 16, 16), (16, 4, 4), (32,)]  # larger, smaller, and a vector teacher
    term = MergeTerm((4, 8, 8), shapes)
    assert term.adapter.weight.shape == (8 + 16 + 32, 4, 1, 1)
    teachers = [torch.randn(6, *shape, generator=gen(i)) * (i + 1) * 5 for i, shape in enumerate(shapes)]
    fused = term.fused_target(teachers)
    assert fused.shape == (6, 56, 8, 8)
    assert not fused.requires_grad
    # Standardised: every channel has mean 0 and variance var/(var+eps) ≈ 1 over batch and positions.
    np.testing.assert_allclose(fused.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(fused.var(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-3)
    # The vector teacher is broadcast: constant over positions.
    assert torch.allclose(fused[:, 24:], fused[:, 24:, :1, :1].expand(-1, -1, 8, 8))
    # A zero projection predicts 0, so each layer's MSE is its target's mean square ≈ 1.
    with torch.no_grad():
        term.adapter.weight.zero_()
        term.adapter.bias.zero_()
    s = torch.randn(6, 4, 8, 8, requires_grad=True)
    loss = term(s, teachers)
    assert loss.item() == pytest.approx(1.0, abs=1e-3)
    loss.backward()
    assert term.adapter.weight.grad.abs().sum() > 0


def test_merge_vector_student_and_errors():
    term = MergeTerm((10,), [(8, 4, 4), (6,)])
    assert term.fused_target([torch.randn(5, 8, 4, 4), torch.randn(5, 6)]).shape == (5, 14, 1, 1)
    assert term(torch.randn(5, 10), [torch.randn(5, 8, 4, 4), torch.randn(5, 6)]).dim() == 0
    with pytest.raises(ValueError, match="2 teacher layers, got 1"):
        term(torch.randn(5, 10), [torch.randn(5, 8, 4, 4)])
    with pytest.raises(ValueError, match="at least one"):
        MergeTerm((4, 8, 8), [])
    with pytest.raises(ValueError, match=r"teacher\[1\] feature"):
        term(torch.randn(5, 10), [torch.randn(5, 8, 4, 4), torch.randn(5, 7)])
