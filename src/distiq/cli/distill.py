"""``distiq distill``: train a student from a saved teacher."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from distiq.distill.api import distill
from distiq.distill.spec import DistillSpec, objective_options
from distiq.engine.config import TrainConfig
from distiq.engine.weights import load_model
from distiq.evaluate.api import evaluate
from distiq.evaluate.fit import check_fits
from distiq.models import create
from distiq.models.zoo import is_keras_file

from .common import (
    CodeOptions,
    DataOptions,
    TrainingOptions,
    allowed_code,
    finish,
    prepare_data,
    sizes_of,
    training_config,
)
from .processes import ProcessOptions, relaunched
from .rerun import RerunOptions, inputs_key, output_folder, rerun_mode, training_inputs


class DistillOptions(DistillSpec, DataOptions, TrainingOptions, CodeOptions, RerunOptions, ProcessOptions):
    """Options of ``distiq distill``: the recipe's ``distill:`` section (:class:`DistillSpec`, training
    options flat) plus the teacher file, data and output folder of one command."""

    teacher: Path = Field(
        description="Teacher weights (.safetensors written by distiq train) or a .keras file."
    )
    out: Path = Field(
        Path("runs/distill"),
        description="Output folder. A rerun with the same options, data and teacher file contents "
        "resumes its checkpoint; with others it is refused unless --force or --resume is given.",
    )


def run_distill(opts: DistillOptions) -> dict:
    """Distill, save the student and ``summary.json`` in ``opts.out``; return the summary."""
    launched = relaunched(opts, opts.out)
    if launched is not None:
        return launched
    with output_folder(opts.out):
        return _distill(opts)


def _distill(opts: DistillOptions) -> dict:
    """The distillation, inside the folder's lock; the teacher file's contents are an input."""
    train_set, val_set, test_set = prepare_data(opts)
    if is_keras_file(opts.teacher):  # a Keras 3 file, loaded in safe mode (the keras extra)
        teacher = create(str(opts.teacher))
    else:
        teacher = load_model(opts.teacher, allow_code=allowed_code(opts, opts.student))
    check_fits(teacher, train_set, opts.teacher)
    inputs = training_inputs(opts, {"teacher": opts.teacher})
    options = training_config(opts, opts.out)
    torch.manual_seed(opts.seed)  # the initial weights are part of a reproducible run
    student = create(opts.student, **sizes_of(train_set), **opts.student_options)
    result = distill(
        teacher,
        student,
        train_set,
        val_set,
        **objective_options(opts),
        cache_dir=opts.out / "teacher-cache",
        inputs=inputs,
        rerun=rerun_mode(opts),
        **options,
    )
    teacher_test = evaluate(teacher, test_set) if test_set is not None else None
    key = inputs_key(TrainConfig(**options).identity(), inputs)
    return finish(
        "distill",
        opts,
        student,
        result,
        val_set,
        test_set,
        teacher_test=teacher_test,
        inputs=inputs,
        inputs_key=key,
    )
