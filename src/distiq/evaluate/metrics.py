"""Classification metrics from predictions: accuracy, F1 (macro and per class), confusion matrix.

Written on a confusion matrix, so every metric is computed from the same counts; tests check them
against scikit-learn.
"""

from __future__ import annotations

import torch

from distiq.registry import Registry

METRICS: Registry = Registry("metric")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[num_classes, num_classes]`` counts; row = true class, column = predicted class."""
    flat = target.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_f1(cm: torch.Tensor) -> torch.Tensor:
    """F1 of each class; a class never predicted nor present scores 0 (scikit-learn's default)."""
    tp = cm.diag().double()
    denom = cm.sum(0).double() + cm.sum(1).double()
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))


@METRICS.register("accuracy")
def accuracy(cm: torch.Tensor) -> float:
    """Fraction of samples predicted correctly."""
    return float(cm.diag().sum().double() / cm.sum().clamp_min(1))  # float64: exact k / n


@METRICS.register("f1_macro")
def f1_macro(cm: torch.Tensor) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    present = (cm.sum(0) + cm.sum(1)) > 0
    return float(per_class_f1(cm)[present].mean()) if present.any() else 0.0


@METRICS.register("f1_weighted")
def f1_weighted(cm: torch.Tensor) -> float:
    """Per-class F1 weighted by each class's support."""
    support = cm.sum(1).double()
    return float((per_class_f1(cm) * support).sum() / support.sum().clamp_min(1))


def per_class_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """Recall of each class (correct / support); a class absent from the labels scores 0.

    Why next to F1: per-class degradation after compression is easiest to read as "class 6 lost
    4 points of accuracy", and a class's accuracy is its recall.
    """
    support = cm.sum(1).double()
    return torch.where(support > 0, cm.diag().double() / support.clamp_min(1), torch.zeros_like(support))
