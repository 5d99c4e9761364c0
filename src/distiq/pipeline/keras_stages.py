"""The prune and quantize stages of a recipe whose model is a Keras model (the ``keras`` extra).

Why a branch of their own: the torch stages rewrite ``torch.nn`` layers (masks on ``Conv2d`` weights,
fake-quantized modules), and a Keras model's layers are Keras ops. What carries over is the rest:
magnitude pruning is :func:`distiq.keras.prune_` (gradient masks on the Keras kernels, so the zeros
survive distiq's training engine), fine-tuned through the same :func:`~distiq.engine.train.train` /
:func:`~distiq.distill.distill` as the torch stage; int8 goes the way of a teacher given only as an ONNX
file: the model's float ONNX export, checked against Keras, through ``quantize_onnx``.

Keras is imported only when such a model reaches a stage: a torch-only recipe never imports it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.distill.api import distill
from distiq.engine.train import train

from .recipe import PruneStageSpec
from .stages import RunState, StageOutput, train_options, zero_fraction


def is_keras_model(model: object) -> bool:
    """Whether ``model`` is a :class:`distiq.keras.KerasModule` (looked up, never imported: a recipe
    without Keras models has not imported the extra, and then no model can be one)."""
    module = sys.modules.get("distiq.keras.module")
    return module is not None and isinstance(model, module.KerasModule)


def run_keras_prune(spec: PruneStageSpec, state: RunState, stage_dir: Path) -> StageOutput:
    """Magnitude-prune a copy of the Keras model, fine-tune it with the zeros held, and store it as a
    ``.keras`` file and its float ONNX export (checked against Keras).

    Structured pruning and weight sharing are refused when the recipe is validated
    (:func:`~distiq.pipeline.validate.keras_problems`), so neither reaches this stage.
    """
    from distiq.keras import export_onnx, prune_
    from distiq.keras.module import clone, save_keras
    from distiq.keras.prune import kernel_sparsity

    model = clone(state.model)  # the stage before keeps its model (its record is measured on it)
    masks = prune_(model, spec.amount, scope=spec.scope, exclude=tuple(spec.exclude))
    history: list[dict] = []

    def on_epoch_end(epoch: int, record: dict) -> None:
        record["sparsity"] = kernel_sparsity(model)
        history.append(record)

    opts = train_options(spec.fine_tune, stage_dir, state.recipe.seed)
    teacher = state.teacher if spec.distill_from_teacher else None
    try:
        if teacher is None:
            train(model, state.train, state.val, on_epoch_end=on_epoch_end, **opts)
        else:
            distill(teacher, model, state.train, state.val, on_epoch_end=on_epoch_end, **opts)
    finally:
        masks.release()
    keras_file = save_keras(model, stage_dir / "model.keras")
    onnx = export_onnx(model, stage_dir / "model.onnx", state.train)
    extra = {"sparsity": zero_fraction(model), "kernel_sparsity": kernel_sparsity(model)}
    return StageOutput(model, onnx, {"keras": keras_file, "onnx": onnx}, history, extra=extra)


def keras_float_onnx(model: nn.Module, calib: ArrayDataset, stage_dir: Path) -> Path:
    """The float ONNX file the quantize stage starts from: the Keras model's export, checked against
    Keras's own outputs on the calibration inputs."""
    from distiq.keras import export_onnx

    return export_onnx(model, stage_dir / "float.onnx", calib)
