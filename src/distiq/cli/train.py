"""``distiq train``: train a model from scratch (a teacher, or a baseline student)."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from distiq.engine.train import train
from distiq.models import create

from .common import DataOptions, TrainingOptions, finish, prepare_data, training_config


class TrainOptions(DataOptions, TrainingOptions):  # type: ignore[misc, valid-type]
    """Options of ``distiq train``."""

    model: str = Field("lenet5", description="Registered model name or package.module:factory.")
    model_options: dict = Field(default_factory=dict, description="Keyword options of the model.")
    out: Path = Field(Path("runs/train"), description="Output folder (weights, log, checkpoint).")


def run_train(opts: TrainOptions) -> dict:
    """Train, save ``model.safetensors`` and ``summary.json`` in ``opts.out``; return the summary."""
    train_set, val_set, test_set = prepare_data(opts)
    torch.manual_seed(opts.seed)  # the initial weights are part of a reproducible run
    model = create(
        opts.model,
        num_classes=train_set.num_classes,
        in_channels=train_set.input_shape[0],
        image_size=train_set.input_shape[1],
        **opts.model_options,
    )
    result = train(model, train_set, val_set, **training_config(opts, opts.out))
    return finish("train", opts, model, result, val_set, test_set)
