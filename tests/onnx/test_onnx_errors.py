"""Bad input to ``quantize_onnx``: a one-line :class:`DistiqError` that says what is wrong and where,
and no output file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import distiq as dq
from distiq.errors import DataError


@pytest.fixture(scope="module")
def small(tmp_path_factory, export):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 8 * 8, 4)
    )
    return export(model.eval(), tmp_path_factory.mktemp("small") / "small.onnx", torch.rand(2, 3, 12, 12))


def _error(call) -> str:
    with pytest.raises(dq.DistiqError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.onnx"
    message = _error(lambda: dq.quantize_onnx(missing, torch.rand(4, 3, 12, 12), tmp_path / "q.onnx"))
    assert message == f"{missing}: ONNX file not found"
    assert not (tmp_path / "q.onnx").exists()


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf\xff\xfe" * 10)
    with pytest.raises(DataError) as info:
        dq.quantize_onnx(bad, torch.rand(4, 3, 12, 12), tmp_path / "q.onnx")
    message = str(info.value)
    assert message.startswith(f"{bad}: ") and "\n" not in message
    assert not (tmp_path / "q.onnx").exists()


def test_calibration_batch_of_the_wrong_shape(small, tmp_path):
    message = _error(lambda: dq.quantize_onnx(small, torch.rand(16, 1, 8, 8), tmp_path / "q.onnx"))
    assert (
        message
        == "calib_data: batch 0 has shape [16, 1, 8, 8] for input 'x'; the model expects [N, 3, 12, 12]"
    )
    assert not (tmp_path / "q.onnx").exists()


def test_fixed_batch_size_is_explained(tmp_path):
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(
        nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.rand(2, 12), str(path), dynamo=False
    )
    message = _error(lambda: dq.quantize_onnx(path, torch.rand(64, 12), tmp_path / "q.onnx"))
    assert (
        "the model expects [2, 12] (its batch size is fixed: export it with a dynamic batch axis)" in message
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"mode": "qat"}, "mode must be one of static, dynamic, got 'qat'"),
        ({"method": "nope"}, "unknown calibrator 'nope'"),
        ({"epochs": 3}, "unknown option(s) epochs"),
        ({"act_bits": 4}, "act_bits must be 8"),
        ({"target": "z80"}, "z80"),
    ],
)
def test_bad_options(small, tmp_path, kwargs, needle):
    assert needle in _error(
        lambda: dq.quantize_onnx(small, torch.rand(4, 3, 12, 12), tmp_path / "q.onnx", **kwargs)
    )


def test_static_needs_calibration_data_and_not_an_empty_one(small, tmp_path):
    assert "needs calib_data" in _error(lambda: dq.quantize_onnx(small, None, tmp_path / "q.onnx"))
    assert _error(lambda: dq.quantize_onnx(small, [], tmp_path / "q.onnx")) == "calib_data is empty"


def test_an_int8_file_is_not_quantized_twice(small, tmp_path):
    once = dq.quantize_onnx(small, torch.rand(8, 3, 12, 12), tmp_path / "once.onnx", method="minmax")
    message = _error(lambda: dq.quantize_onnx(once, torch.rand(8, 3, 12, 12), tmp_path / "twice.onnx"))
    assert message.startswith(f"{once}: already quantized")
