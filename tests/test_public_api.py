"""The public names in the shared API.md exist and have the documented signatures."""

from __future__ import annotations

import inspect

import pytest
import torch

import distiq as dq


def params(fn) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


def test_foundation_names_exist():
    for name in ("load", "load_npz", "load_folder", "split", "subsample"):
        assert callable(getattr(dq.data, name)), name
    for name in ("create", "names"):
        assert callable(getattr(dq.models, name)), name
    for name in ("save_weights", "load_weights", "train", "distill", "evaluate"):
        assert callable(getattr(dq, name)), name
    for name in ("kd", "logit_mse", "dkd"):
        assert callable(getattr(dq.losses, name)), name


def test_documented_defaults():
    p = params(dq.data.load)
    assert p["split"].default == "train" and p["root"].default is None
    p = params(dq.data.split)
    assert p["seed"].default == 0 and p["stratify"].default is True
    p = params(dq.models.create)
    assert (p["num_classes"].default, p["in_channels"].default, p["image_size"].default) == (10, 1, 28)
    p = params(dq.distill)
    assert p["loss"].default == "kd" and p["temperature"].default == 4.0 and p["alpha"].default == 0.9
    assert p["loss"].kind is inspect.Parameter.KEYWORD_ONLY
    p = params(dq.losses.dkd)
    assert (p["alpha"].default, p["beta"].default, p["temperature"].default) == (1.0, 8.0, 4.0)
    assert params(dq.evaluate)["metrics"].default == ("accuracy", "f1_macro")


def test_model_names_include_the_documented_ones():
    documented = {
        "mlp",
        "lenet300-100",
        "lenet5",
        "alexnet-small",
        "vgg-small",
        "resnet8",
        "resnet14",
        "resnet20",
    }
    assert documented <= set(dq.models.names())


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match="fashion-mnist"):
        dq.data.load("imagenet")


def test_digits_items_have_documented_types():
    ds = dq.data.load("digits")
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and y.dtype == torch.int64


def test_distill_alpha_weights_distillation_term():
    """alpha=1 ignores the labels entirely: a student distilled with shuffled labels learns the same."""
    ds = dq.data.subsample(dq.data.load("digits"), 300)
    teacher = dq.models.create("mlp", num_classes=10, image_size=8, hidden=(32,))
    torch.manual_seed(0)
    a = dq.models.create("mlp", num_classes=10, image_size=8, hidden=(16,))
    b = dq.models.create("mlp", num_classes=10, image_size=8, hidden=(16,))
    b.load_state_dict(a.state_dict())
    shuffled = dq.data.ArrayDataset(ds.x, ds.y[torch.randperm(len(ds))], ds.classes)
    dq.distill(teacher, a, ds, alpha=1.0, epochs=2, progress=False)
    dq.distill(teacher, b, shuffled, alpha=1.0, epochs=2, progress=False)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k]), k


def test_quantization_pruning_and_pipeline_names():
    for name in ("calibrate", "quantize", "export_onnx", "prune", "run", "distill_concepts"):
        assert callable(getattr(dq, name)), name
    assert callable(dq.sparse.save) and callable(dq.sparse.load)
    p = params(dq.quantize)
    assert (p["mode"].default, p["method"].default, p["bits"].default, p["per_channel"].default) == (
        "static",
        "kl",
        8,
        True,
    )
    p = params(dq.prune)
    assert (p["structured"].default, p["scope"].default, p["importance"].default) == (False, "global", "l1")
    p = params(dq.calibrate)
    assert (p["method"].default, p["bits"].default, p["symmetric"].default, p["axis"].default) == (
        "minmax",
        8,
        True,
        None,
    )
