"""AdaRound: the rectified sigmoid and its regulariser by hand, learned rounding on tiny layers
(never worse than nearest, strictly better where rounding matters, hard 0/1 and within one grid step),
static and weight-only modes, the spec's checks, and ``distiq quantize --rounding adaround``."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import distiq as dq
from distiq.cli.main import main
from distiq.errors import DistiqError
from distiq.quant import QuantizeSpec, quantize
from distiq.quant.adaround import (
    AdaRoundSpec,
    AdaRoundWeightQuant,
    beta_at,
    init_v,
    rectified_sigmoid,
    rounding_regularizer,
)

QUIET = {"progress": False}


def test_rectified_sigmoid_starts_at_the_fraction_and_reaches_0_and_1():
    frac = torch.tensor([0.0, 0.1, 0.5, 0.75, 0.999])
    assert torch.allclose(rectified_sigmoid(init_v(frac)), frac, atol=1e-6)
    # sigmoid(v) * 1.2 - 0.1, clamped: 0 and 1 are reached at finite V (sigmoid = 1/12 and 11/12)
    ends = rectified_sigmoid(torch.tensor([-3.0, 0.0, 3.0]))
    assert ends[0] == 0 and ends[2] == 1 and abs(float(ends[1]) - 0.5) < 1e-7


def test_regulariser_and_beta_schedule_by_hand():
    h = torch.tensor([0.0, 1.0, 0.5, 0.25])
    # 1 - |2h - 1|^2: 0, 0, 1, 1 - 0.25
    assert float(rounding_regularizer(h, 2.0)) == pytest.approx(0 + 0 + 1 + 0.75)
    spec = AdaRoundSpec(iters=101, warmup=0.2, beta_start=20, beta_end=2)
    assert beta_at(0, spec) is None and beta_at(19, spec) is None  # warm-up: no regulariser
    assert beta_at(20, spec) == pytest.approx(20) and beta_at(100, spec) == pytest.approx(2)
    assert beta_at(60, spec) == pytest.approx(11)  # halfway between 20 and 2


def _linear_case(bits: int = 3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 6)).eval()
    x = torch.randn(256, 24) @ torch.randn(24, 24)  # correlated inputs: weight errors add up in W x
    return model, x


def _output_error(qmodel, model, x) -> float:
    with torch.no_grad():
        return float(((qmodel(x) - model(x)) ** 2).sum(1).mean())


def test_adaround_beats_nearest_on_a_linear_layer_and_stays_one_step_away():
    model, x = _linear_case()
    opts = dict(mode="weight-only", bits=3, weight_method="minmax")
    nearest = quantize(model, x, **opts)
    ada = quantize(model, x, rounding="adaround", adaround={"iters": 400, **QUIET}, **opts)
    e_near, e_ada = _output_error(nearest, model, x), _output_error(ada, model, x)
    assert e_ada < 0.8 * e_near  # the learned rounding reconstructs the layer's output clearly better

    layer = ada[0]
    wq = layer.weight_quant
    assert isinstance(wq, AdaRoundWeightQuant)
    assert set(torch.unique(wq.rounding).tolist()) <= {0, 1}  # hard decisions, nothing in between
    w, s = layer.weight.detach(), wq.scale.reshape(-1, 1)
    q = wq.integers(w)
    nearest_q = torch.clamp(torch.round(w / s), -3, 3)  # the 3-bit grid, by hand
    assert (q - nearest_q).abs().max() <= 1  # within one grid step of nearest
    assert ((q == torch.floor(w / s)) | (q == torch.floor(w / s) + 1) | (q.abs() == 3)).all()
    assert (q != nearest_q).any()  # it did change something
    with torch.no_grad():  # the simulated weight is exactly the integers times the scale
        assert torch.equal(wq(w), q * s)

    (record,) = ada.quant_report.rounding
    assert record["layer"] == "0" and record["error_adaround"] < record["error_nearest"]
    assert 0 < record["changed"] < 0.5


def test_adaround_in_static_mode_lowers_every_layer_error(capsys):
    train = dq.data.load("digits", "train")
    torch.manual_seed(0)
    model = dq.models.create("lenet5", image_size=8)
    dq.train(model, train, epochs=2, lr=3e-3, batch_size=64, progress=False)
    model.eval()
    x = dq.data.as_arrays(train).x[:256]
    opts = dict(bits=3, method="minmax", thin_conv_channels=0)
    nearest = quantize(model, x, **opts)
    ada = quantize(model, x, rounding="adaround", adaround={"iters": 150}, **opts)
    records = ada.quant_report.rounding
    assert [r["layer"] for r in records] == [
        "features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2", "classifier.fc3",
    ]  # fmt: skip
    assert all(r["error_adaround"] <= r["error_nearest"] for r in records)
    assert _output_error(ada, model, x) < _output_error(nearest, model, x)
    err = capsys.readouterr().err  # one progress line per layer, with its error before and after
    assert err.count("adaround ") == 5 and "features.conv2: output error" in err
    assert all(entry["rounding"] == "adaround" for entry in ada.quant_report.layers)


def test_one_shot_iterator_is_still_fully_calibrated():
    model, x = _linear_case()
    model = nn.Sequential(model[0], nn.ReLU(), nn.Linear(6, 3)).eval()
    batches = iter([x[i : i + 32] for i in range(0, 256, 32)])
    q = quantize(
        model,
        batches,
        bits=4,
        method="minmax",
        rounding="adaround",
        adaround={"iters": 20, "samples": 64, **QUIET},
    )
    assert q.quant_report.calibration_samples == 256 and len(q.quant_report.rounding) == 2


def test_spec_checks():
    with pytest.raises(DistiqError, match="post-training"):
        QuantizeSpec.build(mode="qat", rounding="adaround")
    with pytest.raises(DistiqError, match="rounding"):
        QuantizeSpec.build(rounding="stochastic")
    with pytest.raises(DistiqError, match="beta_end"):
        QuantizeSpec.build(rounding="adaround", adaround={"beta_start": 2, "beta_end": 20})
    model, x = _linear_case()
    with pytest.raises(DistiqError, match="needs calib_data"):
        quantize(model, mode="weight-only", rounding="adaround", example_input=x[:2])


def test_cli_rounding_adaround_end_to_end(tmp_path, capsys):
    torch.manual_seed(0)
    model = dq.models.create("lenet5", image_size=8)
    dq.train(model, dq.data.load("digits", "train"), epochs=2, lr=3e-3, batch_size=64, progress=False)
    weights = dq.save_weights(model, tmp_path / "model.safetensors")
    out = tmp_path / "q"
    args = ["quantize", "--model", str(weights), "--data", "digits", "--calib-samples", "128", "--bits", "4"]
    args += ["--rounding", "adaround", "--adaround-iters", "60", "--calib-repeats", "0", "--no-sensitivity"]
    assert main([*args, "--no-check", "--out", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    quant = report["quantization"]
    assert quant["config"]["rounding"] == "adaround" and quant["config"]["adaround"]["iters"] == 60
    assert {r["layer"] for r in quant["rounding"]} == {
        "features.conv2",
        "classifier.fc1",
        "classifier.fc2",
        "classifier.fc3",
    }
    acc = report["accuracy"]
    assert abs(acc["onnx"] - acc["simulated"]) <= 0.01 and report["deploy"]["agreement"] >= 0.99
    proto = onnx.load(str(out / "model.onnx"))
    four = [i for i in proto.graph.initializer if i.name.endswith(".weight_int4")]
    assert len(four) == 4 and all(i.data_type == onnx.TensorProto.INT4 for i in four)
    assert all(np.abs(numpy_helper.to_array(i).astype(np.int8)).max() <= 7 for i in four)


def test_budget_search_tries_adaround_as_a_candidate(tmp_path):
    from distiq import pipeline

    recipe = {
        "name": "search-rounding",
        "data": {"name": "digits", "subsample": 400},
        "teacher": {"model": "mlp", "model_options": {"hidden": [32]}, "train": {"epochs": 3, "lr": 0.01}},
        "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
        "budget": {
            "max_accuracy_drop": 50.0,
            "search": {
                "methods": ["minmax"],
                "bits": [3],
                "float_fallback": [0],
                "rounding": ["nearest", "adaround"],
            },
        },
        "report": False,
    }
    pipeline.run(recipe, tmp_path)
    trials = json.loads((tmp_path / "run.json").read_text())["search"]["trials"]
    assert [t["params"]["rounding"] for t in trials] == ["nearest", "adaround"]
    assert trials[0]["size_bytes"] == trials[1]["size_bytes"]  # same format: the tie goes to accuracy
    (chosen,) = [t for t in trials if t["chosen"]]
    assert chosen["val_accuracy"] == max(t["val_accuracy"] for t in trials)
