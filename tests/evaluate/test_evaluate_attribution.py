"""Attribution agreement: 1 for a copy of the teacher, lower for a perturbed one; Spearman by hand."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import stats as sstats
from torch import nn

from distiq.evaluate import agreement, attribution_agreement, attribution_maps, spearman


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))


def _data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3


def test_spearman_hand_worked_and_against_scipy():
    # ranks 1,2,3,4 against 1,3,2,4: d^2 sums to 2, rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert spearman(np.array([[1.0, 2, 3, 4]]), np.array([[1.0, 3, 2, 4]]))[0] == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 30)), rng.random((5, 30))
    peer = [sstats.spearmanr(u, v).statistic for u, v in zip(a, b, strict=True)]
    assert spearman(a, b) == pytest.approx(peer)
    assert np.isnan(spearman(np.ones((1, 4)), a[:1, :4])[0])  # a constant map ranks nothing


@pytest.mark.parametrize("method", ["integrated-gradients", "saliency"])
def test_copy_agrees_fully_and_perturbed_less(method):
    teacher = _model()
    same = copy.deepcopy(teacher)
    noisy = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(torch.randn_like(p) * p.std())
    x, y = _data()
    results, maps = attribution_agreement(
        teacher, {"copy": same, "noisy": noisy}, x, y, ["a", "b", "c"], method, steps=8
    )
    copy_r, noisy_r = results
    assert copy_r.mean == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in copy_r.per_class.values())
    assert noisy_r.mean < 0.95
    assert set(noisy_r.per_class) == {"a", "b", "c"}
    assert maps["reference"].shape == (12, 8, 8) and bool((maps["reference"] >= 0).all())
    # per class is the mean over that class's images
    assert noisy_r.per_class["b"] == pytest.approx(np.mean(noisy_r.per_image[1::3]))


def test_integrated_gradients_complete_the_logit_difference():
    # completeness (Sundararajan et al., 2017): for a linear model, IG from 0 is exactly w * x,
    # so the map is |w * x| and its per-image sum (before abs) is logit(x) - logit(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = _data(4)
    maps = attribution_maps(lin, x, y, "integrated-gradients", steps=4)
    w = lin[1].weight.detach()[y].reshape(4, 8, 8)
    assert maps == pytest.approx((w * x[:, 0]).abs(), abs=1e-5)


def test_unknown_method_and_agreement_keys():
    with pytest.raises(ValueError, match="known: integrated-gradients, saliency"):
        attribution_maps(_model(), *_data(2), "occlusion")
    m = torch.rand(3, 8, 8)
    r = agreement(m, m, torch.tensor([0, 0, 1]), ["zero", "one"], "x")
    assert r.to_dict()["per_class"] == pytest.approx({"zero": 1.0, "one": 1.0})
