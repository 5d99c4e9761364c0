"""The model zoo: every registered family, over every input shape, plus hand-counted sizes."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from torch import nn

import distiq.models as models
from distiq.errors import DistiqError

NAMES = models.names()
MLPS = {"mlp", "mlp-1200-1200", "mlp-800-800", "lenet300-100"}
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def test_api_names_are_registered():
    required = {"mlp", "lenet300-100", "lenet5", "alexnet-small", "vgg-small"}
    assert required | {"resnet8", "resnet14", "resnet20", "mlp-1200-1200", "mlp-800-800"} <= set(NAMES)
    assert NAMES == models.MODELS.names()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("num_classes", [4, 10])
def test_forward_shape_for_any_input(name, shape, num_classes):
    torch.manual_seed(0)
    model = models.create(name, num_classes=num_classes, in_channels=shape[0], image_size=shape[1]).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = model(x)
        again = model(x)
    assert out.shape == (2, num_classes)
    assert torch.equal(out, again)  # eval mode is deterministic (dropout off, BN frozen)


@pytest.mark.parametrize("name", NAMES)
def test_structure_conventions(name):
    model = models.create(name, num_classes=7)
    assert isinstance(model.classifier, nn.Sequential)
    assert isinstance(model.classifier[-1], nn.Linear)
    assert model.classifier[-1].out_features == 7
    if name in MLPS:
        assert not hasattr(model, "features")
        assert isinstance(model.classifier[0], nn.Flatten)
    else:
        assert isinstance(model.features, nn.Sequential)
        assert isinstance(model.features[0], nn.Conv2d)
    # One non-inplace ReLU module per use, so fusion and pruning can see every activation.
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    all_relus = [m for _, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.ReLU)]
    assert relus and len(relus) == len(all_relus)
    assert not any(m.inplace for m in relus)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_through_json(name):
    model = models.create(name, num_classes=3, in_channels=3, image_size=16)
    config = json.loads(json.dumps(model.config))  # as a checkpoint would store it
    assert config["name"] == name
    assert (config["num_classes"], config["in_channels"], config["image_size"]) == (3, 3, 16)
    rebuilt = models.create_from_config(config)
    assert rebuilt.config == model.config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_options_are_recorded_in_config():
    model = models.create("vgg-small", width=0.5, cfg=[8, "M", 16])
    rebuilt = models.create_from_config(model.config)
    assert model.config["cfg"] == [8, "M", 16] and model.config["width"] == 0.5
    assert rebuilt.features.conv2.out_channels == 8  # 16 * 0.5


def test_lenet300_100_parameter_count():
    # 784*300 + 300 + 300*100 + 100 + 100*10 + 10
    assert models.count_parameters(models.create("lenet300-100")) == 266_610


def test_mlp_1200_1200_parameter_count_and_dropout_default():
    model = models.create("mlp-1200-1200")
    # 784*1200 + 1200 + 1200*1200 + 1200 + 1200*10 + 10
    assert models.count_parameters(model) == 2_395_210
    assert model.config["dropout"] == 0.2
    assert model.classifier.drop1.p == 0.2
    assert models.create("mlp-1200-1200", dropout=0.0).classifier.drop1.p == 0.0


def test_mlp_hidden_option():
    model = models.create("mlp", in_channels=1, image_size=8, hidden=(5,), num_classes=2)
    assert models.count_parameters(model) == 64 * 5 + 5 + 5 * 2 + 2


def test_lenet5_parameter_count_on_28x28():
    # conv1 1*6*25+6, conv2 6*16*25+16, fc1 (16*5*5)*120+120, fc2 120*84+84, fc3 84*10+10
    assert models.count_parameters(models.create("lenet5")) == 156 + 2416 + 48120 + 10164 + 850


@pytest.mark.parametrize(("name", "blocks"), [("resnet8", 3), ("resnet14", 6), ("resnet20", 9)])
def test_resnet_conv_counts(name, blocks):
    convs = [m for m in models.create(name).modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) == 1 + 2 * blocks  # stem + 2 per block
    assert sum(m.kernel_size == (1, 1) for m in convs) == 2  # projections into stages 2 and 3


def test_resnet20_parameter_count_on_colour():
    # stem 3*16*9 + bn 32; stage1 3*2*(16*16*9 + 32) = 14016;
    # stage2 (16*32*9 + 64) + (32*32*9 + 64) + (16*32 + 64) + 2*2*(32*32*9 + 64) = 51648;
    # stage3 (32*64*9 + 128) + (64*64*9 + 128) + (32*64 + 128) + 2*2*(64*64*9 + 128) = 205696;
    # fc 64*10 + 10
    model = models.create("resnet20", in_channels=3, image_size=32)
    assert models.count_parameters(model) == 432 + 32 + 14016 + 51648 + 205696 + 650


@pytest.mark.parametrize("name", ["vgg-small", "alexnet-small", "resnet20"])
def test_width_multiplier_makes_smaller_students(name):
    full = models.create(name, in_channels=3, image_size=32)
    half = models.create(name, in_channels=3, image_size=32, width=0.5)
    assert models.count_parameters(half) < 0.4 * models.count_parameters(full)
    assert half.features.conv1.out_channels * 2 == full.features.conv1.out_channels


def test_vgg_depth_and_small_images():
    convs = [m for m in models.create("vgg-small", depth=3).modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    deep = models.create("vgg-small", depth=8, image_size=8).eval()  # 8 -> 4 -> 2 -> 1 -> skip
    assert isinstance(deep.features.pool3, nn.MaxPool2d)
    assert isinstance(deep.features.pool4, nn.Identity)
    assert deep(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_vgg_stem_stride_halves_every_later_feature_map():
    """A stride-2 first conv: the same weights, a quarter of the pixels for every conv after it."""
    cfg = [8, 16, "M", 16, "M"]
    plain = models.create("vgg-small", cfg=cfg).eval()
    strided = models.create("vgg-small", cfg=cfg, stem_stride=2).eval()
    assert models.count_parameters(plain) == models.count_parameters(strided)
    x = torch.randn(2, 1, 28, 28)
    assert plain.features(x).shape == (2, 16, 7, 7)
    assert strided.features(x).shape == (2, 16, 3, 3)  # 28 -> 14 (stem) -> 7 -> 3 (pools floor)
    assert strided(x).shape == (2, 10)
    assert strided.config["stem_stride"] == 2
    rebuilt = models.create_from_config(json.loads(json.dumps(strided.config)))
    assert rebuilt.features.conv1.stride == (2, 2) and rebuilt.features.conv2.stride == (1, 1)


def test_count_parameters_trainable_only():
    model = models.create("lenet300-100", image_size=8, in_channels=1)
    for p in model.classifier.fc1.parameters():
        p.requires_grad_(False)
    total = models.count_parameters(model)
    assert models.count_parameters(model, trainable_only=True) == total - (64 * 300 + 300)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(name="resnet21"), "known: alexnet-small"),
        (dict(name="mlp", hiden=(3,)), "hiden"),
        (dict(name="mlp", num_classes=0), "num_classes"),
        (dict(name="vgg-small", depth=4), "depth"),
        (dict(name="vgg-small", cfg=[8, "X"]), "'X'"),
        (dict(name="vgg-small", stem_stride=3), "stem_stride"),
        (dict(name="resnet8", width=0), "width"),
        (dict(name="mlp", dropout=1.5), "dropout"),
    ],
)
def test_bad_input_raises_value_error(kwargs, fragment):
    with pytest.raises(DistiqError, match=fragment) as info:
        models.create(**kwargs)
    assert isinstance(info.value, ValueError)


PLUGIN = """
from torch import nn

