"""``distiq quantize`` and ``distiq export``: files, report, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

import distiq as dq
from distiq.cli.main import main


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is faster, and on a shared machine far steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = dq.models.create("lenet5", image_size=8)
    dq.train(model, dq.data.load("digits", "train"), epochs=2, lr=3e-3, batch_size=64, progress=False)
    return dq.save_weights(model, tmp_path_factory.mktemp("w") / "model.safetensors")


def test_quantize_writes_onnx_and_report(weights, tmp_path, capsys):
    out = tmp_path / "q"
    args = ["quantize", "--model", str(weights), "--data", "digits", "--calib-samples", "64"]
    code = main([*args, "--method", "minmax", "--no-check", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["quantization"]["config"]["method"] == "minmax"
    assert report["quantization"]["calibration_samples"] == 64
    acc = report["accuracy"]
    assert abs(acc["onnx"] - acc["simulated"]) <= 0.01 and abs(acc["simulated"] - acc["float"]) <= 0.05
    assert [e["layer"] for e in report["layer_errors"]][0] == "features.conv2"
    (first,) = report["quantization"]["float_layers"]  # 1 input channel: int8 would be slower in ORT
    assert first["layer"] == "features.conv1" and first["chosen"] and "1 input channel" in first["reason"]
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))
    assert report["files"]["bytes"] < report["files"]["float_bytes"]


def test_quantize_help_lists_the_options(capsys):
    assert main(["quantize", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--mode", "--method", "--bits", "--per-channel", "--calib-samples", "--budget", "--skip"):
        assert option in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--mode", "int3"], "mode"), (["--method", "nope"], "nope"), (["--bits", "9"], "bits")],
)
def test_bad_quantize_options_exit_2_with_one_line(weights, tmp_path, capsys, args, needle):
    code = main(["quantize", "--model", str(weights), "--data", "digits", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err


def test_export_command(weights, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert main(["export", "--model", str(weights), "--out", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["onnx"] == str(path) and path.stat().st_size == result["bytes"]
    assert {k["kernel"] for k in result["kernels"]} == {"float"}


def test_mixed_precision_is_tuned_on_validation_never_test(weights, tmp_path, monkeypatch):
    import distiq.pipeline.compress as compress

    seen = {}
    real = compress.mixed_precision

    def recording(model, calib, eval_data, **options):
        seen["eval"] = eval_data
        return real(model, calib, eval_data, **options)

    monkeypatch.setattr(compress, "mixed_precision", recording)
    out = tmp_path / "mp"
    args = ["quantize", "--model", str(weights), "--data", "digits", "--calib-samples", "64"]
    assert main([*args, "--method", "minmax", "--budget", "0.01", "--no-check", "--out", str(out)]) == 0
    test = dq.data.load("digits", "test")
    test_rows = {row.numpy().tobytes() for row in test.x}
    assert not any(row.numpy().tobytes() in test_rows for row in seen["eval"].x)
    report = json.loads((out / "report.json").read_text())
    assert "validation" in report["mixed_precision"]["tuned_on"]
    assert report["accuracy_split"] == "test" and report["deploy"]["compared_with"] == "simulated"
