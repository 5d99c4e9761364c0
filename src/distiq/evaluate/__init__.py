"""Evaluation: metrics of PyTorch models and ONNX files."""

from .api import evaluate, onnx_logits
from .metrics import METRICS, confusion_matrix, per_class_f1

__all__ = ["METRICS", "confusion_matrix", "evaluate", "onnx_logits", "per_class_f1"]
