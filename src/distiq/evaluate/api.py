"""``distiq.evaluate``: metrics of a PyTorch model or an ONNX file on a dataset.

Two entry points: :func:`evaluate` returns a flat ``{metric: value}`` dict (what a recipe stage or
a search trial records), :func:`evaluate_full` a structured :class:`EvaluationReport` with
everything a report shows (per-class F1, confusion matrix, calibration, agreement with a teacher,
robustness, latency, size, MACs), JSON-serialisable through ``to_dict``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from distiq import runtime
from distiq.data.arrays import ArrayDataset, as_arrays
from distiq.engine.batches import iterate_batches, predict_logits
from distiq.errors import DataError, DistiqError
from distiq.registry import Registry, unknown_name

from .calibration import DEFAULT_BINS, CalibrationBins, calibration_bins, expected_calibration_error
from .compare import Comparison, compare_predictions
from .complexity import Complexity, count_macs, count_parameters, onnx_complexity
from .latency import LatencyResult, as_onnx, measure_latency
from .metrics import METRICS, confusion_matrix, per_class_accuracy, per_class_f1
from .robustness import SEVERITIES, RobustnessResult, robustness
from .stats import BootstrapInterval, bootstrap_ci

Model = nn.Module | str | os.PathLike[str]

LOGIT_METRICS: Registry = Registry("metric")
"""Metrics that need more than the confusion matrix: ``fn(logits, target, teacher_logits) -> float``."""


@LOGIT_METRICS.register("ece")
def _ece(logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None) -> float:
    """Expected calibration error, 15 bins (Guo et al., 2017)."""
    return expected_calibration_error(torch.softmax(logits.double(), 1), target, DEFAULT_BINS)


@LOGIT_METRICS.register("agreement")
def _agreement(logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None) -> float:
    """Top-1 agreement with the teacher: fraction of samples where both predict the same class."""
    if teacher_logits is None:
        raise DistiqError("metric 'agreement' needs teacher=... (a module or an .onnx path)")
    return float((logits.argmax(1) == teacher_logits.argmax(1)).double().mean())


def onnx_logits(
    path: str | os.PathLike[str], data: ArrayDataset, batch_size: int = 256, threads: int = 0
) -> torch.Tensor:
    """Logits of the ONNX model at ``path`` run by ONNX Runtime's CPU provider (``threads`` intra-op
    threads; 0: ORT's default, one per core)."""
    return _onnx_runner(path, batch_size, threads)(data)


def _onnx_runner(
    path: str | os.PathLike[str], batch_size: int, threads: int = 0
) -> Callable[[ArrayDataset], torch.Tensor]:
    session = runtime.session(path, threads=threads)
    if not session.get_inputs() or not session.get_outputs():
        raise DataError(f"{path}: the ONNX graph has no inputs or no outputs; expected a classifier")

    def run(data: ArrayDataset) -> torch.Tensor:
        outs = [
            runtime.run_checked(session, x.numpy(), path) for x, _, _ in iterate_batches(data, batch_size)
        ]
        return torch.from_numpy(np.concatenate(outs)) if outs else torch.empty(0)

    return run


def logits_fn(model: Model, batch_size: int = 256) -> Callable[[ArrayDataset], torch.Tensor]:
    """A ``dataset -> logits`` function for a module or an ONNX path (one ORT session, reused)."""
    if isinstance(model, nn.Module):
        return lambda data: predict_logits(model, data, batch_size)
    return _onnx_runner(model, batch_size)


def model_logits(model: Model, data: Dataset, batch_size: int = 256) -> torch.Tensor:
    """Logits of a module or an ONNX file for every row of ``data``, in order."""
    return logits_fn(model, batch_size)(as_arrays(data))


def _check_metrics(metrics: Sequence[str]) -> None:
    for m in metrics:
        if m not in METRICS and m not in LOGIT_METRICS:
            raise unknown_name("metric", m, [*METRICS.names(), *LOGIT_METRICS.names()])


def evaluate(
    model: Model,
    data: Dataset,
    metrics: Sequence[str] = ("accuracy", "f1_macro"),
    *,
    batch_size: int = 256,
    teacher: Model | None = None,
) -> dict[str, float]:
    """Compute ``metrics`` of ``model`` (a module, or a path to an ``.onnx`` file) on ``data``.

    Args:
        model: The model to evaluate.
        data: Samples ``(x, y)``.
        metrics: Names from ``METRICS`` (confusion-matrix metrics: accuracy, f1_macro, f1_weighted)
            or ``LOGIT_METRICS`` (ece, agreement).
        batch_size: Inference batch size.
        teacher: Reference model for ``"agreement"`` (module or ``.onnx`` path).

    Raises:
        DistiqError: An unknown metric name (naming the closest and the known ones), or
            "agreement" without teacher.
    """
    _check_metrics(metrics)
    arrays = as_arrays(data)
    logits = model_logits(model, arrays, batch_size)
    t_logits = model_logits(teacher, arrays, batch_size) if teacher is not None else None
    cm = confusion_matrix(logits.argmax(1), arrays.y, max(arrays.num_classes, logits.shape[1]))
    return {
        m: METRICS.get(m)(cm) if m in METRICS else LOGIT_METRICS.get(m)(logits, arrays.y, t_logits)
        for m in metrics
    }


