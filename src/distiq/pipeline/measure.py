"""Measure one stage's model on the test split: what was kept (accuracy, F1, agreement, calibration,
robustness) and what was gained (size on disk, parameters, MACs, ONNX Runtime latency).

Every stage is measured the same way, on an ONNX file run by ONNX Runtime where latency and size are
concerned, so the teacher, the float student and the int8 student are compared like for like.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.data.sampling import subsample
from distiq.engine.batches import predict_logits
from distiq.evaluate.api import onnx_logits
from distiq.evaluate.calibration import expected_calibration_error
from distiq.evaluate.compare import compare_predictions
from distiq.evaluate.complexity import onnx_complexity
from distiq.evaluate.metrics import accuracy, confusion_matrix, f1_macro, per_class_f1
from distiq.evaluate.robustness import robustness
from distiq.evaluate.stats import bootstrap_ci
from distiq.runtime import time_files

from .recipe import EvaluateSpec


def logits_of(model: nn.Module | Path, data: ArrayDataset) -> torch.Tensor:
    """Logits of a module, or of an ONNX file in ONNX Runtime."""
    return predict_logits(model, data) if isinstance(model, nn.Module) else onnx_logits(model, data)


def measure(
    model: nn.Module | Path,
    onnx_path: Path,
    test: ArrayDataset,
    spec: EvaluateSpec,
    teacher_pred: torch.Tensor | None = None,
    seed: int = 0,
) -> dict:
    """All metrics of one stage (JSON-safe), computed on ``test``.

    Args:
        model: The stage's model: a module, or the ONNX file itself for quantized stages.
        onnx_path: The ONNX file whose size and latency represent the stage.
        test: Held-out data, never used for tuning.
        spec: What to measure (robustness, bootstrap resamples); latency is :func:`retime`'s.
        teacher_pred: The teacher's top-1 predictions on ``test``, for agreement.
        seed: Seed of the bootstrap and corruptions.
    """
    logits = logits_of(model, test)
    pred = logits.argmax(1)
    cm = confusion_matrix(pred, test.y, max(test.num_classes, logits.shape[1]))
    size = onnx_complexity(onnx_path)
    metrics: dict = {
        "accuracy": accuracy(cm),
        "f1_macro": f1_macro(cm),
        "f1_per_class": [float(v) for v in per_class_f1(cm)],
        "confusion": cm.tolist(),
        "class_names": list(test.classes),
        "size_bytes": onnx_path.stat().st_size,
        "params": size.parameters,
        "macs": size.macs,
        "ece": float(expected_calibration_error(torch.softmax(logits, 1), test.y)),
    }
    if teacher_pred is not None:
        metrics["agreement_with_teacher"] = float((pred == teacher_pred).double().mean())
        # flips, per-class degradation and McNemar's paired test against the teacher
        metrics["vs_teacher"] = compare_predictions(
            teacher_pred, pred, test.y, cm.shape[0], list(test.classes)
        ).to_dict()
    if spec.bootstrap:
        ci = bootstrap_ci(pred, test.y, "accuracy", n_resamples=spec.bootstrap, seed=seed)
        metrics["ci95"] = [ci.low, ci.high]
    if spec.robustness:
        shown = test
        if spec.robustness_samples is not None and spec.robustness_samples < len(test):
            shown = subsample(test, spec.robustness_samples, seed=seed)
        rob = robustness(model if isinstance(model, nn.Module) else onnx_path, shown, seed=seed)
        metrics["robustness"] = rob.accuracy
        metrics["robustness_samples"] = len(shown)
    return metrics


#: Batch sizes every stage is timed at: one request, and a throughput batch.
LATENCY_BATCHES = (1, 256)


def retime(files: dict[str, Path], metrics: dict[str, dict], spec: EvaluateSpec, rounds: int = 20) -> dict:
    """Time every stage's ONNX file in one interleaved measurement and write the latencies into each
    stage's ``metrics``; return how they were measured (for ``run.json``).

    Why at the end and together: stages run minutes apart (or are reused from an earlier run), and a
    machine's load changes in minutes, so per-stage timings would compare the load, not the models;
    interleaved rounds give every file the same conditions and the speed ratios one measurement.

    Args:
        files: Stage name -> its ONNX file (same input).
        metrics: Stage name -> its metrics dict, updated in place.
        spec: ``threads`` of the sessions.
        rounds: Timed rounds per batch size.
    """
    timed = time_files(files, LATENCY_BATCHES, threads=spec.threads, rounds=rounds)
    one, big = timed[LATENCY_BATCHES[0]], timed[LATENCY_BATCHES[-1]]
    for name in files:
        metrics[name].update(
            latency_ms_p50=one[name].p50_ms,
            latency_ms_p95=one[name].p95_ms,
            latency_ms_batch256=big[name].p50_ms,
            throughput=big[name].throughput,
        )
    return {
        "batch_sizes": list(LATENCY_BATCHES),
        "threads": spec.threads,
        "rounds": rounds,
        "method": "every stage's ONNX file timed together at the end of the run, in interleaved rounds",
    }
