"""Error analysis: SQNR by hand, per-layer weight error against PyTorch's fake quantization, the
one-layer-at-a-time ranking against quantizing that layer alone via ``skip``, and mixed precision."""

from __future__ import annotations

import math

import pytest
import torch

import distiq as dq
from distiq.quant import layer_errors, mixed_precision, quantize, sensitivity, sqnr_db


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is faster, and on a shared machine far steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup():
    train, test = dq.data.load("digits", "train"), dq.data.load("digits", "test")
    torch.manual_seed(0)
    model = dq.models.create("lenet5", image_size=8)
    dq.train(model, train, epochs=3, lr=3e-3, batch_size=64, progress=False)
    return model.eval(), dq.data.subsample(train, 128), test


def _accuracy(model, data) -> float:
    return dq.evaluate(model, data, ("accuracy",))["accuracy"]


def test_sqnr_by_hand():
    assert sqnr_db(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0])) == pytest.approx(10 * math.log10(25))
    assert sqnr_db(torch.ones(3), torch.ones(3)) == math.inf


@pytest.mark.parametrize(("target", "edge"), [("x86-vnni", 127), ("x86-avx2", 64)])
def test_layer_errors_against_pytorch_fake_quant(setup, target, edge):
    model, calib, _ = setup
    qmodel = quantize(model, calib, method="minmax", target=target, thin_conv_channels=0)
    rows = {r["layer"]: r for r in layer_errors(qmodel, model, calib)}
    assert list(rows) == [
        "features.conv1",
        "features.conv2",
        "classifier.fc1",
        "classifier.fc2",
        "classifier.fc3",
    ]
    w = model.features.conv2.weight.detach()
    scale = w.abs().amax(dim=(1, 2, 3)) / edge
    ref = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(16, dtype=torch.int32), 0, -edge, edge)
    assert rows["features.conv2"]["weight_sqnr_db"] == pytest.approx(sqnr_db(w, ref), rel=1e-4)
    assert rows["features.conv2"]["weight_mse"] == pytest.approx(float(((w - ref) ** 2).mean()), rel=1e-4)
    four = quantize(model, calib, bits=4, weight_method="minmax", thin_conv_channels=0)
    low = {r["layer"]: r for r in layer_errors(four, model, calib)}
    for layer, row in rows.items():
        assert 25 < row["weight_sqnr_db"] and row["activation_sqnr_db"] > 10
        assert low[layer]["weight_sqnr_db"] < row["weight_sqnr_db"] - 15  # ~6 dB per bit


def test_ranking_equals_quantizing_each_layer_alone(setup):
    model, calib, test = setup
    options = dict(mode="weight-only", bits=2, weight_method="minmax", example_input=calib.x[:2])
    ranking = sensitivity(model, calib, test, **options)
    assert [r["drop"] for r in ranking] == sorted((r["drop"] for r in ranking), reverse=True)
    float_acc = _accuracy(model, test)
    layers = [r["layer"] for r in ranking]
    for row in ranking[:2]:
        alone = quantize(model, skip=[x for x in layers if x != row["layer"]], **options)
        assert row["accuracy"] == pytest.approx(_accuracy(alone, test))
        assert row["drop"] == pytest.approx(float_acc - row["accuracy"])
    assert ranking[0]["drop"] > 0.02


def test_mixed_precision_keeps_sensitive_layers_float_until_the_budget_holds(setup):
    model, calib, test = setup
    options = dict(mode="weight-only", bits=3, weight_method="minmax", example_input=calib.x[:2])
    ranking = sensitivity(model, calib, test, **options)
    qmodel, info = mixed_precision(model, calib, test, budget=0.03, ranking=ranking, **options)
    assert info["met_budget"] and info["float_accuracy"] - info["accuracy"] <= 0.03
    assert info["float_layers"] == [r["layer"] for r in ranking[: len(info["float_layers"])]]
    assert info["accuracy"] == pytest.approx(_accuracy(qmodel, test))
    assert 0 < len(info["float_layers"]) < len(ranking)
    kept = {e["layer"] for e in qmodel.quant_report.float_layers}
    assert kept == set(info["float_layers"])
