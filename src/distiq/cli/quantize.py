"""``distiq quantize``: saved weights -> int8 ONNX file + JSON report (accuracy, kernels, latency)."""

from __future__ import annotations

import warnings
from pathlib import Path

from pydantic import ConfigDict, Field

from distiq import data as dqdata
from distiq.engine.weights import load_model
from distiq.errors import DistiqError
from distiq.evaluate.fit import check_fits
from distiq.io import write_json_atomic
from distiq.pipeline.recipe import CalibrationSample
from distiq.quant.api import quantize
from distiq.quant.deploy import DeploymentWarning, deploy_check
from distiq.quant.export import export_onnx
from distiq.quant.sensitivity import layer_errors, mixed_precision
from distiq.quant.spec import QuantizeSpec

from .common import CodeOptions, allowed_code, console, load_dataset


class QuantizeOptions(QuantizeSpec, CalibrationSample, CodeOptions):
    """Options of ``distiq quantize``: the quantize spec and calibration sample of the recipe's
    ``quantize:`` section (one declaration) plus the input model, data and output of one command."""

    model_config = ConfigDict(extra="forbid")
    model: Path = Field(description="Weights (.safetensors written by distiq train/distill).")
    data: str = Field("fashion-mnist", description="Dataset name, .npz file or image folder.")
    data_root: str | None = Field(None, description="Folder of the dataset's files.")
    data_seed: int = Field(0, description="Seed of the calibration sample and validation split.")
    budget: float | None = Field(
        None,
        ge=0,
        description="Mixed precision: keep sensitive layers float until the drop <= this, "
        "tuned on a validation split held out of the training data (never the test split).",
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="Training data held out to tune --budget on (disjoint from calibration)."
    )
    train_samples: int | None = Field(None, ge=1, description="QAT training samples (default: all).")
    check: bool = Field(True, description="Time int8 against float in ORT (kernels and agreement always).")
    threads: int = Field(2, ge=1, description="ORT threads for the latency check.")
    out: Path = Field(Path("runs/quantize"), description="Output folder (model.onnx, report.json).")


def run_quantize(opts: QuantizeOptions) -> dict:
    """Quantize, export ``model.onnx`` (and ``float.onnx``), check the file in ONNX Runtime on this CPU,
    write ``report.json``; return the report. The accuracy reported is the one ORT delivers."""
    model = load_model(opts.model, allow_code=allowed_code(opts)).eval()
    train = load_dataset(opts.data, "train", opts.data_root)
    test = load_dataset(opts.data, "test", opts.data_root)
    if train is None:
        raise DistiqError(f"data: {opts.data} has no training split to calibrate on")
    check_fits(model, train, opts.model)
    fit, val = dqdata.split(train, opts.val_fraction, seed=opts.data_seed)
    calib = dqdata.subsample(fit, min(opts.calib_samples, len(fit)), seed=opts.data_seed)
    spec = QuantizeSpec.model_validate(opts.model_dump(include=set(QuantizeSpec.model_fields)))
    options: dict = {}
    if opts.mode == "qat":
        data = fit if opts.train_samples is None else dqdata.subsample(fit, opts.train_samples)
        options = dict(train_data=data, val_data=val)
    calib_arg = calib if opts.mode in ("static", "qat") else None
    example = calib.x[:2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixed = None
        if opts.budget is not None:
            qmodel, mixed = mixed_precision(model, calib_arg, val, budget=opts.budget, spec=spec, **options)
            mixed["tuned_on"] = f"validation split ({len(val)} samples held out of the training data)"
        else:
            qmodel = quantize(model, calib_arg, spec, example_input=example, **options)
    for w in caught:
        console.print(f"[yellow]warning:[/yellow] {w.message}")
    opts.out.mkdir(parents=True, exist_ok=True)
    float_path = export_onnx(model, opts.out / "float.onnx", example)
    int8_path = export_onnx(qmodel, opts.out / "model.onnx", example)
    report: dict = {
        "command": "quantize",
        "options": opts.model_dump(mode="json"),
        "quantization": qmodel.quant_report.to_dict(),
        "files": {
            "float_onnx": str(float_path),
            "onnx": str(int8_path),
            "float_bytes": float_path.stat().st_size,
            "bytes": int8_path.stat().st_size,
            "size_ratio": int8_path.stat().st_size / float_path.stat().st_size,
        },
        "layer_errors": layer_errors(qmodel, model, calib, batches=2),
        "mixed_precision": mixed,
    }
    check_data = test if test is not None else val
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeploymentWarning)
        deploy = deploy_check(
            float_path,
            int8_path,
            data=check_data,
            simulated=qmodel,
            batch_sizes=(1, 256) if opts.check else (),
            threads=opts.threads,
            repeats=20,
        )
    report["accuracy"] = deploy.accuracy
    report["accuracy_split"] = "test" if test is not None else "validation"
    report["deploy"] = deploy.to_dict()
    for message in deploy.warnings:
        console.print(f"[bold red]WARNING: {message}[/bold red]")
    write_json_atomic(opts.out / "report.json", report)
    acc, cpu = deploy.accuracy, deploy.cpu
    console.print(
        f"{report['accuracy_split']} accuracy in ONNX Runtime on {cpu['model']} ({cpu['target']}): "
        f"{100 * acc['onnx']:.2f}% (simulated {100 * acc['simulated']:.2f}%, "
        f"float {100 * acc['float']:.2f}%, agreement {100 * deploy.agreement:.2f}%)  "
        f"size x{report['files']['size_ratio']:.2f}"
    )
    console.print(f"results in [bold]{opts.out}[/bold]")
    return report
