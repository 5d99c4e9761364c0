"""``distiq.quantize``: one call from a float model to a simulated-quantized copy.

The copy computes in float what the integer model will compute (fake quantization), so it can be
evaluated, analysed layer by layer, fine-tuned (QAT) and exported to int8 ONNX with
:func:`distiq.quant.export.export_onnx`. The float model is never modified.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.engine.config import TrainSpec
from distiq.errors import DistiqError

from .ptq import calibrate_, example_from, prepare, round_, take_inputs
from .qat import qat_
from .spec import QuantizeSpec

# where QAT writes and what it shows: run options, not part of the spec (they change no result)
RUN_OPTIONS = ("checkpoint_dir", "log_path", "progress", "on_epoch_end")


def quantize(
    model: nn.Module,
    calib_data: Dataset | torch.Tensor | Iterable[Any] | None = None,
    spec: QuantizeSpec | None = None,
    *,
    example_input: torch.Tensor | None = None,
    train_data: Dataset | None = None,
    val_data: Dataset | None = None,
    teacher: nn.Module | bool | None = None,
    **options: Any,
) -> nn.Module:
    """A simulated-quantized copy of ``model``.

    BN layers are folded into the convs before them and ReLUs fused, weights get per-channel symmetric
    grids (rounded to nearest, or with ``rounding="adaround"`` as learned on ``calib_data``), and
    (static, qat) activations get asymmetric grids calibrated on ``calib_data``, placed so that the
    exported QDQ graph maps onto ONNX Runtime's integer kernels. Layers that cannot be quantized are
    named in a warning and kept in float; ``result.quant_report`` lists everything.

    Args:
        model: The float model (left untouched).
        calib_data: Calibration inputs: a dataset, a tensor of inputs, or an iterable of batches
            (tensors or ``(x, y)``), streamed — a few hundred samples suffice. Needed by static and qat.
        spec: How to quantize (:class:`~distiq.quant.spec.QuantizeSpec`: mode, method, bits, target,
            QAT training, ...). Instead of a spec, its fields can be given as keywords
            (``mode="dynamic", method="minmax"``), and QAT training fields (``epochs``, ``lr``, ...) as
            keywords too; a keyword given beside a spec overrides that field.
        example_input: An input batch for tracing when there is no ``calib_data``.
        train_data: QAT training data (default: ``calib_data``, which must then be labelled).
        val_data: QAT validation data.
        teacher: QAT distillation teacher: a model, or ``True``/``False`` (the float model / labels
            only; default ``spec.teacher``).
        **options: Spec fields, QAT training fields, and QAT run options (``checkpoint_dir``,
            ``log_path``, ``progress``, ``on_epoch_end``).

    Returns:
        The quantized copy, in eval mode, with ``quant_report`` (:class:`~distiq.quant.ptq.QuantReport`).
    """
    spec, run = _spec_from(spec, options)
    example, calib_data = example_from(model, calib_data, example_input)
    qmodel, _ = prepare(model, spec, example)
    rounding_inputs = None
    if spec.rounding == "adaround":
        if calib_data is None:
            raise DistiqError("rounding='adaround' needs calib_data: it learns the rounding from inputs")
        rounding_inputs, calib_data = take_inputs(calib_data, spec.adaround.samples, spec.batch_size)
    if spec.quantizes_activations:
        calibrate_(qmodel, calib_data, spec)
    if rounding_inputs is not None:  # after calibration: the layers learn on the quantized inputs
        round_(qmodel, rounding_inputs, spec)
    if spec.mode == "qat":
        data = train_data if train_data is not None else calib_data
        if not isinstance(data, Dataset):
            raise DistiqError("mode='qat' needs train_data (or calib_data) as a labelled dataset")
        chosen = spec.teacher if teacher is None else teacher
        qat_(
            qmodel,
            data,
            val_data,
            teacher=model if chosen is True else (chosen or None),
            loss=spec.distill_loss,
            temperature=spec.temperature,
            alpha=spec.alpha,
            **spec.qat.model_dump(),
            **{"progress": False, **run},
        )
    return qmodel.eval()


def _signature() -> inspect.Signature:
    """``quantize``'s signature with the spec's fields as keyword parameters and their defaults, so
    ``help(dq.quantize)`` and editors show the options that are declared once, in the spec."""
    own = inspect.signature(quantize)
    named = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    fields = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=info.get_default(call_default_factory=True),
            annotation=info.annotation,
        )
        for name, info in QuantizeSpec.model_fields.items()
        if name not in own.parameters
    ]
    return own.replace(parameters=[*named, *fields, own.parameters["options"]])


quantize.__signature__ = _signature()  # type: ignore[attr-defined]


def _spec_from(spec: QuantizeSpec | None, options: dict[str, Any]) -> tuple[QuantizeSpec, dict[str, Any]]:
    """The spec that ``spec`` and keyword ``options`` describe, and the QAT run options among them."""
    fields = {k: v for k, v in options.items() if k in QuantizeSpec.model_fields}
    training = {k: v for k, v in options.items() if k in TrainSpec.model_fields and k not in fields}
    run = {k: v for k, v in options.items() if k in RUN_OPTIONS}
    unknown = sorted(set(options) - set(fields) - set(training) - set(run))
    if unknown:
        raise DistiqError(f"quantize: unknown option(s) {', '.join(unknown)}; known: the QuantizeSpec fields")
    base = spec.model_dump(include=set(QuantizeSpec.model_fields)) if spec is not None else {}  # a subclass's
    # extra fields (a recipe stage's calib_samples, ...) are not quantization options
    mode = fields.get("mode", base.get("mode", "static"))
    if (training or run) and mode != "qat":
        raise DistiqError(f"training option(s) {', '.join(sorted(training | run))} apply to mode='qat' only")
    if training:
        fields["qat"] = {**base.get("qat", {}), **training}
    return QuantizeSpec.build(**{**base, **fields}), run
