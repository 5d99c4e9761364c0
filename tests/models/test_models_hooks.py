"""Forward hooks by module path: outputs equal hand-run layers, and hooks never outlive the block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import distiq.models as models


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_module_names_and_get_module():
    model = models.create("lenet5")
    names = models.module_names(model)
    assert "" not in names
    assert names[:3] == ["features", "features.conv1", "features.relu1"]
    assert models.get_module(model, "features.conv1") is model.features.conv1
    assert models.get_module(model, "classifier.fc3") is model.classifier[-1]
    assert models.get_module(model, "") is model


def test_get_module_suggests_close_matches():
    model = models.create("lenet5")
    with pytest.raises(ValueError, match="layer 'features.cnv1' not found in LeNet5") as info:
        models.get_module(model, "features.cnv1")
    assert "close matches: features.conv1" in str(info.value)


def test_capture_equals_manual_forward_and_removes_hooks():
    torch.manual_seed(0)
    model = models.create("lenet5", image_size=8).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad(), models.capture(model, ["features.relu1", "classifier.fc2"]) as feats:
        logits = model(x)
    f = model.features
    c = model.classifier
    with torch.no_grad():
        relu1 = torch.relu(f.conv1(x))
        hidden = f.pool2(torch.relu(f.conv2(f.pool1(relu1)))).flatten(1)
        fc2 = c.fc2(torch.relu(c.fc1(hidden)))
        manual_logits = c.fc3(torch.relu(fc2))
    assert set(feats) == {"features.relu1", "classifier.fc2"}
    torch.testing.assert_close(feats["features.relu1"], relu1, rtol=0, atol=0)
    torch.testing.assert_close(feats["classifier.fc2"], fc2)
    torch.testing.assert_close(logits, manual_logits)
    assert _no_hooks_left(model)


def test_capture_residual_block_matches_formula():
    torch.manual_seed(0)
    model = models.create("resnet8", image_size=8).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad(), models.capture(model, "features.layer1.0") as feats:
        model(x)
    f = model.features
    b = f.layer1[0]
    with torch.no_grad():
        stem = torch.relu(f.bn1(f.conv1(x)))
        want = torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(stem))))) + stem)
    torch.testing.assert_close(feats["features.layer1.0"], want)


def test_capture_keeps_gradients_for_feature_losses():
    model = models.create("mlp", image_size=8, hidden=(4,))
    with models.capture(model, ["classifier.relu1"]) as feats:
        model(torch.randn(3, 1, 8, 8))
    feats["classifier.relu1"].sum().backward()
    assert model.classifier.fc1.weight.grad is not None


def test_hooks_removed_on_exception_and_bad_path_registers_nothing():
    model = models.create("lenet5", image_size=8)
    with pytest.raises(RuntimeError, match="boom"), models.capture(model, ["features.conv1"]):
        assert model.features.conv1._forward_hooks
        raise RuntimeError("boom")
    assert _no_hooks_left(model)
    with pytest.raises(ValueError, match="features.nope"):
        with models.capture(model, ["features.conv1", "features.nope"]):
            pass  # pragma: no cover
    assert _no_hooks_left(model)


def test_feature_shapes_leaves_model_untouched():
    model = models.create("resnet8", in_channels=3, image_size=32)
    model.train()
    before = model.features.bn1.running_mean.clone()
    paths = ["features.layer1", "features.layer2", "features.layer3", "classifier.fc"]
    shapes = models.feature_shapes(model, paths, torch.randn(2, 3, 32, 32))
    assert shapes == {
        "features.layer1": (2, 16, 32, 32),
        "features.layer2": (2, 32, 16, 16),
        "features.layer3": (2, 64, 8, 8),
        "classifier.fc": (2, 10),
    }
    assert model.training
    assert torch.equal(model.features.bn1.running_mean, before)
    assert _no_hooks_left(model)
