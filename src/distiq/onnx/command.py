"""``distiq quantize --model FILE.onnx``: the command's branch for a model given only as an ONNX file.

Why here and not in the CLI: a command is a one-stage run of the library call, never a second
orchestrator. This picks the data as the command's torch branch does (calibration sample from the
training split less a validation split; ORT accuracy on the test split, else on that validation split,
so never on a calibration image), calls :func:`~distiq.onnx.api.quantize_onnx` once and writes the
command's ``report.json`` (the same top-level keys as for a distiq model).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

from distiq import data as dqdata
from distiq.errors import DistiqError
from distiq.io import write_json_atomic
from distiq.quant.deploy import COMPARED_WITH

from .api import OPTIONS, quantize_onnx, report_path


def quantize_onnx_command(opts: Any, echo: Callable[[str], Any] = print) -> dict:
    """Quantize ``opts.model`` (an ONNX file) into ``opts.out/model.onnx`` and write
    ``opts.out/report.json``; return that report. ``--budget`` is tuned on the validation split, as
    for a distiq model.

    Args:
        opts: ``distiq quantize``'s options (:class:`distiq.cli.quantize.QuantizeOptions`); the ones
            about torch models (QAT training, ``model_code``) do not apply and are ignored.
        echo: Where warnings and the one-line result go (the command's stderr console).

    Raises:
        DistiqError: A data set without a training split, and whatever :func:`quantize_onnx` refuses
            (``--mode qat``, a calibration batch the model cannot take, a corrupt file).
    """
    train = dqdata.resolve(opts.data, "train", opts.data_root)
    test = dqdata.resolve(opts.data, "test", opts.data_root)
    if train is None:
        raise DistiqError(f"data: {opts.data} has no training split to calibrate on")
    fit, val = dqdata.split(train, opts.val_fraction, seed=opts.data_seed)
    calib = dqdata.subsample(fit, min(opts.calib_samples, len(fit)), seed=opts.data_seed)
    check = test if test is not None else val
    opts.out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = quantize_onnx(
            opts.model,
            calib,
            opts.out / "model.onnx",
            mode=opts.mode,
            method=opts.method,
            per_channel=opts.per_channel,
            target=opts.target,
            check_data=check,
            latency_batches=(1, 256) if opts.check else (),
            threads=opts.threads,
            budget=opts.budget,
            val_data=val,
            **{k: getattr(opts, k) for k in OPTIONS},
            **opts.onnx_only(),
        )
    for w in caught:
        echo(f"warning: {w.message}")
    quantization = json.loads(report_path(out).read_text())
    deploy, layer_errors = quantization.pop("deploy"), quantization.pop("layer_errors")
    mixed = quantization.pop("mixed_precision")
    split = "test" if test is not None else "validation"
    if mixed is not None:
        mixed["tuned_on"] = f"validation split ({len(val)} samples held out of the training data)"
        split += " (the budget was tuned on it too: no test split)" if test is None else ""
    float_bytes, int8_bytes = opts.model.stat().st_size, out.stat().st_size
    report = {
        "command": "quantize",
        "options": opts.model_dump(mode="json"),
        "quantization": quantization,
        "files": {
            "float_onnx": str(opts.model),
            "onnx": str(out),
            "float_bytes": float_bytes,
            "bytes": int8_bytes,
            "size_ratio": int8_bytes / float_bytes,
        },
        "layer_errors": layer_errors,
        "mixed_precision": mixed,
        "accuracy": deploy["accuracy"],
        "accuracy_split": split,
        "deploy": deploy,
    }
    write_json_atomic(opts.out / "report.json", report)
    acc, cpu = deploy["accuracy"], deploy["cpu"]
    echo(
        f"{split.split()[0]} accuracy in ONNX Runtime on {cpu['model']} ({cpu['target']}): "
        f"{100 * acc['onnx']:.2f}% (float file {100 * acc['float']:.2f}%; {_agreement(deploy)})"
        f"  size x{report['files']['size_ratio']:.2f}"
    )
    echo(f"results in {opts.out}")
    return report


def _agreement(deploy: dict) -> str:
    """Top-1 agreement of the int8 kernels, naming what they were compared with, and with the float
    file apart when that was not the comparison (quantization error, not a kernel fault)."""
    against = deploy["compared_with"]
    text = f"kernels agree with {COMPARED_WITH[against]} on {100 * deploy['agreement']:.2f}% of top-1s"
    if against != "float":
        text += f", with float on {100 * deploy['float_agreement']:.2f}%"
    return text


__all__ = ["quantize_onnx_command"]
