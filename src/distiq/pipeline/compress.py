"""The compression stages of a recipe: prune (+ fine-tune) and quantize (+ int8 ONNX export), with the
per-layer records (quantization error, sensitivity, calibration histograms, integer kernels) the
report shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from distiq.data.sampling import subsample
from distiq.evaluate.api import onnx_logits
from distiq.evaluate.stats import spread
from distiq.onnx.api import OPTIONS as ONNX_OPTIONS
from distiq.onnx.api import quantize_onnx, report_path
from distiq.onnx.module import OnnxModel
from distiq.prune import prune, share_weights, sparse
from distiq.prune.sharing import fold_sharing_, sharing_table
from distiq.prune.structured import save_pruned
from distiq.quant import (
    QuantizeSpec,
    deploy_check,
    export_onnx,
    layer_errors,
    mixed_precision,
    quantize,
    sensitivity,
)
from distiq.quant.modules import ActQuant, quantizers

from .keras_stages import is_keras_model, keras_float_onnx, run_keras_prune
from .recipe import PruneStageSpec, QuantizeStageSpec
from .stages import RunState, StageOutput, export_float, teacher_cache, train_options, zero_fraction

console = Console(stderr=True)


def run_prune(spec: PruneStageSpec, state: RunState, stage_dir: Path) -> StageOutput:
    """Prune the current model and fine-tune it, from the teacher when asked."""
    if is_keras_model(state.model):
        return run_keras_prune(spec, state, stage_dir)
    history: list[dict] = []
    opts = train_options(spec.fine_tune, stage_dir, state.recipe.seed)
    pruned = prune(
        state.model,
        spec.amount,
        structured=spec.structured,
        scope=spec.scope,
        importance=spec.importance,
        exclude=spec.exclude,
        round_to=spec.round_to,
        example_input=state.train.x[:2],
        train_data=state.train,
        val_data=state.val,
        teacher=state.teacher if spec.distill_from_teacher else None,
        distill_options={"cache_dir": teacher_cache(state)},
        on_epoch_end=lambda epoch, record: history.append(record),
        **opts,
    )
    artifacts, extra = {}, {}
    if spec.share_bits is not None:
        pruned, artifacts, extra = _share(spec, pruned, state, stage_dir, history)
    weights = save_pruned(pruned, stage_dir / "model.safetensors")
    onnx = export_float(pruned, state, stage_dir)
    extra["sparsity"] = zero_fraction(pruned)
    return StageOutput(pruned, onnx, {"weights": weights, "onnx": onnx, **artifacts}, history, extra=extra)


def _share(
    spec: PruneStageSpec, pruned: nn.Module, state: RunState, stage_dir: Path, history: list[dict]
) -> tuple[nn.Module, dict[str, Path], dict]:
    """Share the pruned model's weights, fine-tune the centroids, store the shared format.

    Returns the model with plain (folded) weights for the stages after it, the compressed file, and
    its bytes and codebook sizes for the record.
    """
    opts = train_options(spec.fine_tune, stage_dir / "share", state.recipe.seed)
    shared = share_weights(
        pruned,
        **spec.sharing_options(),
        exclude=spec.exclude,
        train_data=state.train,
        val_data=state.val,
        teacher=state.teacher if spec.distill_from_teacher else None,
        distill_options={"cache_dir": teacher_cache(state)},
        on_epoch_end=lambda epoch, record: history.append({**record, "phase": "share"}),
        **opts,
    )
    report = sparse.save(shared, stage_dir / "model.dqsp")
    extra = {"compressed_bytes": report.file_bytes, "sharing": sharing_table(shared)}
    return fold_sharing_(shared), {"compressed": stage_dir / "model.dqsp"}, extra


def calibration_histograms(qmodel: nn.Module, batch: torch.Tensor, bins: int = 64) -> list[dict]:
    """Histogram of the values reaching each activation quantizer, with its chosen range."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        q.register_forward_pre_hook(lambda mod, args, name=name: seen.setdefault(name, args[0].detach()))
        for name, q in quantizers(qmodel)
        if isinstance(q, ActQuant) and not q.dynamic and q.enabled
    ]
    try:
        with torch.no_grad():
            qmodel.eval()(batch)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for name, q in quantizers(qmodel):
        if name not in seen:
            continue
        scale, zp = float(q.effective_scale()), int(q.zero_point)
        lo, hi = (q.qmin - zp) * scale, (q.qmax - zp) * scale
        x = seen[name].flatten().numpy()
        counts, edges = np.histogram(x, bins=bins, range=(min(x.min(), lo), max(x.max(), hi)))
        out.append(
            {
                "layer": name,
                "edges": edges.tolist(),
                "counts": counts.tolist(),
                "lo": lo,
                "hi": hi,
                "method": q.method,
            }
        )
    return out


