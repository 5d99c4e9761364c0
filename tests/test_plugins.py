"""The user's extensions: registered with ``dq.register`` in their own file, named in a recipe through
``plugins:`` or on the command line through ``--plugin``."""

from __future__ import annotations

import json

import onnx
import pytest
import yaml
from onnx import numpy_helper

import distiq as dq
from distiq.cli.main import main

PLUGIN = '''
from pathlib import Path

import distiq as dq
from distiq.distill.logits import LogitLoss
from distiq.quant.observers import MinMaxCalibrator

CALLS = Path(__file__).with_suffix(".calls")


@dq.register("loss", "scaled-mse")
class ScaledMSE(LogitLoss):
    def __init__(self, temperature=4.0, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, student_logits, teacher_logits, target):
        with CALLS.open("a") as f:
            f.write("x")
        return self.scale * ((student_logits - teacher_logits.detach()) ** 2).mean()


@dq.register("calibrator", "half-minmax")
class HalfMinMax(MinMaxCalibrator):
    """The min-max range halved: a calibrator whose effect on the file is plain to see."""

    def _range(self):
        lo, hi = super()._range()
        return lo / 2, hi / 2
'''


@pytest.fixture(autouse=True)
def _fresh_registries():
    """Each test's plugin file registers the same names: forget them afterwards, as a new process would."""
    saved = {kind: dict(reg._items) for kind, reg in dq.plugins.registries().items()}
    yield
    for kind, reg in dq.plugins.registries().items():
        reg._items.clear()
        reg._items.update(saved[kind])


def _recipe(tmp_path, **changes) -> dict:
    recipe = {
        "name": "plugged",
        "plugins": ["my_losses.py"],
        "data": {"name": "digits", "subsample": 300},
        "teacher": {"model": "mlp", "model_options": {"hidden": [32]}, "train": {"epochs": 1, "lr": 0.01}},
        "distill": {
            "student": "mlp",
            "student_options": {"hidden": [16]},
            "loss": "scaled-mse",
            "loss_options": {"scale": 2.0},
            "train": {"epochs": 1, "lr": 0.01},
        },
        "quantize": {"method": "half-minmax", "calib_samples": 64, "sensitivity": False, "calib_repeats": 0},
        "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
        "report": False,
    }
    for section, value in changes.items():
        recipe[section] = {**(recipe.get(section) or {}), **value} if isinstance(value, dict) else value
    return recipe


def _write(tmp_path, recipe: dict, plugin: str = PLUGIN):
    (tmp_path / "my_losses.py").write_text(plugin)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _input_scale(path) -> float:
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    first = next(n for n in graph.node if n.op_type == "QuantizeLinear")  # the model input's grid
    return float(inits[first.input[1]])


def test_a_recipe_uses_a_loss_and_a_calibrator_registered_in_its_plugin_file(tmp_path):
    path = _write(tmp_path, _recipe(tmp_path))
    result = dq.run(path, tmp_path / "run")
    assert len((tmp_path / "my_losses.calls").read_text()) >= 1  # the plugin's loss really trained
    quant = result.stage("quantize")
    assert quant.extra["quant_report"]["config"]["method"] == "half-minmax"
    # digits pixels span [0, 1]: min-max gives the input grid 1/255, the plugin's halved range 0.5/255
    assert _input_scale(result.run_dir / quant.artifacts["onnx"]) == pytest.approx(0.5 / 255, rel=1e-4)


def test_plugin_from_the_command_line(tmp_path, capsys):
    recipe = _recipe(tmp_path, quantize=None)
    del recipe["plugins"]
    path = _write(tmp_path, recipe)
    plugin = str(tmp_path / "my_losses.py")
    code = main(["--plugin", plugin, "run", str(path), "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "my_losses.calls").exists()


@pytest.mark.parametrize(
    ("section", "change", "known"),
    [
        ("distill", {"loss": "scaled-mes"}, "scaled-mse"),
        ("quantize", {"method": "half-minmx"}, "half-minmax"),
        ("distill", {"features": [{"kind": "hints", "student": "net.1", "teacher": "net.1"}]}, "hint"),
        ("prune", {"structured": True, "amount": 0.5, "importance": "l3"}, "l2"),
    ],
)
def test_a_misspelt_name_is_one_line_listing_the_known_ones(tmp_path, capsys, section, change, known):
    path = _write(tmp_path, _recipe(tmp_path, **{section: change}))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "known:" in line and known in line


def test_a_broken_plugin_is_named_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, _recipe(tmp_path), plugin="def broken(:\n")
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "my_losses.py" in line and "SyntaxError" in line


def test_register_refuses_an_unknown_kind():
    with pytest.raises(dq.DistiqError, match="known: model, loss, feature"):
        dq.register("optimizer")
    assert json.dumps(sorted(dq.plugins.registries()))  # every kind is a plain name
