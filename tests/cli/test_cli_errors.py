"""A misspelt registered name on the command line: exit code 2 and one stderr line naming it."""

from __future__ import annotations

import pytest
import torch
import yaml

import distiq as dq
from distiq.cli.main import main


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Untrained tiny weights: every command here must fail on its input before any training."""
    torch.manual_seed(0)
    model = dq.models.create("mlp", image_size=8, hidden=[16])
    return str(dq.save_weights(model, tmp_path_factory.mktemp("w") / "model.safetensors"))


def one_error_line(capsys, args: list[str]) -> str:
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "internal error" not in lines[0]
    return lines[0]


def test_misspelt_loss(capsys, tmp_path, weights):
    args = ["distill", "--teacher", weights, "--data", "digits", "--loss", "kdd", "--epochs", "1"]
    line = one_error_line(capsys, [*args, "--out", str(tmp_path)])
    assert "'kdd'" in line and "did you mean 'kd'" in line and "distillation loss" in line
    assert not (tmp_path / "model.safetensors").exists()


def test_misspelt_calibrator(capsys, tmp_path, weights):
    args = ["quantize", "--model", weights, "--data", "digits", "--method", "klx", "--no-check"]
    line = one_error_line(capsys, [*args, "--out", str(tmp_path)])
    assert "'klx'" in line and "calibrator" in line
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_misspelt_dataset(capsys, tmp_path, weights, command):
    extra = ["--model", weights] if command == "evaluate" else ["--model", "mlp", "--out", str(tmp_path)]
    line = one_error_line(capsys, [command, "--data", "digitz", *extra])
    assert "'digitz'" in line and "did you mean 'digits'" in line


def test_missing_npz_file(capsys, tmp_path, weights):
    missing = tmp_path / "nope.npz"
    line = one_error_line(capsys, ["evaluate", "--model", weights, "--data", str(missing)])
    assert str(missing) in line


def test_misspelt_metric(capsys, weights):
    line = one_error_line(
        capsys, ["evaluate", "--model", weights, "--data", "digits", "--metrics", "acuracy"]
    )
    assert "'acuracy'" in line and "did you mean 'accuracy'" in line and "metric" in line


def test_misspelt_loss_in_a_recipe_fails_before_the_teacher_trains(capsys, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    teacher = {"model": "mlp", "model_options": {"hidden": [16]}, "train": {"epochs": 50}}
    recipe.write_text(
        yaml.safe_dump({"data": {"name": "digits"}, "teacher": teacher, "distill": {"loss": "kdd"}})
    )
    line = one_error_line(capsys, ["run", str(recipe), "--out", str(tmp_path / "run")])
    assert "distill.loss" in line and "'kdd'" in line and "did you mean 'kd'" in line
    assert not (tmp_path / "run").exists()  # nothing ran: the recipe was refused when it loaded