def tiny(num_classes, in_channels, image_size, hidden=8):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * image_size**2, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )

not_callable = 3

def not_a_module(**kwargs):
    return 42
"""


def test_user_model_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "distiq_test_user_models.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = models.create("distiq_test_user_models:tiny", num_classes=3, image_size=8, hidden=5)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    assert models.count_parameters(model) == 64 * 5 + 5 + 5 * 3 + 3
    assert model.config["name"] == "distiq_test_user_models:tiny"
    assert models.create_from_config(model.config, allow_code=model.config["name"])[1].out_features == 5

    for spec, fragment in [
        ("distiq_no_such_module_xyz:f", "cannot import"),
        ("distiq_test_user_models:missing", "has no 'missing'"),
        ("distiq_test_user_models:not_callable", "not callable"),
        ("distiq_test_user_models:not_a_module", "not a torch.nn.Module"),
    ]:
        with pytest.raises(ValueError, match=fragment) as info:
            models.create(spec)
        assert spec in str(info.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is legacy
@pytest.mark.parametrize(("name", "shape"), [("resnet8", (1, 8, 8)), ("alexnet-small", (3, 16, 16))])
def test_onnx_export_matches_torch(name, shape):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = models.create(name, num_classes=5, in_channels=shape[0], image_size=shape[1]).eval()
    x = torch.randn(3, *shape)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
