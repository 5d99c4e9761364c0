"""One declaration per stage: the Python API, the command line and the recipe take the same spec, with
the same names and defaults, and the same options give the same int8 file."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import distiq as dq
from distiq.cli.main import main
from distiq.distill.spec import DistillSpec
from distiq.engine.config import TrainSpec
from distiq.pipeline.recipe import DistillStageSpec, QuantizeStageSpec, TeacherSpec
from distiq.quant.spec import QuantizeSpec


def _help_defaults(capsys, command: str) -> dict[str, str]:
    """``--flag`` -> the ``[default: X]`` its help shows."""
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    return dict(
        re.findall(r"(--[a-z0-9-]+)(?: --no-[a-z0-9-]+)? <[^>]+> .*?\[default: (\[\]|[^\]]*)\]", text)
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value) -> str:
    return "none" if value is None else str(value)


@pytest.fixture(autouse=True)
def _wide_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one option per line: no wrapped help text to parse


def test_quantize_help_lists_the_recipe_section_names_and_defaults(capsys):
    shown = _help_defaults(capsys, "quantize")
    section = QuantizeStageSpec()
    sections = ("method_options", "qat", "adaround")
    shared = [n for n in QuantizeSpec.model_fields if n not in sections] + ["calib_samples"]
    for name in shared:
        declared = QuantizeStageSpec.model_fields[name].get_default(call_default_factory=True)
        assert shown[_flag(name)] == _shown(declared), name
    for name in TrainSpec.model_fields:  # the QAT section, flattened as --qat-<field>
        assert shown[_flag(f"qat_{name}")] == _shown(getattr(section.qat, name)), name
    assert section.qat.epochs == 2 and section.qat.lr == 1e-4  # its own defaults, not TrainSpec's
    for name, info in type(section.adaround).model_fields.items():  # AdaRound's, as --adaround-<field>
        assert shown[_flag(f"adaround_{name}")] == _shown(info.default), name


def test_training_commands_show_the_train_section_defaults(capsys):
    for command in ("train", "distill"):
        shown = _help_defaults(capsys, command)
        for name, info in TrainSpec.model_fields.items():
            assert shown[_flag(name)] == _shown(info.default), (command, name)
    assert TeacherSpec().train == TrainSpec() == DistillStageSpec().train  # one set of defaults


def test_distill_help_lists_the_recipe_section_names_and_defaults(capsys):
    shown = _help_defaults(capsys, "distill")
    for name, info in DistillSpec.model_fields.items():
        if name in ("student_options", "loss_options", "features"):
            continue  # mappings: set in the --config file, as in the recipe
        assert shown[_flag(name)] == _shown(info.get_default(call_default_factory=True)), name
    assert set(DistillSpec.model_fields) < set(DistillStageSpec.model_fields)


def test_dq_quantize_takes_the_spec_or_the_keywords_that_build_it():
    torch.manual_seed(0)
    model = dq.models.create("mlp", image_size=8, hidden=(16,)).eval()
    calib = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = dq.quantize(model, calib, dq.QuantizeSpec(method="minmax", bits=6))
    b = dq.quantize(model, calib, method="minmax", bits=6)
    assert a.quant_report.config == b.quant_report.config
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    with pytest.raises(dq.DistiqError, match="bits"):
        dq.quantize(model, calib, bits=9)
    with pytest.raises(dq.DistiqError, match="epochs"):
        dq.quantize(model, calib, epochs=3)  # a training option outside QAT


def _weights(path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_cli_quantize_and_a_one_stage_recipe_give_the_same_int8_file(tmp_path, capsys):
    torch.manual_seed(0)
    model = dq.models.create("lenet5", image_size=8)
    dq.train(model, dq.data.load("digits", "train"), epochs=1, lr=3e-3, batch_size=64, progress=False)
    weights = dq.save_weights(model, tmp_path / "teacher.safetensors")
    options = {"method": "minmax", "calib_samples": 64}
    cli = [
        "quantize",
        "--model",
        str(weights),
        "--data",
        "digits",
        "--no-check",
        "--out",
        str(tmp_path / "q"),
    ]
    assert main([*cli, "--method", "minmax", "--calib-samples", "64"]) == 0, capsys.readouterr().err
    recipe = {
        "name": "one-stage",
        "data": {"name": "digits"},
        "teacher": {"weights": str(weights)},
        "quantize": {**options, "sensitivity": False, "calib_repeats": 0},
        "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
        "report": False,
    }
    result = dq.run(recipe, tmp_path / "runs")
    from_cli, from_recipe = (
        _weights(tmp_path / "q" / "model.onnx"),
        _weights(result.run_dir / result.stage("quantize").artifacts["onnx"]),
    )
    assert from_cli.keys() == from_recipe.keys()
    for name, value in from_cli.items():
        assert np.array_equal(value, from_recipe[name]), name
    cli_accuracy = json.loads((tmp_path / "q" / "report.json").read_text())["accuracy"]["onnx"]
    assert cli_accuracy == result.stage("quantize").metrics["accuracy"]  # ORT on the test split, both


def test_prune_help_and_api_share_the_recipe_section_defaults(capsys):
    import inspect

    from distiq.prune.spec import PruneSpec
    from distiq.prune.structured import prune_channels_

    shown = _help_defaults(capsys, "prune")
    for name, info in PruneSpec.model_fields.items():
        assert shown[_flag(name)] == _shown(info.get_default(call_default_factory=True)), name
    for fn in (dq.prune, prune_channels_):  # the structured pruner once defaulted to "layer"
        assert inspect.signature(fn).parameters["scope"].default == PruneSpec().scope
