"""Where does quantization error come from? Per-layer error, sensitivity ranking, mixed precision.

* :func:`layer_errors` measures, for each quantized layer, the signal-to-quantization-noise ratio
  (SQNR, ``10 log10(sum x^2 / sum (x - q(x))^2)``, in dB: every bit adds about 6 dB) and the MSE of its
  weights and of its output activation, the quantized model against the float one on the same inputs.
  Activation errors accumulate along the network, which is what the logits finally see.
* :func:`sensitivity` quantizes one layer at a time (its weights and the activation grids on its input
  and output), everything else float, and ranks layers by the accuracy they cost on their own.
* :func:`mixed_precision` keeps the most sensitive layers in float, one more at a time, until the
  quantized model is within an accuracy budget of the float one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import as_arrays
from distiq.engine.batches import predict_logits
from distiq.models.hooks import capture

from .api import quantize
from .modules import ActQuant, quant_layers, quantizers
from .ptq import iter_inputs


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """``10 log10(sum(ref^2) / sum((ref - approx)^2))``; ``inf`` when they are equal."""
    noise = float(((reference.double() - approx.double()) ** 2).sum())
    signal = float((reference.double() ** 2).sum())
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def _accuracy(model: nn.Module, data: Any) -> float:
    arrays = as_arrays(data)
    return float((predict_logits(model, arrays).argmax(1) == arrays.y).float().mean())


def _reference_paths(qmodel: nn.Module) -> dict[str, str]:
    """Quantized layer -> the float model's module whose output it reproduces (its fused ReLU or
    folded BN, else itself)."""
    fused = {g["layer"]: g for g in qmodel.quant_report.fused}
    out = {}
    for path in quant_layers(qmodel):
        group = fused.get(path, {})
        out[path] = group.get("relu") if qmodel.get_submodule(path).relu else None
        out[path] = out[path] or group.get("bn") or path
    return out


@torch.no_grad()
def layer_errors(
    qmodel: nn.Module, float_model: nn.Module, data: Any, *, batches: int = 4, batch_size: int = 64
) -> list[dict]:
    """Per quantized layer: weight and output-activation SQNR (dB) and MSE.

    Args:
        qmodel: Output of :func:`distiq.quantize`.
        float_model: The float model it came from.
        data: Inputs (dataset, tensor or iterable of batches).
        batches: Batches to average over.
        batch_size: Batch size when ``data`` is a dataset or tensor.
    """
    refs = _reference_paths(qmodel)
    layers = quant_layers(qmodel)
    sums = {p: [0.0, 0.0, 0] for p in layers}  # signal, noise, count
    float_model.eval()
    qmodel.eval()
    for x in iter_inputs(data, batch_size, batches):
        with capture(float_model, list(refs.values())) as f_out, capture(qmodel, list(layers)) as q_out:
            float_model(x)
            qmodel(x)
        for path, ref in refs.items():
            a, b = f_out[ref].double(), q_out[path].double()
            sums[path][0] += float((a**2).sum())
            sums[path][1] += float(((a - b) ** 2).sum())
            sums[path][2] += a.numel()
    result = []
    for path, layer in layers.items():
        w = layer.weight.detach()
        wq = layer.weight_quant(w).detach()
        signal, noise, n = sums[path]
        result.append(
            {
                "layer": path,
                "weight_sqnr_db": sqnr_db(w, wq),
                "weight_mse": float(((w - wq) ** 2).mean()),
                "activation_sqnr_db": 10 * math.log10(signal / noise) if noise > 0 else math.inf,
                "activation_mse": noise / max(n, 1),
            }
        )
    return result


def _only(qmodel: nn.Module, path: str | None) -> None:
    """Enable the quantizers of one layer (weights, own/tied input, output), or of all (``None``)."""
    layers = quant_layers(qmodel)
    keep: set[int] = set()
    if path is not None:
        layer = layers[path]
        for q in (layer.weight_quant, layer.input_quant, layer.output_quant, *layer.input_grid):
            if q is not None:
                keep |= {id(q), id(q.source) if isinstance(q, ActQuant) else id(q)}
    for _, q in quantizers(qmodel):
        q.enabled = path is None or id(q) in keep


def sensitivity(
    model: nn.Module,
    calib_data: Any,
    eval_data: Dataset,
    *,
    qmodel: nn.Module | None = None,
    **quant_options: Any,
) -> list[dict]:
    """Rank layers by the accuracy drop of quantizing each one alone, most sensitive first.

    Args:
        model: The float model.
        calib_data: Calibration data for :func:`distiq.quantize`.
        eval_data: Labelled data to measure accuracy on.
        qmodel: An already quantized model to reuse (else one is made with ``quant_options``).
        **quant_options: Options of :func:`distiq.quantize` (mode, bits, method, ...).

    Returns:
        ``[{"layer", "accuracy", "drop"}]`` sorted by ``drop``, largest first; ``drop`` is relative to
        the float model.
    """
    if qmodel is None:
        qmodel = quantize(model, calib_data, **quant_options)
    float_acc = _accuracy(model, eval_data)
    rows = []
    try:
        for path in quant_layers(qmodel):
            _only(qmodel, path)
            acc = _accuracy(qmodel, eval_data)
            rows.append({"layer": path, "accuracy": acc, "drop": float_acc - acc})
    finally:
        _only(qmodel, None)
    return sorted(rows, key=lambda r: -r["drop"])


def mixed_precision(
    model: nn.Module,
    calib_data: Any,
    eval_data: Dataset,
    *,
    budget: float = 0.01,
    ranking: list[dict] | None = None,
    **quant_options: Any,
) -> tuple[nn.Module, dict]:
    """Quantize, keeping the most sensitive layers in float until accuracy is within ``budget``.

    Each step re-quantizes with one more layer in ``skip``, so quantizer placement (and the exported
    graph) is rebuilt around the float layers rather than merely switched off.

    Args:
        model: The float model.
        calib_data: Calibration data.
        eval_data: Labelled data the budget is checked on.
        budget: Largest accepted accuracy drop versus float, as a fraction (0.01 = one point).
        ranking: Output of :func:`sensitivity` (computed if not given).
        **quant_options: Options of :func:`distiq.quantize` (``spec=`` among them).

    Returns:
        ``(qmodel, info)``: the quantized model and ``{"float_accuracy", "accuracy", "float_layers",
        "met_budget", "steps"}``.
    """
    float_acc = _accuracy(model, eval_data)
    spec = quant_options.get("spec")
    skip = list(quant_options.pop("skip", spec.skip if spec is not None else ()))
    qmodel = quantize(model, calib_data, skip=skip, **quant_options)
    if ranking is None:
        ranking = sensitivity(model, calib_data, eval_data, qmodel=qmodel)
    acc = _accuracy(qmodel, eval_data)
    steps = [{"float_layers": list(skip), "accuracy": acc}]
    order = [r["layer"] for r in ranking if r["layer"] not in skip]
    while float_acc - acc > budget and order:
        skip.append(order.pop(0))
        qmodel = quantize(model, calib_data, skip=skip, **quant_options)
        acc = _accuracy(qmodel, eval_data)
        steps.append({"float_layers": list(skip), "accuracy": acc})
    info = {
        "float_accuracy": float_acc,
        "accuracy": acc,
        "float_layers": skip,
        "met_budget": float_acc - acc <= budget,
        "steps": steps,
    }
    return qmodel, info
