"""Keras models in distiq's own paths: dq.distill, .keras files, recipes and the command line."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("keras", reason="the keras extra is not installed (pip install 'distiq[keras]')")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's

import keras  # noqa: E402
from kerasnets import cnn, fit, nhwc  # noqa: E402

import distiq as dq  # noqa: E402
import distiq.keras as dk  # noqa: E402
from distiq.cli.main import main  # noqa: E402
from distiq.errors import DataError, DistiqError  # noqa: E402
from distiq.pipeline.recipe import load_recipe  # noqa: E402

QUIET = {"latency": False, "robustness": False, "bootstrap": 0}


def test_dq_distill_trains_a_keras_student_in_place(teacher, data):
    train, test = data
    student = cnn(4, seed=5, name="student")
    before = [w.numpy().copy() for w in student.weights]
    hint = {"kind": "hint", "student": "conv2", "teacher": "conv2", "weight": 0.5}
    options = dict(epochs=3, lr=1e-2, batch_size=32, progress=None)
    result = dq.distill(teacher, student, train, loss="kd", features=[hint], **options)
    assert isinstance(result.model, dk.KerasModule) and result.model.keras_model is student
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, student.weights, strict=True))
    x, y = nhwc(test)
    keras_acc = float((student.predict(x, verbose=0).argmax(1) == y).mean())
    assert keras_acc > 0.9  # four separable classes; chance is 0.25
    assert dq.evaluate(result.model, test)["accuracy"] == pytest.approx(keras_acc)  # NCHW -> NHWC view
    assert result.history[-1]["train_hint:conv2"] > 0  # the layer tap fed the hint term


def test_layer_taps_give_channels_first_features(teacher, data):
    view = dk.KerasModule(teacher)
    with dq.models.hooks.capture(view, ["conv2", "flatten"]) as feats:
        out = view.eval()(data[1].x[:3])
    assert tuple(feats["conv2"].shape) == (3, 8, 4, 4) and tuple(feats["flatten"].shape) == (3, 128)
    ref = teacher(data[1].x[:3].permute(0, 2, 3, 1), training=False)
    torch.testing.assert_close(out, ref)
    names = [f"variables.{layer}/{w}" for layer in ("conv", "conv2", "logits") for w in ("kernel", "bias")]
    assert sorted(view.state_dict()) == sorted(names)  # one entry per Keras variable, by layer name


def test_a_keras_file_is_a_model_and_its_weights_reload(teacher, data, tmp_path):
    teacher.save(tmp_path / "teacher.keras")
    view = dq.models.create(str(tmp_path / "teacher.keras"))
    x = data[1].x[:8]
    torch.testing.assert_close(view.eval()(x), dk.KerasModule(teacher).eval()(x))
    with torch.no_grad():
        view.variables["logits/bias"].add_(1.0)  # the view's parameters are the Keras variables
    assert np.allclose(
        view.keras_model.get_layer("logits").bias.numpy(), teacher.get_layer("logits").bias.numpy() + 1
    )  # noqa: E501
    dq.save_weights(view, tmp_path / "w.safetensors")
    again = dq.load_model(tmp_path / "w.safetensors")  # rebuilt from the .keras file named in the config
    torch.testing.assert_close(again.eval()(x), view(x))


def test_bad_keras_files_are_named_in_one_line(tmp_path):
    with pytest.raises(DataError, match=r"missing\.keras: Keras model file not found"):
        dq.models.create(str(tmp_path / "missing.keras"))
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.keras: not a loadable Keras model"):
        dq.models.create(str(tmp_path / "junk.keras"))
    with pytest.raises(DistiqError, match="takes no options"):
        dq.models.create(str(tmp_path / "junk.keras"), width=2)


def test_safe_mode_refuses_code_in_a_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(2)])
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(DataError, match=r"lambda\.keras: not a loadable Keras model.*(?i:safe_mode|unsafe)"):
        dk.load_keras(tmp_path / "lambda.keras")


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    """A Keras teacher trained on digits and an untrained Keras student, as .keras files."""
    out = tmp_path_factory.mktemp("keras-files")
    train = dq.data.load("digits", "train")
    fit(cnn(16, seed=0, name="teacher", classes=10), train, epochs=6).save(out / "teacher.keras")
    cnn(4, seed=1, name="student", classes=10).save(out / "student.keras")
    return out / "teacher.keras", out / "student.keras"


def test_a_recipe_distils_a_keras_student_from_a_keras_teacher(digits_files, tmp_path):
    teacher, student = digits_files
    recipe = {
        "name": "keras",
        "data": {"name": "digits"},
        "teacher": {"weights": str(teacher)},
        "distill": {"student": str(student), "train": {"epochs": 4, "lr": 0.01, "batch_size": 32}},
        "evaluate": QUIET,
        "report": False,
    }
    result = dq.run(recipe, tmp_path / "run")
    assert result.stage("teacher").metrics["accuracy"] > 0.8
    assert result.stage("distill").metrics["accuracy"] > 0.6
    again = dq.run(recipe, tmp_path / "run")  # the stages reload from their weights and the .keras file
    assert [s.skipped for s in again.stages] == [True, True]
    assert again.stage("distill").metrics["accuracy"] == result.stage("distill").metrics["accuracy"]


def test_a_recipe_refuses_what_it_cannot_do_with_a_keras_student(digits_files, tmp_path):
    teacher, student = digits_files
    recipe = {
        "teacher": {"weights": str(teacher)},
        "distill": {"student": str(tmp_path / "nope.keras")},
        "prune": {"amount": 0.5, "structured": True},
    }
    with pytest.raises(DistiqError, match=r"distill\.student: Keras model file not found: .*nope\.keras"):
        load_recipe(recipe)
    recipe["distill"]["student"] = str(student)
    with pytest.raises(
        DistiqError, match=r"prune\.structured: channel pruning .* is a Keras model .*structured: false"
    ):
        load_recipe(recipe)
    recipe["prune"]["structured"] = False  # magnitude pruning of a Keras student is a recipe stage
    assert load_recipe(recipe).prune.amount == 0.5


def test_the_command_line_distils_keras_files(digits_files, tmp_path, capsys):
    teacher, student = digits_files
    args = ["distill", "--teacher", str(teacher), "--student", str(student), "--data", "digits"]
    args += ["--epochs", "2", "--lr", "0.01", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    assert dq.load_model(tmp_path / "out" / "model.safetensors").keras_model.name == "student"
    bad = [
        "distill",
        "--teacher",
        str(tmp_path / "no.keras"),
        "--data",
        "digits",
        "--out",
        str(tmp_path / "b"),
    ]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("distiq: error: ") and "no.keras: Keras model file not found" in err[-1]


def test_the_command_line_quantizes_a_keras_file(digits_files, tmp_path):
    teacher, _ = digits_files
    out = tmp_path / "q"
    args = ["quantize", "--model", str(teacher), "--data", "digits", "--method", "minmax"]
    assert main([*args, "--calib-samples", "128", "--no-check", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    keras_acc = dq.evaluate(dq.models.create(str(teacher)), dq.data.load("digits", "test"))["accuracy"]
    assert report["accuracy"]["float"] == pytest.approx(keras_acc)  # the export is the Keras model
    assert report["accuracy"]["onnx"] >= keras_acc - 0.02
