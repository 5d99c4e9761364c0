"""``distiq.quantize``: one call from a float model to a simulated-quantized copy.

The copy computes in float what the integer model will compute (fake quantization), so it can be
evaluated, analysed layer by layer, fine-tuned (QAT) and exported to int8 ONNX with
:func:`distiq.quant.export.export_onnx`. The float model is never modified.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.errors import DistiqError

from .ptq import THIN_CONV_CHANNELS, QuantConfig, calibrate_, example_from, prepare
from .qat import qat_


def quantize(
    model: nn.Module,
    calib_data: Dataset | torch.Tensor | Iterable[Any] | None = None,
    *,
    mode: str = "static",
    method: str = "kl",
    bits: int = 8,
    per_channel: bool = True,
    act_bits: int = 8,
    weight_method: str | None = None,
    symmetric_activations: bool = False,
    method_options: dict[str, Any] | None = None,
    skip: Iterable[str] = (),
    calib_batches: int | None = None,
    batch_size: int = 64,
    example_input: torch.Tensor | None = None,
    target: str = "auto",
    thin_conv_channels: int = THIN_CONV_CHANNELS,
    train_data: Dataset | None = None,
    val_data: Dataset | None = None,
    teacher: nn.Module | bool = True,
    distill_loss: str = "kd",
    temperature: float = 4.0,
    alpha: float = 0.5,
    **train_options: Any,
) -> nn.Module:
    """A simulated-quantized copy of ``model``.

    BN layers are folded into the convs before them and ReLUs fused, weights get per-channel symmetric
    grids, and (static, qat) activations get asymmetric grids calibrated on ``calib_data``, placed so
    that the exported QDQ graph maps onto ONNX Runtime's integer kernels. Layers that cannot be
    quantized are named in a warning and kept in float; ``result.quant_report`` lists everything.

    Args:
        model: The float model (left untouched).
        calib_data: Calibration inputs: a dataset, a tensor of inputs, or an iterable of batches
            (tensors or ``(x, y)``), streamed — a few hundred samples suffice. Needed by static and qat.
        mode: "static", "dynamic" (int8 weights, activation ranges per batch at run time: for
            Linear-heavy models), "weight-only" (smaller files, float compute; int8 or int4) or "qat".
        method: Activation calibrator: "kl" (TensorRT entropy), "minmax", "percentile", "mse", "ema".
        bits: Weight bits (2-8).
        per_channel: One weight scale per output channel.
        act_bits: Activation bits (2-8; ONNX export needs 8).
        weight_method: Weight calibrator (default "minmax" at 8 bits, "mse" below).
        symmetric_activations: Signed activation grids instead of unsigned with a zero point.
        method_options: Options of the activation calibrator, e.g. ``{"percentile": 99.9}``.
        skip: Module paths to keep in float (e.g. a sensitive first conv).
        calib_batches: Use at most this many calibration batches.
        batch_size: Calibration batch size when ``calib_data`` is a dataset or tensor.
        example_input: An input batch for tracing when there is no ``calib_data``.
        target: The CPU whose int8 kernels the simulated model reproduces and the file is made for:
            "auto" (this machine, :func:`distiq.quant.cpu_target`) or a name such as "x86-avx2",
            "x86-vnni", "arm64-dotprod", "generic" (exact on every target).
        thin_conv_channels: Static/qat: convs with at most this many input channels (a first conv on
            grey or RGB images) stay float: ONNX Runtime runs them slower in int8 than in float
            (0: quantize them too).
        train_data: QAT training data (default: ``calib_data``, which must then be labelled).
        val_data: QAT validation data.
        teacher: QAT distillation teacher: ``True`` for the float model, ``False`` for labels only,
            or another model.
        distill_loss: QAT logit loss name ("kd", "mse", "dkd", ...).
        temperature: QAT distillation temperature.
        alpha: QAT weight of the distillation term.
        **train_options: QAT training options (``epochs``, ``lr``, ``batch_size``, ...).

    Returns:
        The quantized copy, in eval mode, with ``quant_report`` (:class:`~distiq.quant.ptq.QuantReport`).
    """
    config = QuantConfig(
        mode=mode,
        method=method,
        bits=bits,
        act_bits=act_bits,
        per_channel=per_channel,
        weight_method=weight_method,
        symmetric_activations=symmetric_activations,
        method_options=dict(method_options or {}),
        skip=tuple(skip),
        calib_batches=calib_batches,
        batch_size=batch_size,
        target=target,
        thin_conv_channels=thin_conv_channels,
    )
    if train_options and mode != "qat":
        raise DistiqError(f"training option(s) {', '.join(sorted(train_options))} apply to mode='qat' only")
    example, calib_data = example_from(model, calib_data, example_input)
    qmodel, _ = prepare(model, config, example)
    if config.quantizes_activations:
        calibrate_(qmodel, calib_data, config)
    if mode == "qat":
        data = train_data if train_data is not None else calib_data
        if not isinstance(data, Dataset):
            raise DistiqError("mode='qat' needs train_data (or calib_data) as a labelled dataset")
        if teacher is True:
            teacher = model
        qat_(
            qmodel,
            data,
            val_data,
            teacher=teacher or None,
            loss=distill_loss,
            temperature=temperature,
            alpha=alpha,
            **train_options,
        )
    return qmodel.eval()
