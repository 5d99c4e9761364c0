"""``distiq export``: saved weights -> ONNX file (float), with the kernels ORT will run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ConfigDict, Field

from distiq.engine.weights import load_model
from distiq.errors import DistiqError
from distiq.quant.deploy import kernels
from distiq.quant.export import export_onnx

from .common import CodeOptions, allowed_code


class ExportOptions(CodeOptions):
    """Options of ``distiq export``."""

    model_config = ConfigDict(extra="forbid")
    model: Path = Field(description="Weights (.safetensors written by distiq train/distill).")
    out: Path = Field(Path("model.onnx"), description="ONNX file to write (replaced atomically).")
    input_shape: list[int] = Field(
        default_factory=list,
        description="Input shape without the batch, e.g. 1 28 28 (default: from the model config).",
    )
    opset: int | None = Field(None, ge=13, description="ONNX opset (default: the exporter's).")


def run_export(opts: ExportOptions) -> dict:
    """Export and print ``{"onnx", "bytes", "kernels"}`` as JSON on stdout."""
    model = load_model(opts.model, allow_code=allowed_code(opts)).eval()
    shape = opts.input_shape
    if not shape:
        config = getattr(model, "config", {}) or {}
        if "in_channels" not in config or "image_size" not in config:
            raise DistiqError("input_shape: the model config has no input size; give --input-shape")
        shape = [config["in_channels"], config["image_size"], config["image_size"]]
    path = export_onnx(model, opts.out, torch.zeros(2, *shape), opset=opts.opset)
    result = {
        "onnx": str(path),
        "bytes": path.stat().st_size,
        "kernels": [k.__dict__ for k in kernels(path)],
    }
    print(json.dumps(result))
    return result
