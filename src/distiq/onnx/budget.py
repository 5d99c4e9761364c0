"""Sensitivity and float fallback under an accuracy budget, for an ONNX file, measured in ONNX Runtime.

The torch path's :func:`distiq.quant.sensitivity.sensitivity` and
:func:`~distiq.quant.sensitivity.mixed_precision`, on graphs: each node's sensitivity is the accuracy
lost with that node alone quantized (its weights and the grids on its input and output), and the most
sensitive nodes are kept float, one more at a time, until the int8 file is within the budget of the
float file. Every accuracy is the one ONNX Runtime delivers, on held-out labelled data.

Why no calibration here: the activations are calibrated once, on every tensor any subset of nodes can
put a grid on (:func:`~distiq.onnx.graph.grid_candidates`), so each candidate graph is rebuilt from
those grids — around the float nodes, not merely with them switched off — in the time of a rewrite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from distiq.errors import DistiqError

from .collect import batches, run, session
from .graph import Layer

Build = Callable[[list[Layer]], onnx.ModelProto]


def accuracy(model: onnx.ModelProto, data: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model``'s first output on labelled ``data``, run by ORT."""
    sess = session(model)
    name = sess.get_outputs()[0].name
    right = total = 0
    for feed, labels in batches(data, sess.get_inputs(), batch_size, what="val_data"):
        if labels is None:
            raise DistiqError("quantize_onnx: budget needs labelled val_data (a dataset or (x, y) batches)")
        pred = run(sess, [name], feed)[name].argmax(1)
        right += int((pred == np.asarray(labels)).sum())
        total += len(pred)
    if total == 0:
        raise DistiqError("quantize_onnx: val_data is empty")
    return right / total


def fidelity(float_model: onnx.ModelProto, model: onnx.ModelProto, data: Any, batch_size: int = 256):
    """``(metric, value)``: how close ``model`` is to ``float_model`` on ``data``, higher is closer.

    Labelled data: ``("accuracy", top-1 accuracy)`` of ``model``, as the budget measures it. Without
    labels (a sentence encoder's token batches): ``("mean_cosine", ...)``, the mean cosine of each
    sample's first output (flattened) with the float model's, so a choice made here (SmoothQuant's
    strength) needs no labels either.
    """
    sess, ref_sess = session(model), session(float_model)
    name = sess.get_outputs()[0].name
    cosines, right, total = [], 0, 0
    for feed, labels in batches(data, sess.get_inputs(), batch_size, what="val_data"):
        got = run(sess, [name], feed)[name]
        if labels is not None:
            right += int((got.argmax(1) == np.asarray(labels)).sum())
            total += len(got)
            continue
        a = got.reshape(len(got), -1).astype(np.float64)
        b = run(ref_sess, [name], feed)[name].reshape(len(got), -1).astype(np.float64)
        norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        cosines.append((a * b).sum(1) / norms)
    if total:
        return "accuracy", right / total
    if not cosines:
        raise DistiqError("quantize_onnx: val_data is empty")
    return "mean_cosine", float(np.concatenate(cosines).mean())


def sensitivity(float_model: onnx.ModelProto, layers: list[Layer], build: Build, data: Any) -> list[dict]:
    """``[{"layer", "accuracy", "drop"}]``, one per node quantized alone, largest drop first; ``drop``
    is against ``float_model``'s accuracy on ``data``."""
    float_acc = accuracy(float_model, data)
    rows = []
    for layer in layers:
        acc = accuracy(build([layer]), data)
        rows.append({"layer": layer.name, "accuracy": acc, "drop": float_acc - acc})
    return sorted(rows, key=lambda r: -r["drop"])


def mixed_precision(
    float_model: onnx.ModelProto, layers: list[Layer], build: Build, data: Any, budget: float
) -> tuple[list[Layer], dict]:
    """Keep the most sensitive nodes float, one more at a time, until the accuracy drop on ``data`` is
    at most ``budget`` (a fraction: 0.01 = one point) or every node is float.

    Returns:
        ``(the nodes still quantized, info)``; info holds ``float_accuracy``, ``accuracy``,
        ``float_layers`` (kept float by the search, most sensitive first), ``met_budget``, ``steps``
        and the ``sensitivity`` ranking.
    """
    float_acc = accuracy(float_model, data)
    acc = accuracy(build(layers), data)
    steps = [{"float_layers": [], "accuracy": acc}]
    ranking: list[dict] = []
    kept, dropped = list(layers), []
    if float_acc - acc > budget:
        ranking = sensitivity(float_model, layers, build, data)
        for row in ranking:
            if float_acc - acc <= budget:
                break
            dropped.append(row["layer"])
            kept = [layer for layer in kept if layer.name != row["layer"]]
            acc = accuracy(build(kept), data) if kept else float_acc
            steps.append({"float_layers": list(dropped), "accuracy": acc})
    info = {
        "budget": budget,
        "float_accuracy": float_acc,
        "accuracy": acc,
        "float_layers": dropped,
        "met_budget": float_acc - acc <= budget,
        "steps": steps,
        "sensitivity": ranking,
    }
    return kept, info


__all__ = ["accuracy", "fidelity", "mixed_precision", "sensitivity"]
