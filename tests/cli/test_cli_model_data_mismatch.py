"""A model made for other data than the user gives (another class count, another input shape) is
refused before any work: exit 2, one stderr line naming the file (issue 9, problems 4 and 5)."""

from __future__ import annotations

import json

import pytest
import torch

import distiq as dq
from distiq.cli.main import main
from distiq.errors import DataError
from distiq.evaluate import check_fits
from distiq.evaluate.latency import export_for_timing, measure_latency
from distiq.quant.deploy import onnx_outputs


def save(tmp_path, name: str, **sizes) -> str:
    torch.manual_seed(0)
    model = dq.models.create("mlp", hidden=(16,), **sizes)
    return str(dq.save_weights(model, tmp_path / name))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weights and ONNX files: one fitting the digits ([1, 8, 8], 10 classes) and three that do not."""
    tmp = tmp_path_factory.mktemp("models")
    out = {
        "fits": save(tmp, "fits.safetensors", num_classes=10, image_size=8),
        "three": save(tmp, "three.safetensors", num_classes=3, image_size=8),
        "big": save(tmp, "big.safetensors", num_classes=10, image_size=28),
    }
    for name, classes, size in (("big_onnx", 10, 28), ("three_onnx", 3, 8)):
        model = dq.models.create("mlp", num_classes=classes, image_size=size, hidden=(16,))
        out[name] = str(export_for_timing(model, (1, size, size), tmp / f"{name}.onnx"))
    return out


def refused(capsys, args: list[str]) -> str:
    code = main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert "internal error" not in lines[0]
    return lines[0]


# --- evaluate -----------------------------------------------------------------------------------


def test_evaluate_refuses_weights_of_another_class_count(capsys, files):
    line = refused(capsys, ["evaluate", "--model", files["three"], "--data", "digits"])
    assert files["three"] in line and "predicts 3 classes" in line and "has 10" in line


def test_evaluate_refuses_weights_made_for_another_input_shape(capsys, files):
    line = refused(capsys, ["evaluate", "--model", files["big"], "--data", "digits"])
    assert files["big"] in line and "[1, 28, 28]" in line and "[1, 8, 8]" in line


def test_evaluate_refuses_an_onnx_file_of_another_input_shape(capsys, files):
    line = refused(capsys, ["evaluate", "--model", files["big_onnx"], "--data", "digits"])
    assert files["big_onnx"] in line and "inputs [1, 8, 8]" in line and "28, 28]" in line


def test_evaluate_refuses_an_onnx_file_of_another_class_count(capsys, files):
    line = refused(capsys, ["evaluate", "--model", files["three_onnx"], "--data", "digits"])
    assert files["three_onnx"] in line and "predicts 3 classes" in line


def test_evaluate_still_scores_a_model_that_fits(capsys, files):
    assert main(["evaluate", "--model", files["fits"], "--data", "digits"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = dq.evaluate(dq.load_model(files["fits"]), dq.data.load("digits", "test"))
    assert result == pytest.approx(expected)


# --- distill and quantize: refused before any training or calibration ------------------------


@pytest.mark.parametrize("teacher, expected", [("three", "predicts 3 classes"), ("big", "[1, 28, 28]")])
def test_distill_refuses_a_teacher_made_for_other_data(capsys, tmp_path, files, teacher, expected):
    out = tmp_path / "out"
    args = ["distill", "--teacher", files[teacher], "--data", "digits", "--epochs", "1", "--out", str(out)]
    line = refused(capsys, args)
    assert files[teacher] in line and expected in line
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint").exists()


@pytest.mark.parametrize("model, expected", [("three", "predicts 3 classes"), ("big", "[1, 28, 28]")])
def test_quantize_refuses_a_model_made_for_other_data(capsys, tmp_path, files, model, expected):
    out = tmp_path / "out"
    line = refused(capsys, ["quantize", "--model", files[model], "--data", "digits", "--out", str(out)])
    assert files[model] in line and expected in line
    assert not (out / "model.onnx").exists()


# --- the check itself, and the other places ONNX files run on data ---------------------------


def test_check_fits_accepts_a_fitting_module_and_names_the_source_otherwise(files):
    digits = dq.data.load("digits", "test")
    check_fits(dq.load_model(files["fits"]), digits, "fits.safetensors")  # no error
    with pytest.raises(DataError, match=r"^teacher\.safetensors: the model predicts 3 classes .*digits:test"):
        check_fits(dq.load_model(files["three"]), digits, "teacher.safetensors")


def test_latency_of_an_onnx_file_on_other_inputs_is_one_line(files):
    with pytest.raises(
        DataError, match=r"big_onnx\.onnx: ONNX Runtime cannot run it on inputs \[1, 8, 8\]"
    ) as e:
        measure_latency(files["big_onnx"], (1, 8, 8), batch_sizes=(1,), warmup=0, runs=1)
    assert "\n" not in str(e.value)


def test_deploy_onnx_outputs_on_other_inputs_is_one_line(files):
    x = dq.data.load("digits", "test").x[:4]
    with pytest.raises(
        DataError, match=r"big_onnx\.onnx: ONNX Runtime cannot run it on inputs \[1, 8, 8\]"
    ) as e:
        onnx_outputs(files["big_onnx"], x)
    assert "\n" not in str(e.value)
