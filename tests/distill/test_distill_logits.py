"""The registered logit losses: names, uniform interface, option validation, values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distiq.distill.logits import LOGIT_LOSSES, LogitLoss, logit_loss_options, make_logit_loss


def np_kd(s: np.ndarray, t: np.ndarray, temp: float) -> float:
    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    ps, pt = softmax(s / temp), softmax(t / temp)
    return float(temp**2 * np.mean(np.sum(pt * np.log(pt / ps), axis=1)))


def batch(k: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(6, k, generator=g, dtype=torch.float64) * 2
    t = torch.randn(6, k, generator=g, dtype=torch.float64) * 2
    return s, t, torch.randint(0, k, (6,), generator=g)


def test_required_names_are_registered():
    assert {"kd", "mse", "hard-kd", "dkd"} <= set(LOGIT_LOSSES.names())


#: Losses whose teacher and student logits differ in width need options that say how.
NEEDS_OPTIONS = {"concept-kd"}


@pytest.mark.parametrize("name", sorted(set(LOGIT_LOSSES.names()) - NEEDS_OPTIONS))
def test_every_loss_has_the_uniform_interface(name):
    loss = make_logit_loss(name, temperature=2.0)
    assert isinstance(loss, LogitLoss)
    s, t, y = batch()
    s.requires_grad_(True)
    t.requires_grad_(True)
    value = loss(s, t, y)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None  # the teacher is detached by the module
    assert "temperature" in logit_loss_options(name)


def test_kd_module_matches_numpy():
    s, t, y = batch()
    value = make_logit_loss("kd", temperature=3.0)(s, t, y).item()
    assert value == pytest.approx(np_kd(s.numpy(), t.numpy(), 3.0), rel=1e-9)


def test_mse_module_ignores_temperature():
    s, t, y = batch()
    expected = np.mean((s.numpy() - t.numpy()) ** 2)
    for temp in (1.0, 4.0, 10.0):
        assert make_logit_loss("mse", temperature=temp)(s, t, y).item() == pytest.approx(expected)


def test_dkd_module_passes_alpha_beta():
    # Two classes: NCKD = 0, so DKD = alpha · KD whatever beta is.
    s, t, y = batch(k=2)
    loss = make_logit_loss("dkd", temperature=2.0, alpha=0.25, beta=100.0)
    assert loss(s, t, y).item() == pytest.approx(0.25 * np_kd(s.numpy(), t.numpy(), 2.0), rel=1e-9)


def test_hard_kd_module_with_uniform_weights_is_kd():
    s, t, y = batch()
    loss = make_logit_loss("hard-kd", temperature=4.0, gamma=0.0, disagreement=0.0)
    assert loss(s, t, y).item() == pytest.approx(np_kd(s.numpy(), t.numpy(), 4.0), rel=1e-9)


def test_unknown_option_names_the_loss_and_accepted_options():
    with pytest.raises(ValueError) as err:
        make_logit_loss("dkd", temprature=4.0)
    message = str(err.value)
    assert "'dkd'" in message and "temprature" in message
    assert all(opt in message for opt in ("temperature", "alpha", "beta"))


def test_unknown_name_and_bad_values_raise():
    with pytest.raises(ValueError, match="known: .*dkd"):
        make_logit_loss("fancy-kd")
    with pytest.raises(ValueError, match="temperature"):
        make_logit_loss("kd", temperature=0)
    with pytest.raises(ValueError, match="gamma"):
        make_logit_loss("hard-kd", gamma=-1)
    with pytest.raises(ValueError, match="beta"):
        make_logit_loss("dkd", beta=-0.5)


def test_options_listing_has_defaults():
    assert logit_loss_options("dkd") == {"temperature": 4.0, "alpha": 1.0, "beta": 8.0}
    assert logit_loss_options("hard-kd") == {"temperature": 4.0, "gamma": 2.0, "disagreement": 1.0}


def test_concept_kd_is_a_registered_loss_with_the_same_interface():
    from distiq.data.concepts import load_mapping
    from distiq.distill import concept_kd

    mapping = load_mapping("fashion-mnist-4")
    loss = make_logit_loss("concept-kd", temperature=2.0, mapping="fashion-mnist-4")
    g = torch.Generator().manual_seed(1)
    s = torch.randn(6, mapping.num_concepts, generator=g, requires_grad=True)
    t = torch.randn(6, mapping.num_teacher_labels, generator=g, requires_grad=True)
    value = loss(s, t, torch.zeros(6, dtype=torch.long))
    assert value.item() == pytest.approx(concept_kd(s, t, mapping.membership(), 2.0).item(), rel=1e-12)
    value.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    with pytest.raises(ValueError, match="concept-kd: needs loss_options.mapping"):
        make_logit_loss("concept-kd", temperature=2.0)
