"""Channel pruning with Torch-Pruning: the right channels go, shapes stay consistent (BatchNorm,
residuals), the result runs in ONNX Runtime, and a pruned model saves and rebuilds without pickling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import distiq as dq
from distiq.errors import DistiqError
from distiq.prune import layer_shapes, load_pruned, prune_channels_, save_pruned


def small_vgg() -> nn.Module:
    torch.manual_seed(0)
    return dq.models.create("vgg-small", image_size=8, width=0.25)  # convs 8, 8, 16, 16, 32


def _rig_first_layer(model: nn.Module, conv1: torch.Tensor, gamma: torch.Tensor | None = None) -> None:
    """conv1 as given; everything else in conv1's channel group equal across channels, so conv1 (or
    the BN scale) alone decides the ranking."""
    with torch.no_grad():
        model.features.conv1.weight.copy_(conv1)
        model.features.bn1.weight.copy_(gamma if gamma is not None else torch.ones(8))
        model.features.bn1.bias.zero_()
        model.features.conv2.weight.fill_(0.1)


def test_l1_keeps_the_channels_with_largest_l1_norm():
    model = small_vgg()
    conv1 = torch.stack([torch.full((1, 3, 3), float(c + 1)) for c in [3, 7, 0, 5, 1, 6, 2, 4]])
    _rig_first_layer(model, conv1)
    prune_channels_(model, 0.5, importance="l1", scope="layer")
    keep = [1, 3, 5, 7]  # the four largest of 4, 8, 1, 6, 2, 7, 3, 5 (in order of index)
    assert torch.equal(model.features.conv1.weight, conv1[keep])


def test_l1_and_l2_disagree_where_they_should():
    # "spread" channels: nine weights of 0.5 (L1 4.5, L2^2 2.25); "peaked": one weight 2 (L1 2, L2^2 4)
    spread, peaked = torch.full((1, 3, 3), 0.5), torch.zeros(1, 3, 3)
    peaked[0, 1, 1] = 2.0
    conv1 = torch.stack([spread, peaked] * 4)
    results = {}
    for importance in ("l1", "l2"):
        model = small_vgg()
        _rig_first_layer(model, conv1)
        prune_channels_(model, 0.5, importance=importance, scope="layer")
        results[importance] = model.features.conv1.weight
    assert torch.equal(results["l1"], torch.stack([spread] * 4))
    assert torch.equal(results["l2"], torch.stack([peaked] * 4))


def test_bn_importance_keeps_the_largest_gammas():
    model = small_vgg()
    conv1 = torch.randn(8, 1, 3, 3)
    gamma = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6])
    _rig_first_layer(model, conv1, gamma)
    prune_channels_(model, 0.5, importance="bn", scope="layer")
    assert torch.equal(model.features.bn1.weight.detach(), gamma[[1, 3, 5, 7]])
    assert torch.equal(model.features.conv1.weight, conv1[[1, 3, 5, 7]])


def test_half_the_channels_of_vgg_small_keeps_the_classifier():
    model = dq.models.create("vgg-small")
    prune_channels_(model, 0.5, scope="layer")
    widths = [model.features.get_submodule(f"conv{i}").out_channels for i in range(1, 6)]
    assert widths == [16, 16, 32, 32, 64]  # vgg-small's 32-32-64-64-128, halved
    assert model.features.bn5.num_features == 64
    assert tuple(model.classifier.fc.weight.shape) == (10, 64)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_residual_network_stays_consistent_and_runs_in_onnx_runtime(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = dq.models.create("resnet8", image_size=16)
    prune_channels_(model, 0.5, scope="layer")
    shapes = layer_shapes(model)
    convs = {k: v for k, v in shapes.items() if k.endswith("weight") and len(v) == 4}
    outs = sorted({v[0] for v in convs.values()})
    assert outs == [8, 16, 32]  # stages of 16, 32, 64 halved together with their shortcuts
    model.eval()
    x = torch.randn(3, 1, 16, 16)
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], dynamo=False)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_global_scope_removes_the_fraction_overall_not_per_layer():
    torch.manual_seed(0)
    model = dq.models.create("vgg-small")
    before = [model.features.get_submodule(f"conv{i}").out_channels for i in range(1, 6)]
    prune_channels_(model, 0.5, scope="global")
    after = [model.features.get_submodule(f"conv{i}").out_channels for i in range(1, 6)]
    assert 0.4 <= 1 - sum(after) / sum(before) <= 0.6
    assert len({a / b for a, b in zip(after, before, strict=True)}) > 1


def test_per_layer_ratios():
    model = small_vgg()
    prune_channels_(model, {"features.conv1": 0.25, "features.conv5": 0.5})
    widths = [model.features.get_submodule(f"conv{i}").out_channels for i in range(1, 6)]
    assert widths == [6, 8, 16, 16, 16]


def test_round_to_leaves_multiples_of_the_block_rounded_down():
    def widths(**options) -> list[int]:
        model = dq.models.create("vgg-small", cfg=[16, 32, "M", 64, "M"], stem_stride=2)
        prune_channels_(model, 0.25, scope="layer", **options)
        return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]

    assert widths() == [12, 24, 48]  # a quarter of each layer
    assert widths(round_to=8) == [8, 24, 48]  # 12 -> 8, the others are multiples already


def test_round_to_without_structured_is_refused():
    with pytest.raises(DistiqError, match="round_to"):
        dq.prune(small_vgg(), 0.5, round_to=8)
    with pytest.raises(DistiqError, match="round_to"):
        dq.run({"teacher": {"model": "mlp"}, "prune": {"amount": 0.5, "round_to": 8}})


def test_save_and_rebuild_without_pickle(tmp_path):
    model = small_vgg()
    prune_channels_(model, 0.5, scope="global")
    path = save_pruned(model, tmp_path / "pruned.safetensors")
    with pytest.raises(DistiqError, match="do not fit"):
        dq.load_model(path)  # the plain loader knows only the original architecture
    rebuilt = load_pruned(path)
    assert layer_shapes(rebuilt) == layer_shapes(model)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_bad_requests_are_clear_errors():
    with pytest.raises(DistiqError, match="BatchNorm"):
        prune_channels_(dq.models.create("lenet300-100"), 0.5, importance="bn")
    with pytest.raises(DistiqError, match="importance"):
        prune_channels_(small_vgg(), 0.5, importance="taylor-ish")
    with pytest.raises(DistiqError, match="example_input"):
        prune_channels_(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), 0.5)


def test_channel_pruned_model_quantizes_and_exports_int8(tmp_path):
    import onnxruntime as ort

    quant = pytest.importorskip("distiq.quant")
    if not hasattr(quant, "quantize") or not hasattr(quant, "export_onnx"):
        pytest.skip("distiq.quant has no quantize/export_onnx in this tree")
    model = small_vgg()
    prune_channels_(model, 0.5, scope="layer")
    model.eval()
    calib = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    q = quant.quantize(model, calib, mode="static", method="minmax")
    path = quant.export_onnx(q, tmp_path / "q.onnx", calib[:1])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: calib[:16].numpy()})[0]
    want = model(calib[:16]).detach().numpy()
    assert got.shape == want.shape == (16, 10)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9  # int8 tracks the float pruned model
