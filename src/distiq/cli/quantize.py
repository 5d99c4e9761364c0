"""``distiq quantize``: saved weights -> int8 ONNX file + JSON report (accuracy, kernels, latency).

The command is a one-stage run of the pipeline: the weights become a recipe's teacher, the options
its ``quantize:`` section (the same declaration), so ``distiq quantize`` and that recipe write the
same int8 file and report the same accuracy; the run directory stays in ``--out`` beside the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from distiq.errors import DistiqError
from distiq.io import write_bytes_atomic, write_json_atomic
from distiq.models import create
from distiq.models.zoo import is_keras_file
from distiq.onnx.command import quantize_onnx_command
from distiq.pipeline.recipe import QuantizeStageSpec
from distiq.pipeline.runner import run

from .common import CodeOptions, allowed_code, console


class QuantizeOptions(QuantizeStageSpec, CodeOptions):
    """Options of ``distiq quantize``: the recipe's ``quantize:`` section (one declaration) plus the input
    model, data and output of one command."""

    model_config = ConfigDict(extra="forbid")
    model: Path = Field(
        description="Weights (.safetensors written by distiq train/distill), an .onnx or a .keras file."
    )
    data: str = Field("fashion-mnist", description="Dataset name, .npz file or image folder.")
    data_root: str | None = Field(None, description="Folder of the dataset's files.")
    data_seed: int = Field(0, description="Seed of the calibration sample and validation split.")
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="Training data held out to tune --budget on (disjoint from calibration)."
    )
    check: bool = Field(True, description="Time int8 against float in ORT (kernels and agreement always).")
    threads: int = Field(2, ge=1, description="ORT threads for the latency check.")
    out: Path = Field(Path("runs/quantize"), description="Output folder (model.onnx, report.json, the run).")
    smooth_quant: list[float] = Field(
        default_factory=list,
        description="An .onnx model, static mode: SmoothQuant strength alpha (activation outliers moved "
        "into the weights before calibration); given twice or more, each is tried on the validation "
        "split and the one closest to float kept.",
    )
    matmul_outputs: Literal["int8", "float"] = Field(
        "int8",
        description="An .onnx model, static mode: int8 (QLinearMatMul/QGemm) or float MatMul/Gemm outputs "
        "(one rounding less where a float op reads them, as in a transformer).",
    )

    def onnx_only(self) -> dict:
        """The options only the ONNX-file path takes, as :func:`distiq.quantize_onnx` keywords."""
        strengths = self.smooth_quant
        smooth = None if not strengths else strengths[0] if len(strengths) == 1 else list(strengths)
        return {"smooth_quant": smooth, "matmul_outputs": self.matmul_outputs}


def one_stage_recipe(opts: QuantizeOptions) -> dict:
    """The recipe whose run is this command: the weights as teacher, one ``quantize:`` section."""
    code = allowed_code(opts)
    teacher: dict = {"weights": str(opts.model)} | ({"model": code[0]} if code else {})
    data = {"name": opts.data, "root": opts.data_root, "fallback": None, "val_fraction": opts.val_fraction}
    return {
        "name": "quantize",
        "seed": opts.data_seed,
        "data": data | {"seed": opts.data_seed},
        "teacher": teacher,
        "quantize": opts.model_dump(include=set(QuantizeStageSpec.model_fields)),
        "evaluate": {"latency": opts.check, "threads": opts.threads, "robustness": False, "bootstrap": 0},
        "report": False,
    }


def run_quantize(opts: QuantizeOptions) -> dict:
    """Quantize as a one-stage run of the pipeline (the same stage code as a recipe's ``quantize:``),
    copy its int8 and float files to ``model.onnx`` / ``float.onnx``, write ``report.json``; return the
    report. The accuracy reported is the one ORT delivers on the test split."""
    if is_keras_file(opts.model):  # a Keras file: its ONNX export (checked against Keras), as an ONNX file
        opts = opts.model_copy(update={"model": keras_onnx(opts.model, opts.out / "keras-float.onnx")})
    if opts.model.suffix.lower() == ".onnx":  # a model given only as an ONNX file: quantized as ONNX
        if opts.rounding != "nearest":
            raise DistiqError(f"quantize: --rounding {opts.rounding} needs PyTorch weights, not an ONNX file")
        return quantize_onnx_command(opts, console.out)
    if opts.smooth_quant or opts.matmul_outputs != "int8":
        raise DistiqError(
            f"quantize: --smooth-quant and --matmul-outputs take an .onnx model, got {opts.model} "
            "(export it with distiq export first)"
        )
    if len(opts.model_code) > 1:
        raise DistiqError("quantize: --model-code: one factory (the one the weights file names), got several")
    result = run(one_stage_recipe(opts), opts.out)
    teacher, stage = result.stage("teacher"), result.stage("quantize")
    float_path = _copy(result.run_dir / teacher.artifacts["onnx"], opts.out / "float.onnx")
    int8_path = _copy(result.run_dir / stage.artifacts["onnx"], opts.out / "model.onnx")
    deploy = stage.quant["deploy"]
    report: dict = {
        "command": "quantize",
        "options": opts.model_dump(mode="json"),
        "run": str(result.run_dir),
        "quantization": stage.extra["quant_report"],
        "files": {
            "float_onnx": str(float_path),
            "onnx": str(int8_path),
            "float_bytes": float_path.stat().st_size,
            "bytes": int8_path.stat().st_size,
            "size_ratio": int8_path.stat().st_size / float_path.stat().st_size,
        },
        "layer_errors": stage.quant["layers"],
        "mixed_precision": stage.quant["mixed_precision"],
        "accuracy": deploy["accuracy"],
        "accuracy_split": "test",
        "deploy": deploy,
        "latency_ms": _latency(teacher.metrics, stage.metrics) if opts.check else None,
    }
    write_json_atomic(opts.out / "report.json", report)
    acc, cpu = deploy["accuracy"], deploy["cpu"]
    console.print(
        f"test accuracy in ONNX Runtime on {cpu['model']} ({cpu['target']}): "
        f"{100 * acc['onnx']:.2f}% (simulated {100 * acc['simulated']:.2f}%, "
        f"float {100 * acc['float']:.2f}%, agreement {100 * deploy['agreement']:.2f}%)  "
        f"size x{report['files']['size_ratio']:.2f}"
    )
    console.print(f"results in [bold]{opts.out}[/bold]")
    return report


def _copy(src: Path, dst: Path) -> Path:
    write_bytes_atomic(dst, src.read_bytes())
    return dst


def _latency(float_metrics: dict, int8_metrics: dict) -> dict:
    """Float vs int8 median latency (ms), from the run's one interleaved measurement of both files."""
    keys = {"1": "latency_ms_p50", "256": "latency_ms_batch256"}
    return {b: {"float": float_metrics[k], "int8": int8_metrics[k]} for b, k in keys.items()}


def keras_onnx(path: Path, out: Path) -> Path:
    """A ``.keras`` file (safe mode) exported to float ONNX at ``out`` (the keras extra)."""
    model = create(str(path))  # its KerasModule view, or one line saying the extra is missing
    from distiq.keras import export_onnx  # the optional extra, present once create succeeded

    return export_onnx(model, out)
