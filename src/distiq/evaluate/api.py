"""``distiq.evaluate``: metrics of a PyTorch model or an ONNX file on a dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import ArrayDataset, as_arrays
from distiq.engine.batches import iterate_batches, predict_logits
from distiq.errors import DataError

from .metrics import METRICS, confusion_matrix


def onnx_logits(path: str | os.PathLike[str], data: ArrayDataset, batch_size: int = 256) -> torch.Tensor:
    """Logits of the ONNX model at ``path`` run by ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ONNX file not found")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for bad files
        raise DataError(f"{path}: ONNX Runtime cannot load it ({e})") from None
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x.numpy()})[0] for x, _, _ in iterate_batches(data, batch_size)]
    return torch.from_numpy(np.concatenate(outs))


def evaluate(
    model: nn.Module | str | os.PathLike[str],
    data: Dataset,
    metrics: Sequence[str] = ("accuracy", "f1_macro"),
    *,
    batch_size: int = 256,
) -> dict[str, float]:
    """Compute ``metrics`` of ``model`` (a module, or a path to an ``.onnx`` file) on ``data``.

    Raises:
        ValueError: An unknown metric name (listing the known ones).
    """
    fns = {m: METRICS.get(m) for m in metrics}
    arrays = as_arrays(data)
    if isinstance(model, nn.Module):
        logits = predict_logits(model, arrays, batch_size)
    else:
        logits = onnx_logits(model, arrays, batch_size)
    cm = confusion_matrix(logits.argmax(1), arrays.y, max(arrays.num_classes, logits.shape[1]))
    return {name: fn(cm) for name, fn in fns.items()}