def _quantize(spec: QuantizeStageSpec, state: RunState, calib, work_dir: Path, history: list | None = None):
    """The stage's quantized model, every option of ``spec`` applied (QAT training included), and the
    mixed-precision record when ``spec.budget`` is set (None otherwise)."""
    run = {}
    if spec.mode == "qat":
        placement = train_options(spec.qat, work_dir, state.recipe.seed)
        run = dict(
            train_data=state.train,
            val_data=state.val,
            on_epoch_end=(lambda epoch, record: history.append(record)) if history is not None else None,
            seed=placement["seed"],
            **{k: placement[k] for k in ("checkpoint_dir", "log_path", "progress")},
        )
    quant_spec = QuantizeSpec.model_validate(spec.model_dump(include=set(QuantizeSpec.model_fields)))
    if spec.budget is None:
        return quantize(state.model, calib, quant_spec, **run), None
    qmodel, mixed = mixed_precision(state.model, calib, state.val, budget=spec.budget, spec=quant_spec, **run)
    mixed["tuned_on"] = f"validation split ({len(state.val)} samples held out of the training data)"
    return qmodel, mixed


def calibration_spread(state: RunState, spec: QuantizeStageSpec, stage_dir: Path) -> dict:
    """Validation accuracy, in ONNX Runtime, of the stage's own quantization (same mode, QAT training
    included) with ``spec.calib_repeats`` other calibration subsets: how much the result depends on
    which images happened to be used for calibration."""
    accs = []
    for k in range(spec.calib_repeats):
        calib = subsample(state.train, min(spec.calib_samples, len(state.train)), seed=1000 + k)
        work = stage_dir / "calibration-spread" / f"{k}"
        path = export_onnx(_quantize(spec, state, calib, work)[0], work / "model.onnx", calib.x[:1])
        accs.append(float((onnx_logits(path, state.val).argmax(1) == state.val.y).double().mean()))
    return {"val_accuracy": accs, "mode": spec.mode, "measured_in": "onnxruntime", **spread(accs).to_dict()}


def _finite(value: float) -> float | None:
    """JSON has no infinity: an error-free layer's SQNR is recorded as null."""
    return value if np.isfinite(value) else None


def int8_record(state: RunState, int8_path: Path, qmodel: nn.Module) -> dict:
    """One ORT check of the int8 file on the test split beside its simulation and the float file:
    ``{"deploy": agreement, accuracies, CPU, warnings}`` plus the file's compute nodes as the report
    lists them (integer ones, float ones with why). Disagreement is printed loudly."""
    report = deploy_check(
        state.float_onnx, int8_path, data=state.test, simulated=qmodel, batch_sizes=(), warn=False
    )
    for message in report.warnings:
        console.print(f"[bold red]WARNING: {message}[/bold red]")
    keep = ("cpu", "file_target", "agreement", "compared_with", "accuracy", "samples", "warnings")
    record: dict = {
        "deploy": {k: v for k, v in report.to_dict().items() if k in keep},
        "integer_nodes": [],
        "float_nodes": [],
    }
    for k in report.after:  # the kernels deploy_check read back from ORT: not a second session
        node = f"{k.layer} ({k.op} -> {k.runtime_op})"
        if k.kernel == "integer":
            record["integer_nodes"].append(node)
        else:
            record["float_nodes"].append({"node": node, "reason": k.reason})
    return record


