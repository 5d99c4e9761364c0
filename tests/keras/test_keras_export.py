"""A Keras student through ONNX and int8, and magnitude pruning of its kernels."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

pytest.importorskip("keras", reason="the keras extra is not installed (pip install 'distiq[keras]')")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's

import keras  # noqa: E402
from kerasnets import cnn, fit, nhwc  # noqa: E402

import distiq as dq  # noqa: E402
import distiq.keras as dk  # noqa: E402
from distiq.errors import DistiqError  # noqa: E402
from distiq.onnx.api import report_path  # noqa: E402


@pytest.fixture(scope="module")
def int8_files(teacher, data, tmp_path_factory):
    """The trained Keras teacher as float and int8 ONNX files (:func:`distiq.keras.quantize`)."""
    out = tmp_path_factory.mktemp("int8")
    path = dk.quantize(teacher, data[0], out / "teacher-int8.onnx", method="minmax", check_data=data[1])
    return out / "teacher-int8-float.onnx", path


def test_the_onnx_file_reproduces_keras(teacher, data, int8_files):
    float_path, _ = int8_files
    x = data[1].x[:64].numpy()  # distiq's [N, C, H, W]: the file transposes for the channels-last model
    session = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    want = teacher.predict(x.transpose(0, 2, 3, 1), verbose=0)  # Keras's own inference path
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_int8_keeps_accuracy_and_runs_integer_kernels(teacher, data, int8_files):
    float_path, int8_path = int8_files
    test = data[1]
    x, y = nhwc(test)
    keras_acc = float((teacher.predict(x, verbose=0).argmax(1) == y).mean())
    int8_acc = dq.evaluate(int8_path, test)["accuracy"]
    assert keras_acc > 0.95 and int8_acc >= keras_acc - 0.02
    deploy = json.loads(report_path(int8_path).read_text())["deploy"]
    integer = {n["runtime_op"] for n in deploy["after"] if n["kernel"] == "integer"}
    assert integer & {"QLinearConv", "QGemm", "QLinearMatMul"}, deploy["after"]
    assert deploy["accuracy"]["onnx"] == pytest.approx(int8_acc)


def test_magnitude_pruning_keeps_its_zeros_through_keras_fit(data):
    model = cnn(8, seed=6, name="pruned")
    result = dk.prune_(model, 0.6, exclude=("logits",))
    kernels = [model.get_layer(n).kernel.numpy() for n in ("conv", "conv2")]
    total = sum(k.size for k in kernels)
    assert sum(int((k == 0).sum()) for k in kernels) == round(0.6 * total)  # one global threshold
    assert result.sparsity == pytest.approx(round(0.6 * total) / total)
    assert not (model.get_layer("logits").kernel.numpy() == 0).any()
    fit(model, data[0], epochs=1)
    for name, before in zip(("conv", "conv2"), kernels, strict=True):
        after = model.get_layer(name).kernel.numpy()
        assert np.array_equal(after == 0, before == 0), name  # zeros stayed zero ...
        assert not np.array_equal(after, before), name  # ... while the rest trained
    dq.train(dk.KerasModule(model), data[0], epochs=1, lr=1e-2, progress=None)  # distiq's engine too
    assert np.array_equal(model.get_layer("conv").kernel.numpy() == 0, kernels[0] == 0)
    result.release()


def test_channel_pruning_is_refused_with_the_reason(data):
    with pytest.raises(DistiqError, match="channel pruning rebuilds torch.nn .*Keras ops.*structured: false"):
        dk.prune_(cnn(4, seed=0, name="m"), 0.5, structured=True)
    with pytest.raises(DistiqError, match="exclude: no Dense/Conv layer named nope"):
        dk.prune_(cnn(4, seed=0, name="m"), 0.5, exclude=("nope",))
    with pytest.raises(DistiqError, match="no Dense or convolution layer"):
        dk.prune_(keras.Sequential([keras.Input((4,)), keras.layers.ReLU()]), 0.5)
    with pytest.raises(DistiqError, match="export_onnx: expected a Keras model"):
        dk.export_onnx(torch.nn.Linear(2, 2), "x.onnx", torch.zeros(2, 2))
