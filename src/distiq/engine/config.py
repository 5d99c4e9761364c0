"""Typed, validated training options shared by every stage that trains (train, distill, QAT, prune).

Each field becomes a command-line option and a recipe key; a bad value raises ``DistiqError`` naming
the field, when the config is built rather than epochs later.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from torch import nn

from distiq.data.views import ImageViews
from distiq.errors import DistiqError, validation_message

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")
MONITORS = ("val_accuracy", "val_loss")
ADDED_OFF = {"augment_flip": False, "augment_shift": 0}
"""Options added after checkpoints and run folders existed, with the value that leaves training as before."""


class TrainSpec(BaseModel):
    """How to train: the one declaration of every training option, with its default.

    It is the recipe's ``train:`` section (and ``fine_tune:``, ``qat:``), the source of the command
    line's training options (``--epochs``, ``--lr``, ...) and what ``dq.train(**options)`` validates.
    Every field decides what training computes, so all of them enter a checkpoint's identity.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, description="Maximum number of passes over the training data.")
    batch_size: int = Field(128, ge=1, description="Samples per optimisation step.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="adam, adamw or sgd (with Nesterov momentum)."
    )
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw).")
    schedule: Literal["constant", "cosine", "step"] = Field(
        "cosine", description="constant, cosine (to 0 over the epochs) or step (x0.1 every third of them)."
    )
    warmup_epochs: int = Field(0, ge=0, description="Linear warm-up epochs before the schedule.")
    seed: int = Field(
        0,
        description="Seeds shuffling and dropout per epoch, so runs reproduce (a recipe's seed by default).",
    )
    patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without improvement of the monitor."
    )
    monitor: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy", description="val_accuracy or val_loss; the best epoch's weights are restored."
    )
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="Stop as soon as validation accuracy (a fraction) reaches this."
    )
    eval_batch_size: int = Field(1024, ge=1, description="Batch size of validation passes.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the global gradient norm to this.")
    augment_flip: bool = Field(False, description="Train on images mirrored left-right half the time.")
    augment_shift: int = Field(
        0, ge=0, le=8, description="Train on images shifted by up to this many whole pixels per axis."
    )

    @model_serializer(mode="wrap")
    def _without_unused_augmentation(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Leave the augmentation options out while they are off: they came after many runs and
        checkpoints whose keys hold every field, and those must still be found and resumed."""
        dumped = handler(self)
        for name, off in ADDED_OFF.items():
            if dumped.get(name, off) == off:
                dumped.pop(name, None)
        return dumped

    def views(self) -> ImageViews:
        """The training images' views these options ask for (``count == 1``: no augmentation)."""
        return ImageViews(flip=self.augment_flip, shift=self.augment_shift)

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainSpec:
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs: expected an integer in [0, epochs], got {self.warmup_epochs}")
        return self

    def identity(self) -> dict:
        """The fields that decide what training computes, JSON-ready.

        A checkpoint records them, so a rerun can tell its own checkpoint from one of other options.
        """
        return self.model_dump(include=set(TrainSpec.model_fields))


class ProgressOption(BaseModel):
    """What a run shows: not what it computes (a command-line option beside the :class:`TrainSpec`)."""

    model_config = ConfigDict(extra="forbid")

    progress: bool | None = Field(None, description="Show progress bars (None: only on a terminal).")


class TrainConfig(TrainSpec, ProgressOption):
    """A :class:`TrainSpec` plus where the run writes and what it shows (not what it computes: a
    checkpoint made under other values of these is still the same training)."""

    checkpoint_dir: str | None = Field(
        None, description="Checkpoint after every epoch here; resumes from it when made by the same options."
    )
    log_path: str | None = Field(None, description="JSONL file receiving one record per epoch.")

    @field_validator("checkpoint_dir", "log_path", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        """A ``pathlib.Path`` is as good as its text (kept as text: it goes into checkpoints' JSON)."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    def __init__(self, **options: Any) -> None:
        """Validate, raising :class:`DistiqError` naming the field
        (a recipe's ``TrainSpec`` section reports its full key path through the recipe instead)."""
        try:
            super().__init__(**options)
        except ValidationError as e:
            raise DistiqError(validation_message(e, "training options")) from None

    @classmethod
    def from_options(cls, **options: object) -> tuple[TrainConfig, dict[str, object]]:
        """Build from keyword options; return the config and the options it did not consume."""
        mine = {k: v for k, v in options.items() if k in cls.model_fields}
        rest = {k: v for k, v in options.items() if k not in cls.model_fields}
        return cls(**mine), rest

    def lr_at(self, epoch: int) -> float:
        """Learning rate for 0-based ``epoch``: a pure function, so a resumed run needs no state."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / (self.warmup_epochs + 1)
        t = epoch - self.warmup_epochs
        span = max(self.epochs - self.warmup_epochs, 1)
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * t / span))
        if self.schedule == "step":
            return self.lr * 0.1 ** (t // max(span // 3, 1))
        return self.lr

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimiser this config names, over ``params``."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.lr,
                momentum=self.momentum,
                nesterov=self.momentum > 0,
                weight_decay=self.weight_decay,
            )
        cls = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=self.lr, weight_decay=self.weight_decay)


def training_views(options: dict[str, Any]) -> ImageViews:
    """The views training with these engine options draws from: what an offline teacher cache must
    hold (the options are validated as :func:`distiq.engine.train.train` would)."""
    return TrainConfig.from_options(**options)[0].views()
