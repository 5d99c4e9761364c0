"""The stages of a recipe. Each takes the run's state, does one job, writes its artifacts into its own
folder and returns the model it produced; ``reload`` rebuilds that model from the artifacts when the
stage is skipped on a later call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.distill.api import distill
from distiq.distill.spec import objective_options
from distiq.engine.config import TrainSpec
from distiq.engine.train import TrainResult, train
from distiq.engine.weights import load_model, save_weights
from distiq.evaluate.latency import export_for_timing
from distiq.io import write_bytes_atomic
from distiq.models import create
from distiq.models.zoo import is_keras_file
from distiq.onnx.module import OnnxModel, is_onnx_file
from distiq.prune.structured import load_pruned

from .recipe import DistillStageSpec, Recipe, TeacherSpec


@dataclass
class RunState:
    """What stages share: the recipe, the data, and the models produced so far."""

    recipe: Recipe
    run_dir: Path
    dataset: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    teacher: nn.Module | None = None
    model: nn.Module | None = None
    onnx: Path | None = None
    teacher_onnx: Path | None = None
    float_model: nn.Module | None = None  # the last float module (what quantization starts from)
    float_onnx: Path | None = None  # its ONNX file (the float side of every int8 check)
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> dict:
        c, h, _ = self.train.input_shape
        return {"num_classes": self.train.num_classes, "in_channels": c, "image_size": h}


@dataclass
class StageOutput:
    """A stage's products: the model, its ONNX file, training history and extra records."""

    model: nn.Module | Path
    onnx: Path
    artifacts: dict[str, Path]
    history: list[dict] = field(default_factory=list)
    quant: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def train_options(spec: TrainSpec, stage_dir: Path, seed: int) -> dict:
    """Engine options of a stage: checkpoints inside the stage folder make it resumable; the recipe's
    ``seed`` unless the section sets its own."""
    return {
        **spec.model_dump(),
        "seed": spec.seed if "seed" in spec.model_fields_set else seed,
        "checkpoint_dir": str(stage_dir / "checkpoint"),
        "log_path": str(stage_dir / "history.jsonl"),
        "progress": None,
    }


def teacher_cache(state: RunState) -> Path:
    """Where every stage of the run caches the teacher's logits (offline KD): one folder for the run,
    so the prune stage's fine-tune reuses what distillation computed (files are keyed by teacher,
    data and views, so sharing never mixes them up)."""
    return state.run_dir / "teacher-cache"


def export_float(model: nn.Module, state: RunState, stage_dir: Path) -> Path:
    """The float ONNX file of a module (its size and latency stand for the stage)."""
    return export_for_timing(model, state.train.input_shape, stage_dir / "model.onnx")


def zero_fraction(model: nn.Module) -> float:
    """Fraction of a module's parameter entries that are exactly zero (biases included)."""
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return zeros / max(sum(p.numel() for p in model.parameters()), 1)


def _finish(model: nn.Module, result: TrainResult | None, state: RunState, stage_dir: Path) -> StageOutput:
    weights = save_weights(model, stage_dir / "model.safetensors")
    onnx = export_float(model, state, stage_dir)
    history = result.history if result is not None else []
    return StageOutput(model, onnx, {"weights": weights, "onnx": onnx}, history)


def recipe_code(recipe: Recipe) -> list[str]:
    """The ``package.module:factory`` models a recipe names: the recipe is the user's code (like a
    Makefile), so the weights files of its run may name these, and only these."""
    names = [recipe.teacher.model, recipe.distill.student if recipe.distill else ""]
    return [name for name in names if ":" in name]


def run_teacher(spec: TeacherSpec, state: RunState, stage_dir: Path) -> StageOutput:
    """Load the teacher's weights (or ONNX or Keras file), or train it."""
    if is_onnx_file(spec.weights):  # a teacher given only as ONNX: ORT computes its logits
        onnx = stage_dir / "model.onnx"
        write_bytes_atomic(onnx, Path(spec.weights).read_bytes())
        return StageOutput(OnnxModel(onnx), onnx, {"onnx": onnx, "onnx_model": onnx}, [])
    if is_keras_file(spec.weights):  # a trained Keras model (safe mode: the file runs no code)
        return _finish(create(str(spec.weights)), None, state, stage_dir)
    if spec.weights is not None:
        return _finish(load_model(spec.weights, allow_code=recipe_code(state.recipe)), None, state, stage_dir)
    torch.manual_seed(state.recipe.seed)
    model = create(spec.model, **state.shape, **spec.model_options)
    result = train(model, state.train, state.val, **train_options(spec.train, stage_dir, state.recipe.seed))
    return _finish(model, result, state, stage_dir)


def run_distill(spec: DistillStageSpec, state: RunState, stage_dir: Path) -> StageOutput:
    """Distill the student from the teacher."""
    torch.manual_seed(state.recipe.seed)
    student = create(spec.student, **state.shape, **spec.student_options)
    result = distill(
        state.teacher,
        student,
        state.train,
        state.val,
        **objective_options(spec),
        cache_dir=teacher_cache(state),
        **train_options(spec.train, stage_dir, state.recipe.seed),
    )
    return _finish(student, result, state, stage_dir)


def reload_output(
    artifacts: dict[str, str], run_dir: Path, allow_code: list[str] | None = None
) -> nn.Module | Path:
    """What a skipped stage produced: its module (pruned shapes included), an ONNX teacher as a module,
    a pruned Keras model from its ``.keras`` file, or its int8 ONNX file.

    ``allow_code``: the user factories the stage's weights may name (:func:`recipe_code`).
    """
    if "onnx_model" in artifacts:
        return OnnxModel(run_dir / artifacts["onnx_model"])
    if "keras" in artifacts:
        return create(str(run_dir / artifacts["keras"]))
    if "weights" not in artifacts:
        return run_dir / artifacts["onnx"]
    return load_pruned(run_dir / artifacts["weights"], allow_code=allow_code or ())
