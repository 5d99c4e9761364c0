"""``distiq train``: train a model from scratch (a teacher, or a baseline student)."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from distiq.engine.config import TrainConfig
from distiq.engine.train import train
from distiq.models import create

from .common import DataOptions, TrainingOptions, finish, prepare_data, sizes_of, training_config
from .processes import ProcessOptions, relaunched
from .rerun import RerunOptions, inputs_key, output_folder, rerun_mode, training_inputs


class TrainOptions(DataOptions, TrainingOptions, RerunOptions, ProcessOptions):  # type: ignore[misc, valid-type]
    """Options of ``distiq train``."""

    model: str = Field("lenet5", description="Registered model name or package.module:factory.")
    model_options: dict = Field(default_factory=dict, description="Keyword options of the model.")
    out: Path = Field(
        Path("runs/train"),
        description="Output folder (weights, log, checkpoint). A rerun with the same options and data "
        "resumes its checkpoint; with others it is refused unless --force or --resume is given.",
    )


def run_train(opts: TrainOptions) -> dict:
    """Train, save ``model.safetensors`` and ``summary.json`` in ``opts.out``; return the summary.

    ``summary.json`` records the options, the inputs (data with its contents' hash) and their key.
    """
    launched = relaunched(opts, opts.out)
    if launched is not None:
        return launched
    with output_folder(opts.out):
        train_set, val_set, test_set = prepare_data(opts)
        torch.manual_seed(opts.seed)  # the initial weights are part of a reproducible run
        model = create(opts.model, **sizes_of(train_set), **opts.model_options)
        inputs = training_inputs(opts)
        options = training_config(opts, opts.out)
        result = train(model, train_set, val_set, inputs=inputs, rerun=rerun_mode(opts), **options)
        key = inputs_key(TrainConfig(**options).identity(), inputs)
        return finish("train", opts, model, result, val_set, test_set, inputs=inputs, inputs_key=key)
