"""Float fallback under an accuracy budget: nodes ranked by the accuracy each costs quantized alone,
the most sensitive kept float until the int8 file is within the budget on held-out data, all measured
in ONNX Runtime."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import distiq as dq
from distiq.onnx import report_path


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c3(torch.relu(self.c2(x))) + x)
        return self.fc(x.mean((2, 3)))


# 2-bit weights: coarse enough that quantizing everything costs several points
OPTIONS = {"method": "minmax", "bits": 2, "thin_conv_channels": 0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, stripes, train_briefly, export):
    torch.manual_seed(0)
    train, val, test = stripes(1024, seed=0), stripes(600, seed=7), stripes(600, seed=8)
    model = train_briefly(Net(), train)
    out = tmp_path_factory.mktemp("budget")
    path = export(model, out / "net.onnx", train.x[:2])
    calib = dq.data.subsample(train, 256, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the all-int8 starting point disagrees with float: expected
        int8 = dq.quantize_onnx(
            path, calib, out / "q.onnx", check_data=test, budget=0.01, val_data=val, **OPTIONS
        )
    return path, int8, json.loads(report_path(int8).read_text()), calib, val


def test_the_most_sensitive_nodes_go_float_until_the_budget_holds(setup):
    _, int8, report, _, val = setup
    mixed = report["mixed_precision"]
    first = mixed["steps"][0]
    assert first["float_layers"] == [] and mixed["float_accuracy"] - first["accuracy"] > 0.01
    assert mixed["met_budget"] and mixed["float_accuracy"] - mixed["accuracy"] <= 0.01
    ranked = [r["layer"] for r in mixed["sensitivity"]]
    assert sorted(ranked) == ["c1", "c2", "c3", "fc"]
    assert mixed["float_layers"] == ranked[: len(mixed["float_layers"])] and mixed["float_layers"]
    assert [s["float_layers"] for s in mixed["steps"]][-1] == mixed["float_layers"]
    # the file written is the one the search ended on
    assert dq.evaluate(str(int8), val)["accuracy"] == pytest.approx(mixed["accuracy"], abs=1e-9)
    quantized = {e["layer"] for e in report["layers"]}
    assert quantized == set(ranked) - set(mixed["float_layers"])


def test_budget_float_nodes_are_chosen_and_run_float_without_warnings(setup):
    _, _, report, _, _ = setup
    floats = {e["layer"]: e for e in report["float_nodes"]}
    after = {k["layer"]: k for k in report["deploy"]["after"]}
    for layer in report["mixed_precision"]["float_layers"]:
        assert floats[layer]["chosen"] and "accuracy budget" in floats[layer]["reason"]
        assert after[layer]["kernel"] == "float" and after[layer]["reason"].startswith("kept in float")
    assert not [w for w in report["deploy"]["warnings"] if "float kernel" in w]


def test_sensitivity_is_the_accuracy_of_that_node_alone(setup, tmp_path):
    """Checked through another road: the file with every other node skipped, evaluated afresh."""
    path, _, report, calib, val = setup
    top = report["mixed_precision"]["sensitivity"][0]
    others = [r["layer"] for r in report["mixed_precision"]["sensitivity"][1:]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = dq.quantize_onnx(path, calib, tmp_path / "alone.onnx", skip=others, **OPTIONS)
    assert dq.evaluate(str(alone), val)["accuracy"] == pytest.approx(top["accuracy"], abs=1e-9)
    float_acc = dq.evaluate(str(path), val)["accuracy"]
    assert top["drop"] == pytest.approx(float_acc - top["accuracy"], abs=1e-9) and top["drop"] > 0


def test_no_fallback_when_everything_already_fits(setup, tmp_path):
    path, _, _, calib, val = setup
    out = dq.quantize_onnx(path, calib, tmp_path / "q8.onnx", method="minmax", budget=0.05, val_data=val)
    mixed = json.loads(report_path(out).read_text())["mixed_precision"]
    assert mixed["float_layers"] == [] and mixed["sensitivity"] == [] and len(mixed["steps"]) == 1


def test_a_budget_needs_labelled_validation_data(setup, tmp_path):
    path, _, _, calib, val = setup
    with pytest.raises(dq.DistiqError, match="budget needs val_data"):
        dq.quantize_onnx(path, calib, tmp_path / "x.onnx", budget=0.01)
    with pytest.raises(dq.DistiqError, match="budget needs labelled val_data"):
        dq.quantize_onnx(path, calib, tmp_path / "x.onnx", budget=0.0, val_data=val.x, **OPTIONS)
