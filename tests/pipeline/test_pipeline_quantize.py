"""The quantize stage: every option of the stage reaches every quantization it runs."""

from __future__ import annotations

import distiq.pipeline as pipeline
import distiq.pipeline.compress as compress


def test_calibration_spread_of_a_qat_stage_is_qat(tmp_path, monkeypatch):
    modes: list[str] = []
    real = compress.quantize

    def recording(model, calib, spec, **options):
        modes.append(spec.mode)
        return real(model, calib, spec, **options)

    monkeypatch.setattr(compress, "quantize", recording)
    recipe = {
        "name": "qat",
        "data": {"name": "digits", "subsample": 400},
        "teacher": {"model": "mlp", "model_options": {"hidden": [32]}, "train": {"epochs": 2, "lr": 0.01}},
        "quantize": {
            "mode": "qat",
            "method": "minmax",
            "calib_samples": 64,
            "sensitivity": False,
            "calib_repeats": 2,
            "qat": {"epochs": 1, "lr": 0.0001},
        },
        "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
        "report": False,
    }
    result = pipeline.run(recipe, tmp_path)
    spread = result.stage("quantize").quant["calibration_spread"]
    assert modes == ["qat"] * 3  # the stage itself, then one per calibration subset
    assert spread["mode"] == "qat" and len(spread["val_accuracy"]) == 2
    assert (tmp_path / "stages" / "01-quantize" / "calibration-spread" / "1" / "model.onnx").exists()
