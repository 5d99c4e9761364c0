"""``distiq quantize --model FILE.onnx``: the ONNX branch of the command, through the real command line,
on a user's ``.npz`` data."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import distiq as dq
from distiq.cli.main import main


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def files(tmp_path_factory, stripes, train_briefly, export):
    out = tmp_path_factory.mktemp("cli")
    data = stripes(1200, seed=3)
    npz = out / "stripes.npz"
    np.savez(npz, x=data.x.numpy(), y=data.y.numpy())
    torch.manual_seed(0)
    model = train_briefly(SmallNet(), data)
    return export(model, out / "small.onnx", data.x[:2]), npz


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_quantize_an_onnx_file_from_the_command_line(files, tmp_path, capsys):
    model, npz = files
    out = tmp_path / "q"
    args = ["quantize", "--model", str(model), "--data", str(npz), "--out", str(out)]
    code, err = run(capsys, *args, "--calib-samples", "128", "--method", "percentile", "--no-check")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))
    assert report["quantization"]["config"]["method"] == "percentile"
    assert report["quantization"]["calibration_samples"] == 128
    assert report["accuracy_split"] == "validation"  # an .npz has no test split: held out of training
    acc = report["accuracy"]
    assert acc["float"] > 0.9 and abs(acc["onnx"] - acc["float"]) <= 0.01
    assert f"validation accuracy in ONNX Runtime on {report['deploy']['cpu']['model']}" in err
    assert f"{100 * acc['onnx']:.2f}%" in err
    # the kernels are judged against the file's own arithmetic, the quantization error apart
    deploy = report["deploy"]
    assert deploy["compared_with"] == "qdq-reference"
    assert (
        f"kernels agree with the file's own QDQ arithmetic on {100 * deploy['agreement']:.2f}% of top-1s, "
        f"with float on {100 * deploy['float_agreement']:.2f}%"
    ) in err
    kinds = {k["layer"]: k["runtime_op"] for k in report["deploy"]["after"]}
    assert kinds["features.2"] == "QLinearConv" and kinds["head"] == "QGemm"
    assert report["files"]["bytes"] < report["files"]["float_bytes"]
    assert report["deploy"]["latency"] == {}  # --no-check: no timing
    # the same validation split, evaluated afresh: the accuracy the report states
    _, val = dq.data.split(dq.data.load_npz(npz), 0.1, seed=0)
    assert report["deploy"]["samples"] == len(val)
    assert dq.evaluate(str(out / "model.onnx"), val)["accuracy"] == pytest.approx(
        acc["onnx"], abs=1 / len(val)
    )


def test_dynamic_mode_from_the_command_line(files, tmp_path, capsys):
    model, npz = files
    out = tmp_path / "d"
    code, err = run(capsys, "quantize", "--model", str(model), "--data", str(npz), "--mode", "dynamic",
                    "--no-check", "--out", str(out))  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert {k["layer"]: k["runtime_op"] for k in report["deploy"]["after"]}["head"] == "DynamicQuantizeMatMul"
    assert "warning: quantize_onnx: features.0 (Conv) stays float: dynamic mode" in err


def test_budget_from_the_command_line_is_tuned_on_the_validation_split(files, tmp_path, capsys):
    model, npz = files
    out = tmp_path / "b"
    code, err = run(capsys, "quantize", "--model", str(model), "--data", str(npz), "--bits", "2",
                    "--budget", "0.01", "--no-check", "--out", str(out))  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    mixed = report["mixed_precision"]
    assert mixed["tuned_on"] == "validation split (120 samples held out of the training data)"
    assert mixed["steps"][0]["accuracy"] < mixed["float_accuracy"] - 0.01  # 2 bits: the search had work
    assert mixed["met_budget"] and mixed["float_accuracy"] - mixed["accuracy"] <= 0.01
    assert report["accuracy_split"] == "validation (the budget was tuned on it too: no test split)"
    by_budget = [e["layer"] for e in report["quantization"]["float_nodes"] if "budget" in e["reason"]]
    assert by_budget == mixed["float_layers"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--mode", "qat"], "mode must be one of static, dynamic, got 'qat'"),
        (["--calib-samples", "0"], "calib_samples"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, extra, needle):
    model, npz = files
    code, err = run(
        capsys, "quantize", "--model", str(model), "--data", str(npz), "--out", str(tmp_path), *extra
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("distiq: error: ") and needle in err


def test_data_that_does_not_fit_the_model_exits_2(files, tmp_path, capsys):
    model, _ = files
    grey = tmp_path / "grey.npz"
    np.savez(grey, x=np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32), y=np.arange(64) % 4)
    code, err = run(
        capsys, "quantize", "--model", str(model), "--data", str(grey), "--out", str(tmp_path / "q")
    )
    assert code == 2 and err.count("\n") == 1
    assert (
        "calib_data: batch 0 has shape [56, 1, 8, 8] for input 'x'; the model expects [N, 3, 12, 12]" in err
    )


class TwoLinearNet(nn.Module):
    """A conv, then a hidden Linear whose output a float ReLU reads: where ``--matmul-outputs`` shows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.hidden = nn.Linear(16, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(torch.relu(self.conv(x)).mean((2, 3)))))


@pytest.mark.parametrize("outputs", ["int8", "float"])
def test_smooth_quant_and_matmul_outputs_from_the_command_line(
    tmp_path, capsys, stripes, train_briefly, export, outputs
):
    data = stripes(1200, seed=3)
    npz = tmp_path / "stripes.npz"
    np.savez(npz, x=data.x.numpy(), y=data.y.numpy())
    torch.manual_seed(0)
    model = export(train_briefly(TwoLinearNet(), data), tmp_path / "two.onnx", data.x[:2])
    out = tmp_path / "sq"
    code, err = run(capsys, "quantize", "--model", str(model), "--data", str(npz), "--smooth-quant", "0.5",
                    "--matmul-outputs", outputs, "--no-check", "--out", str(out))  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["quantization"]["smoothing"]["alpha"] == 0.5
    graph = onnx.load(str(out / "model.onnx")).graph
    gemms = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    hidden = next(n for n in gemms if n.output[0] not in {o.name for o in graph.output})
    relu = next(n for n in graph.node if n.input[:1] == [hidden.output[0]])  # the ReLU fused onto it
    read = {i for n in graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    gridded = hidden.output[0] in read or relu.output[0] in read
    assert gridded == (outputs == "int8")
    acc = report["accuracy"]
    assert abs(acc["onnx"] - acc["float"]) <= 0.02


def test_smooth_quant_of_a_torch_weights_file_exits_2(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    dq.save_weights(dq.models.create("mlp", num_classes=4, in_channels=1, image_size=8), weights)
    code, err = run(capsys, "quantize", "--model", str(weights), "--data", "digits", "--smooth-quant", "0.5",
                    "--out", str(tmp_path / "q"))  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "--smooth-quant and --matmul-outputs take an .onnx model" in err
