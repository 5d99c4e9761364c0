"""The quantization names of the shared API.md exist with the documented defaults."""

from __future__ import annotations

import inspect

import distiq.quant as dqq


def _params(fn) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


def test_quantize_signature():
    p = _params(dqq.quantize)
    assert list(p)[:2] == ["model", "calib_data"] and p["calib_data"].default is None
    expected = {"mode": "static", "method": "kl", "bits": 8, "per_channel": True}
    for name, default in expected.items():
        assert p[name].default == default and p[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert dqq.MODES == ("static", "dynamic", "weight-only", "qat")


def test_calibrate_and_export_signatures():
    p = _params(dqq.calibrate)
    assert (p["method"].default, p["bits"].default, p["symmetric"].default, p["axis"].default) == (
        "minmax",
        8,
        True,
        None,
    )
    assert list(_params(dqq.export_onnx))[:3] == ["model", "path", "example_input"]
    assert set(dqq.OBSERVERS.names()) >= {"minmax", "ema", "percentile", "kl", "mse"}
    assert {"scale", "zero_point", "lo", "hi"} <= set(dqq.QParams.__dataclass_fields__)