def run_quantize(spec: QuantizeStageSpec, state: RunState, stage_dir: Path) -> StageOutput:
    """Quantize the current model, export int8 ONNX, and record where the error comes from."""
    seed = state.recipe.seed
    calib = subsample(state.train, min(spec.calib_samples, len(state.train)), seed=seed)
    if isinstance(state.model, OnnxModel):
        return _quantize_file(spec, state, calib, stage_dir, state.model.path)
    if is_keras_model(state.model):  # a Keras model's layers are Keras ops: int8 through its ONNX export
        float_path = keras_float_onnx(state.model, calib, stage_dir)
        out = _quantize_file(spec, state, calib, stage_dir, float_path)
        out.artifacts["float_onnx"] = float_path
        return out
    history: list[dict] = []
    qmodel, mixed = _quantize(spec, state, calib, stage_dir, history)
    onnx = export_onnx(qmodel, stage_dir / "model.onnx", calib.x[:1])
    quant: dict = {"layers": [], "histograms": [], "mixed_precision": mixed}
    errors = layer_errors(qmodel, state.model, calib)
    drops = {}
    if spec.sensitivity:
        drops = {r["layer"]: r["drop"] for r in sensitivity(state.model, calib, state.val, qmodel=qmodel)}
    for row in errors:
        quant["layers"].append(
            {
                "layer": row["layer"],
                "weight_sqnr_db": _finite(row["weight_sqnr_db"]),
                "weight_mse": row["weight_mse"],
                "act_sqnr_db": _finite(row["activation_sqnr_db"]),
                "act_mse": row["activation_mse"],
                "sensitivity_drop": drops.get(row["layer"]),
                "kept_float": row["layer"] in spec.skip,
            }
        )
    if spec.mode in ("static", "qat"):
        quant["histograms"] = calibration_histograms(qmodel, calib.x[:256])
    if spec.mode in ("static", "qat") and spec.calib_repeats > 1:
        quant["calibration_spread"] = calibration_spread(state, spec, stage_dir)
    quant |= int8_record(state, onnx, qmodel)
    report = getattr(qmodel, "quant_report", None)
    extra = {"quant_report": report.to_dict() if hasattr(report, "to_dict") else None}
    return StageOutput(onnx, onnx, {"onnx": onnx}, history, quant=quant, extra=extra)


def _quantize_file(
    spec: QuantizeStageSpec, state: RunState, calib, stage_dir: Path, float_path: Path
) -> StageOutput:
    """The quantize stage of a model as a float ONNX file (given only as one, or a Keras model's export):
    :func:`quantize_onnx` of it, with the same calibration sample, budget (tuned on validation) and
    check on the test split as a module's."""
    out = quantize_onnx(
        float_path,
        calib,
        stage_dir / "model.onnx",
        mode=spec.mode,
        method=spec.method,
        per_channel=spec.per_channel,
        target=spec.target,
        check_data=state.test,
        budget=spec.budget,
        val_data=state.val,
        threads=state.recipe.evaluate.threads,
        **{k: getattr(spec, k) for k in ONNX_OPTIONS},
    )
    report = json.loads(report_path(out).read_text())
    deploy = report["deploy"]
    keep = ("cpu", "file_target", "agreement", "compared_with", "accuracy", "samples", "warnings")
    for message in deploy["warnings"]:
        console.print(f"[bold red]WARNING: {message}[/bold red]")
    nodes = deploy["after"]
    quant = {
        "layers": [
            {"layer": e["layer"], "act_sqnr_db": _finite(e["sqnr_db"]), "act_mse": e["mse"]}
            for e in report["layer_errors"]
        ],
        "histograms": [],
        "mixed_precision": report.get("mixed_precision"),
        "deploy": {k: v for k, v in deploy.items() if k in keep},
        "integer_nodes": [
            f"{n['layer']} ({n['op']} -> {n['runtime_op']})" for n in nodes if n["kernel"] == "integer"
        ],
        "float_nodes": [
            {"node": f"{n['layer']} ({n['op']} -> {n['runtime_op']})", "reason": n["reason"]}
            for n in nodes
            if n["kernel"] != "integer"
        ],
    }
    return StageOutput(
        out, out, {"onnx": out, "report": report_path(out)}, [], quant=quant, extra={"quant_report": report}
    )