@dataclass
class EvaluationReport:
    """Everything :func:`evaluate_full` measured; ``to_dict()`` is plain JSON.

    Attributes:
        n: Samples evaluated.
        classes: Class names, index order.
        metrics: Flat metrics (accuracy, f1_macro, f1_weighted, ece, agreement with a teacher).
        per_class_f1: F1 per class name.
        per_class_accuracy: Accuracy (recall) per class name.
        confusion_matrix: Rows true class, columns predicted class.
        calibration: Reliability diagram behind the ECE.
        bootstrap: Percentile-bootstrap interval per metric, when resamples were asked for.
        teacher: Flips, McNemar and per-class drops against the teacher, when given.
        robustness: Accuracy under corruptions, when asked for.
        latency: ONNX Runtime timings per batch size, when asked for.
        complexity: Parameters, MACs per sample and ONNX file size.
        notes: What could not be measured and why (e.g. a module ONNX export does not support).
    """

    n: int
    classes: list[str]
    metrics: dict[str, float]
    per_class_f1: dict[str, float]
    per_class_accuracy: dict[str, float]
    confusion_matrix: list[list[int]]
    calibration: CalibrationBins
    bootstrap: dict[str, BootstrapInterval] = field(default_factory=dict)
    teacher: Comparison | None = None
    robustness: RobustnessResult | None = None
    latency: list[LatencyResult] = field(default_factory=list)
    complexity: Complexity | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.teacher is not None:
            out["teacher"] = self.teacher.to_dict()
        return out

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The report as indented JSON, also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text


def evaluate_full(
    model: Model,
    data: Dataset,
    *,
    teacher: Model | None = None,
    batch_size: int = 256,
    n_bins: int = DEFAULT_BINS,
    bootstrap: int = 1000,
    corruptions: Sequence[str] = ("gaussian_noise", "blur", "contrast"),
    severities: Sequence[int] = SEVERITIES,
    latency_batch_sizes: Sequence[int] = (1, 32),
    threads: int = 1,
    warmup: int = 5,
    runs: int = 30,
    seed: int = 0,
) -> EvaluationReport:
    """Evaluate ``model`` (a module or an ``.onnx`` path) every way distiq knows, on ``data``.

    Args:
        model: The model to evaluate.
        data: Test samples ``(x, y)``.
        teacher: Reference model (module or ``.onnx``): adds agreement, flips, McNemar, per-class drops.
        batch_size: Inference batch size.
        n_bins: Bins of the calibration error.
        bootstrap: Resamples for the accuracy and macro-F1 intervals (0: none).
        corruptions: Robustness corruptions (empty: no robustness pass).
        severities: Severities of each corruption.
        latency_batch_sizes: Batch sizes to time in ONNX Runtime (empty: no timing).
        threads: ONNX Runtime threads for timing.
        warmup: Untimed runs per batch size.
        runs: Timed runs per batch size.
        seed: Seed of the bootstrap, the corruptions and the timing input.
    """
    arrays = as_arrays(data)
    predict = logits_fn(model, batch_size)
    logits = predict(arrays)
    pred, y = logits.argmax(1), arrays.y
    k = max(arrays.num_classes, logits.shape[1])
    names = [*arrays.classes, *(str(i) for i in range(len(arrays.classes), k))]
    cm = confusion_matrix(pred, y, k)
    probs = torch.softmax(logits.double(), 1)
    flat = {m: METRICS.get(m)(cm) for m in ("accuracy", "f1_macro", "f1_weighted")}
    bins = calibration_bins(probs, y, n_bins)
    flat["ece"] = bins.ece
    comparison = None
    if teacher is not None:
        t_pred = model_logits(teacher, arrays, batch_size).argmax(1)
        comparison = compare_predictions(t_pred, pred, y, k, names)
        flat["agreement"] = comparison.flips.agreement
    report = EvaluationReport(
        n=len(arrays),
        classes=names,
        metrics=flat,
        per_class_f1=dict(zip(names, per_class_f1(cm).tolist(), strict=True)),
        per_class_accuracy=dict(zip(names, per_class_accuracy(cm).tolist(), strict=True)),
        confusion_matrix=cm.tolist(),
        calibration=bins,
        teacher=comparison,
    )
    if bootstrap:
        report.bootstrap = {
            m: bootstrap_ci(pred, y, m, num_classes=k, n_resamples=bootstrap, seed=seed)
            for m in ("accuracy", "f1_macro")
        }
    if corruptions:
        report.robustness = robustness(predict, arrays, corruptions, severities, seed=seed)
    if isinstance(model, nn.Module):  # hooks see the module as it runs, shared weights once
        macs, per_layer = count_macs(model, arrays.input_shape)
        report.complexity = Complexity(count_parameters(model), macs, per_layer)
    try:
        with as_onnx(model, arrays.input_shape) as onnx_path:
            _measure_onnx(
                report, onnx_path, arrays.input_shape, latency_batch_sizes, threads, warmup, runs, seed
            )
    except Exception as e:  # a module ONNX cannot export still gets its other measurements
        if not isinstance(model, nn.Module):
            raise
        report.notes.append(f"no ONNX file size or latency: export failed ({type(e).__name__}: {e})")
    return report


def _measure_onnx(report, path, input_shape, batch_sizes, threads, warmup, runs, seed) -> None:
    """File size (and, for a file given by the user, parameters and MACs) and latency of ``path``."""
    onnx_cost = onnx_complexity(path)
    if report.complexity is None:
        report.complexity = onnx_cost
    else:
        report.complexity.file_bytes = onnx_cost.file_bytes
    if batch_sizes:
        report.latency = measure_latency(
            path, input_shape, batch_sizes=batch_sizes, threads=threads, warmup=warmup, runs=runs, seed=seed
        )
