"""dq.distill end to end on small real data: every loss and feature term, schemes, offline cache."""

from __future__ import annotations

import pytest
import torch

import distiq as dq
from distiq.distill import freeze_, init_from_teacher_
from distiq.distill import offline as offline_mod
from distiq.errors import DistiqError


@pytest.fixture(scope="module")
def digits():
    return dq.data.subsample(dq.data.load("digits"), 400, seed=1)


@pytest.fixture(scope="module")
def teacher(digits):
    torch.manual_seed(0)
    model = dq.models.create("vgg-small", image_size=8, width=0.5)
    dq.train(model, digits, epochs=3, lr=1e-2, progress=False)
    return model


def student():
    torch.manual_seed(1)
    return dq.models.create("vgg-small", image_size=8, width=0.25, depth=3)


@pytest.mark.parametrize("loss", ["kd", "mse", "hard-kd", "dkd"])
def test_every_logit_loss_trains(digits, teacher, loss):
    result = dq.distill(teacher, student(), digits, loss=loss, epochs=2, lr=1e-2, progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert {"train_ce", "train_distill"} <= set(result.history[0])


@pytest.mark.parametrize(
    "feature",
    [
        {"kind": "hint", "student": "features.relu2", "teacher": "features.relu4"},
        {"kind": "attention", "student": "features.relu3", "teacher": "features.relu5"},
        {"kind": "merge", "student": "features.relu3", "teacher": ["features.relu4", "features.relu5"]},
    ],
)
def test_feature_terms_train_and_hooks_are_removed(digits, teacher, feature):
    s = student()
    result = dq.distill(teacher, s, digits, features=[feature], epochs=2, lr=1e-2, progress=False)
    key = f"train_{feature['kind']}:{feature['student']}"
    assert result.history[-1][key] < result.history[0][key]
    for model in (s, teacher):
        assert all(not m._forward_hooks for m in model.modules())


def test_unknown_layer_is_named(digits, teacher):
    with pytest.raises(ValueError, match="features.nope"):
        dq.distill(
            teacher,
            student(),
            digits,
            epochs=1,
            progress=False,
            features=[{"kind": "hint", "student": "features.nope", "teacher": "features.relu4"}],
        )


def test_offline_cache_is_computed_once_and_matches_online(digits, teacher, tmp_path, monkeypatch):
    calls = []
    real = offline_mod.predict_logits
    monkeypatch.setattr(offline_mod, "predict_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(epochs=2, lr=1e-2, progress=False, batch_size=64)
    a = dq.distill(teacher, student(), digits, offline=True, cache_dir=tmp_path, **kw).model
    b = dq.distill(teacher, student(), digits, offline=True, cache_dir=tmp_path, **kw).model
    assert len(calls) == 1 and len(list(tmp_path.glob("teacher-logits-*.safetensors"))) == 1
    online = dq.distill(teacher, student(), digits, **kw).model
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
        assert torch.allclose(v, online.state_dict()[k], atol=1e-4), k


def test_offline_cache_of_augmented_views_trains_as_the_online_teacher_does(digits, teacher, tmp_path):
    kw = dict(epochs=2, lr=1e-2, progress=False, batch_size=64, augment_flip=True, augment_shift=1)
    offline = dq.distill(teacher, student(), digits, offline=True, cache_dir=tmp_path, **kw).model
    online = dq.distill(teacher, student(), digits, offline=False, **kw).model
    plain = dq.distill(
        teacher, student(), digits, offline=True, epochs=2, lr=1e-2, progress=False, batch_size=64
    )
    (cache,) = tmp_path.glob("teacher-logits-*.safetensors")
    assert offline_mod.read_safetensors(cache)[0]["logits"].shape == (18 * len(digits), 10)
    for k, v in offline.state_dict().items():
        assert torch.allclose(v, online.state_dict()[k], atol=1e-4), k
    assert any(not torch.allclose(v, plain.model.state_dict()[k]) for k, v in offline.state_dict().items())


def test_offline_with_features_is_refused(digits, teacher):
    with pytest.raises(DistiqError, match="offline"):
        dq.distill(
            teacher,
            student(),
            digits,
            offline=True,
            epochs=1,
            progress=False,
            features=[{"kind": "hint", "student": "features.relu2", "teacher": "features.relu4"}],
        )


def test_freeze_conv_and_pool_trains_only_the_classifier(digits, teacher):
    s = student()
    before = {k: v.clone() for k, v in s.state_dict().items()}
    frozen = freeze_(s, ["conv", "pool", "bn"])
    assert "features.conv1" in frozen and "features.pool1" in frozen
    dq.distill(teacher, s, digits, epochs=1, lr=1e-2, progress=False)
    after = s.state_dict()
    for k in before:
        if k.endswith("num_batches_tracked"):
            continue  # a counter, not a weight
        changed = not torch.equal(before[k], after[k])
        assert changed == k.startswith("classifier."), k
    with pytest.raises(DistiqError, match="LSTM"):
        freeze_(student(), ["LSTM"])


def test_init_from_teacher_copies_matching_layers():
    torch.manual_seed(0)
    t = dq.models.create("resnet20", image_size=8)
    s = dq.models.create("resnet8", image_size=8)
    copied = init_from_teacher_(s, t)
    assert "features.conv1.weight" in copied and "features.layer1.0.conv1.weight" in copied
    assert torch.equal(s.state_dict()["features.conv1.weight"], t.state_dict()["features.conv1.weight"])
    assert "classifier.fc.weight" in copied  # same 64 -> 10 head
    # resnet8 has one block per stage: resnet20's second and third blocks have no counterpart
    assert not any(".1." in k for k in copied)
    narrow = dq.models.create("resnet8", image_size=8, width=0.5)
    assert "features.conv1.weight" not in init_from_teacher_(narrow, t)  # 8 vs 16 channels
