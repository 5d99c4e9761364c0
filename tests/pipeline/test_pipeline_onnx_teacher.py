"""A recipe whose teacher is only an ONNX file, written by plain torch code distiq never saw."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import distiq as dq
from distiq.errors import DistiqError

QUIET = {"latency": False, "robustness": False, "bootstrap": 0}


@pytest.fixture(scope="module")
def teacher_onnx(tmp_path_factory):
    """A small CNN trained by hand on digits and exported with torch.onnx (not distiq's exporter)."""
    torch.manual_seed(0)
    train = dq.data.load("digits", "train")
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(15):
        for i in torch.randperm(len(train)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(train.x[i]), train.y[i]).backward()
            opt.step()
    path = tmp_path_factory.mktemp("elsewhere") / "teacher.onnx"
    torch.onnx.export(
        net.eval(), (train.x[:2],), str(path), input_names=["pixels"], output_names=["scores"],
        dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    return path


def test_an_onnx_teacher_is_distilled_and_quantized(teacher_onnx, tmp_path):
    recipe = {
        "name": "onnx-teacher",
        "data": {"name": "digits"},
        "teacher": {"weights": str(teacher_onnx)},
        "distill": {
            "student": "mlp",
            "student_options": {"hidden": [64]},
            "train": {"epochs": 8, "lr": 0.01},
        },
        "quantize": {"method": "minmax", "calib_samples": 128, "sensitivity": False, "calib_repeats": 0},
        "evaluate": QUIET,
        "report": False,
    }
    result = dq.run(recipe, tmp_path / "run")
    test = dq.data.load("digits", "test")
    teacher_acc = dq.evaluate(teacher_onnx, test)["accuracy"]
    assert teacher_acc > 0.85
    assert result.stage("teacher").metrics["accuracy"] == pytest.approx(teacher_acc)  # ORT's number
    assert result.stage("distill").metrics["accuracy"] > 0.8
    assert result.stage("distill").metrics["agreement_with_teacher"] > 0.8
    assert result.stage("quantize").quant["integer_nodes"]  # the student runs integer kernels
    again = dq.run(recipe, tmp_path / "run")
    assert [s.skipped for s in again.stages] == [True, True, True]
    assert again.stage("distill").metrics["accuracy"] == result.stage("distill").metrics["accuracy"]


def test_an_onnx_teacher_alone_is_quantized_as_an_onnx_file(teacher_onnx, tmp_path):
    recipe = {
        "name": "onnx-int8",
        "data": {"name": "digits"},
        "teacher": {"weights": str(teacher_onnx)},
        "quantize": {"method": "minmax", "calib_samples": 256, "calib_repeats": 0},
        "evaluate": QUIET,
        "report": False,
    }
    result = dq.run(recipe, tmp_path / "run")
    stage = result.stage("quantize")
    int8 = result.run_dir / stage.artifacts["onnx"]
    assert stage.metrics["accuracy"] == pytest.approx(
        dq.evaluate(int8, dq.data.load("digits", "test"))["accuracy"]
    )
    assert abs(stage.metrics["accuracy"] - result.stage("teacher").metrics["accuracy"]) <= 0.02
    runs = " ".join(stage.quant["integer_nodes"])
    assert "QLinearConv" in runs and "QGemm" in runs  # the 16-channel conv and the classifier
    assert stage.quant["layers"] and stage.quant["deploy"]["accuracy"]["onnx"] == pytest.approx(
        stage.metrics["accuracy"]
    )


def test_what_an_onnx_teacher_cannot_do_is_refused_in_one_line(teacher_onnx, tmp_path):
    recipe = {
        "name": "bad",
        "data": {"name": "digits"},
        "teacher": {"weights": str(teacher_onnx)},
        "prune": {"amount": 0.5},
        "evaluate": QUIET | {"attribution": {"samples": 4}},
        "report": False,
    }
    with pytest.raises(DistiqError) as e:
        dq.run(recipe, tmp_path / "run")
    message = str(e.value)
    assert "\n" not in message
    assert "prune: the teacher is an ONNX file; distill it into a PyTorch student first" in message
    assert "evaluate.attribution: the teacher is an ONNX file" in message
    assert not (tmp_path / "run" / "stages").exists()
