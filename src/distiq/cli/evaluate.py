"""``distiq evaluate``: metrics of saved weights or an ONNX file on a dataset split."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ConfigDict, Field

from distiq.errors import DistiqError
from distiq.evaluate.api import evaluate
from distiq.evaluate.fit import check_fits
from distiq.prune.structured import load_pruned

from .common import CodeOptions, allowed_code, load_dataset


class EvaluateOptions(CodeOptions):
    """Options of ``distiq evaluate``."""

    model_config = ConfigDict(extra="forbid")
    model: Path = Field(description="Weights (.safetensors from distiq) or an .onnx file.")
    data: str = Field("fashion-mnist", description="Dataset name, .npz file or image folder.")
    data_root: str | None = Field(None, description="Folder of the dataset's files.")
    split: str = Field("test", description="Split to evaluate: train or test.")
    metrics: list[str] = Field(["accuracy", "f1_macro"], description="Metric names.")
    batch_size: int = Field(256, ge=1, description="Inference batch size.")


def run_evaluate(opts: EvaluateOptions) -> dict:
    """Evaluate and print the metrics as JSON on stdout."""
    data = load_dataset(opts.data, opts.split, opts.data_root)
    if data is None:
        raise DistiqError(f"data: {opts.data} has no {opts.split!r} split")
    onnx = opts.model.suffix == ".onnx"
    model = opts.model if onnx else load_pruned(opts.model, allow_code=allowed_code(opts))
    check_fits(model, data, opts.model)
    result = evaluate(model, data, opts.metrics, batch_size=opts.batch_size)
    print(json.dumps(result))
    return result
