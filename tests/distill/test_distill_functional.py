"""Distillation math checked against hand-worked values, numpy written from the papers, and peers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distiq.distill import functional as Fd


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_kd_per_sample(s: np.ndarray, t: np.ndarray, temp: float) -> np.ndarray:
    """T² · Σ_c p_t,c · log(p_t,c / p_s,c), one explicit loop per sample and class."""
    ps, pt = np_softmax(s / temp), np_softmax(t / temp)
    out = np.zeros(len(s))
    for i in range(len(s)):
        for c in range(s.shape[1]):
            out[i] += pt[i, c] * math.log(pt[i, c] / ps[i, c])
    return temp**2 * out


def np_dkd_parts(s: np.ndarray, t: np.ndarray, y: np.ndarray, temp: float):
    """TCKD and NCKD per sample from Zhao et al. 2022, eqs. 1-2, with the T² factor."""
    ps, pt = np_softmax(s / temp), np_softmax(t / temp)
    tckd, nckd = np.zeros(len(s)), np.zeros(len(s))
    for i in range(len(s)):
        bs = np.array([ps[i, y[i]], 1 - ps[i, y[i]]])  # binary (target, non-target)
        bt = np.array([pt[i, y[i]], 1 - pt[i, y[i]]])
        tckd[i] = np.sum(bt * np.log(bt / bs))
        others = [c for c in range(s.shape[1]) if c != y[i]]
        qs = ps[i, others] / ps[i, others].sum()  # renormalised non-target distribution
        qt = pt[i, others] / pt[i, others].sum()
        nckd[i] = np.sum(qt * np.log(qt / qs))
    return temp**2 * tckd, temp**2 * nckd


def random_logits(n: int = 6, k: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    t = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, k, (n,), generator=g)
    return s, t, y


def test_kd_hand_worked_one_sample():
    # T = 2, teacher logits [2 ln 3, 0] -> softmax([ln 3, 0]) = [3/4, 1/4]; student [0, 0] -> [1/2, 1/2].
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 - ln 2;  T² · KL = 3 ln 3 - 4 ln 2 ≈ 0.523248.
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[2 * math.log(3), 0.0]], dtype=torch.float64)
    assert Fd.kd(s, t, temperature=2.0).item() == pytest.approx(3 * math.log(3) - 4 * math.log(2))


def test_kd_2x3_matches_numpy_formula_including_t_squared():
    s = np.array([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]])
    t = np.array([[2.0, 0.0, 1.0], [0.5, 0.5, 2.0]])
    for temp in (1.0, 2.0, 4.0):
        expected = np_kd_per_sample(s, t, temp).mean()
        got = Fd.kd(torch.tensor(s), torch.tensor(t), temperature=temp).item()
        assert got == pytest.approx(expected, rel=1e-10)
    # The T² factor: at T=4 the value is 16 × the un-scaled KL.
    kl4 = np_kd_per_sample(s, t, 4.0).mean() / 16
    assert Fd.kd(torch.tensor(s), torch.tensor(t), 4.0).item() == pytest.approx(16 * kl4)


def test_kd_zero_for_equal_or_shifted_logits():
    s, _, _ = random_logits()
    assert Fd.kd(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert Fd.kd(s, s + 7.0).item() == pytest.approx(0.0, abs=1e-10)  # softmax is shift-invariant


def test_kd_matches_torch_kl_div_peer():
    s, t, _ = random_logits(8, 7)
    temp = 3.0
    peer = F.kl_div(
        F.log_softmax(s / temp, 1), F.log_softmax(t / temp, 1), reduction="batchmean", log_target=True
    )
    assert Fd.kd(s, t, temp).item() == pytest.approx(temp**2 * peer.item(), rel=1e-10)


def test_kd_gradient_is_t_times_prob_difference():
    # Hinton et al. 2015: d(T²·KL)/dz_s = T (p_s - p_t), divided by N for the batch mean.
    s, t, _ = random_logits(4, 3)
    s.requires_grad_(True)
    temp = 2.5
    Fd.kd(s, t, temp).backward()
    sd, td = s.detach().numpy(), t.numpy()
    expected = temp * (np_softmax(sd / temp) - np_softmax(td / temp)) / 4
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-9, atol=1e-12)


def test_logit_mse_matches_numpy():
    s, t, _ = random_logits()
    expected = np.mean((s.numpy() - t.numpy()) ** 2)
    assert Fd.logit_mse(s, t).item() == pytest.approx(expected, rel=1e-12)


def test_kd_rejects_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="same shape"):
        Fd.kd(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        Fd.kd(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)


def test_dkd_matches_numpy_paper_formulas():
    s, t, y = random_logits(7, 6, seed=1)
    tckd, nckd = np_dkd_parts(s.numpy(), t.numpy(), y.numpy(), 4.0)
    for alpha, beta in [(1.0, 8.0), (0.5, 2.0), (1.0, 0.0), (0.0, 1.0)]:
        got = Fd.dkd(s, t, y, alpha=alpha, beta=beta, temperature=4.0).item()
        assert got == pytest.approx(alpha * tckd.mean() + beta * nckd.mean(), rel=1e-9)


def test_dkd_decomposition_identity_per_sample():
    # Zhao et al. 2022, eq. 3: KD = TCKD + (1 - p_target,teacher) · NCKD, per sample.
    s, t, y = random_logits(9, 5, seed=2)
    temp = 3.0
    tckd, nckd = Fd.dkd_parts(s, t, y, temp)
    pt_target = np_softmax(t.numpy() / temp)[np.arange(9), y.numpy()]
    expected_kd = np_kd_per_sample(s.numpy(), t.numpy(), temp)
    np.testing.assert_allclose(tckd + (1 - torch.tensor(pt_target)) * nckd, expected_kd, rtol=1e-9)
    np.testing.assert_allclose(Fd.per_sample_kd(s, t, temp), expected_kd, rtol=1e-9)


def test_dkd_two_classes_is_alpha_times_kd():
    # With K = 2 the non-target distribution is a point mass, so NCKD = 0 and TCKD is the full KL.
    s, t, y = random_logits(5, 2, seed=3)
    expected = np_kd_per_sample(s.numpy(), t.numpy(), 2.0).mean()
    assert Fd.dkd(s, t, y, alpha=0.7, beta=8.0, temperature=2.0).item() == pytest.approx(
        0.7 * expected, rel=1e-9
    )


def test_dkd_stable_for_huge_logits():
    s = torch.tensor([[5000.0, 0.0, -5000.0], [0.0, 3000.0, 1.0]], requires_grad=True)
    t = torch.tensor([[4000.0, 10.0, 0.0], [0.0, 2000.0, 3.0]])
    y = torch.tensor([0, 1])
    loss = Fd.dkd(s, t, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_hard_sample_weights_favour_wrong_samples_and_average_one():
    # Sample 0: student confidently right (and agrees with teacher); sample 1: student wrong.
    s = torch.tensor([[6.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    t = torch.tensor([[5.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    w = Fd.hard_sample_weights(s, t, y, gamma=2.0, disagreement=1.0)
    assert w[1] > w[2] > w[0]
    assert w.mean().item() == pytest.approx(1.0, rel=1e-6)
    # Independent formula: r = (1 - p_s(y))^2 + [argmax s != argmax t]; w = r / mean(r).
    p = np_softmax(s.numpy().astype(np.float64))[np.arange(3), y.numpy()]
    r = (1 - p) ** 2 + np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(w.numpy(), r / r.mean(), rtol=1e-5, atol=1e-6)


def test_hard_kd_is_weighted_per_sample_kd_and_detached():
    s, t, y = random_logits(6, 4, seed=4)
    s.requires_grad_(True)
    w = Fd.hard_sample_weights(s, t, y, gamma=1.5)
    assert not w.requires_grad
    expected = np.mean(w.numpy() * np_kd_per_sample(s.detach().numpy(), t.numpy(), 2.0))
    loss = Fd.hard_kd(s, t, y, temperature=2.0, gamma=1.5)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    loss.backward()  # gradient flows through the KL only
    assert torch.isfinite(s.grad).all()


def test_hard_kd_with_equal_weights_reduces_to_kd():
    s, t, y = random_logits(6, 4, seed=5)
    expected = np_kd_per_sample(s.numpy(), t.numpy(), 4.0).mean()
    got = Fd.hard_kd(s, t, y, temperature=4.0, gamma=0.0, disagreement=0.0).item()
    assert got == pytest.approx(expected, rel=1e-9)
    # All samples perfectly easy: r = 0 everywhere, the eps guard gives weights of exactly 1.
    easy = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    w = Fd.hard_sample_weights(easy, easy, torch.tensor([0, 1]))
    assert torch.equal(w, torch.ones(2))


def test_attention_map_hand_example_and_unit_norm():
    # Channel 0 = [3, 0], channel 1 = [1, 2] (a 1x2 map): mean of squares = [5, 2] -> /sqrt(29).
    feat = torch.tensor([[[[3.0, 0.0]], [[1.0, 2.0]]]])
    q = Fd.attention_map(feat)
    np.testing.assert_allclose(q.numpy(), [[5 / math.sqrt(29), 2 / math.sqrt(29)]], rtol=1e-6)
    # p = 1: mean of |f| = [2, 1] -> /sqrt(5).
    np.testing.assert_allclose(
        Fd.attention_map(-feat, p=1).numpy(), [[2 / math.sqrt(5), 1 / math.sqrt(5)]], rtol=1e-6
    )
    rand = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(Fd.attention_map(rand).norm(dim=1).numpy(), np.ones(3), rtol=1e-6)


def test_attention_transfer_hand_example():
    # Student map [5, 2]/sqrt(29) (above); teacher one channel [2, 2] -> [1, 1]/sqrt(2).
    # ||a - b||² = 2 - 2 a·b = 2 - 2 · 7/sqrt(58) = 2 - 14/sqrt(58) ≈ 0.161711.
    s = torch.tensor([[[[3.0, 0.0]], [[1.0, 2.0]]]])
    t = torch.tensor([[[[2.0, 2.0]]]])
    assert Fd.attention_transfer(s, t).item() == pytest.approx(2 - 14 / math.sqrt(58), rel=1e-5)
    # Batch mean: a second, identical-map sample contributes 0.
    s2, t2 = torch.cat([s, t.expand(1, 2, 1, 2)]), torch.cat([t, t])
    assert Fd.attention_transfer(s2, t2).item() == pytest.approx((2 - 14 / math.sqrt(58)) / 2)


def test_attention_transfer_resizes_student_map_before_normalising():
    # Bilinear 2 -> 4 with align_corners=False along one axis: [a, .75a+.25b, .25a+.75b, b].
    m = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    a = np.array([[1.0, 4.0], [9.0, 2.0]])  # the student's raw attention map (one channel, p=2)
    up = m @ a @ m.T
    s = torch.tensor(np.sqrt(a), dtype=torch.float32).view(1, 1, 2, 2)
    t = torch.tensor(np.sqrt(up), dtype=torch.float32).view(1, 1, 4, 4).repeat(1, 3, 1, 1)
    assert Fd.attention_transfer(s, t).item() == pytest.approx(0.0, abs=1e-6)
    assert Fd.attention_map(s, size=(4, 4)).norm().item() == pytest.approx(1.0, rel=1e-6)


def test_hint_mse_matches_numpy_and_rejects_mismatch():
    s, t, _ = random_logits()
    assert Fd.hint_mse(s, t).item() == pytest.approx(np.mean((s.numpy() - t.numpy()) ** 2))
    with pytest.raises(ValueError, match="equal shapes"):
        Fd.hint_mse(torch.zeros(2, 3), torch.zeros(2, 4))
