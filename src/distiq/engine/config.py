"""Typed, validated training options shared by every stage that trains (train, distill, QAT, prune).

Each field becomes a command-line option and a recipe key; a bad value raises ``DistiqError`` naming
the field, when the config is built rather than epochs later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from distiq.errors import DistiqError

OPTIMIZERS = ("adam", "adamw", "sgd")
# Fields that say where a run writes and what it shows, not what it computes: a checkpoint made
# under other values of these is still the same training (see :meth:`TrainConfig.identity`).
PLACEMENT = ("checkpoint_dir", "log_path", "progress")
SCHEDULES = ("constant", "cosine", "step")
MONITORS = ("val_accuracy", "val_loss")


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        epochs: Maximum number of passes over the training data.
        batch_size: Samples per optimisation step.
        optimizer: "adam", "adamw" or "sgd" (with Nesterov momentum).
        lr: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (decoupled for adamw).
        schedule: "constant", "cosine" (to 0 over ``epochs``) or "step" (x0.1 every third of them).
        warmup_epochs: Linear warm-up epochs before the schedule.
        seed: Seeds parameter-free randomness (shuffling, dropout) per epoch, so runs reproduce.
        patience: Stop after this many epochs without improvement of ``monitor`` (None: never).
        monitor: "val_accuracy" or "val_loss"; the best epoch's weights are restored at the end.
        target_accuracy: Stop as soon as validation accuracy (in [0, 1]) reaches this.
        checkpoint_dir: Where to write a checkpoint after every epoch; resumes from it if present and
            made by the same options.
        log_path: JSONL file receiving one record per epoch.
        progress: Show progress bars (None: only on a terminal).
        eval_batch_size: Batch size for validation passes.
        grad_clip: Clip the global gradient norm to this value (None: no clipping).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: int = 0
    seed: int = 0
    patience: int | None = None
    monitor: str = "val_accuracy"
    target_accuracy: float | None = None
    checkpoint_dir: str | None = None
    log_path: str | None = None
    progress: bool | None = None
    eval_batch_size: int = 1024
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        def bad(field: str, expected: str) -> DistiqError:
            return DistiqError(f"{field}: expected {expected}, got {getattr(self, field)!r}")

        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise bad("epochs", "an integer >= 1")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise bad("batch_size", "an integer >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"one of {', '.join(SCHEDULES)}")
        if self.monitor not in MONITORS:
            raise bad("monitor", f"one of {', '.join(MONITORS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", "a positive number")
        if self.weight_decay < 0:
            raise bad("weight_decay", "a number >= 0")
        if self.patience is not None and self.patience < 1:
            raise bad("patience", "an integer >= 1 or null")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise bad("target_accuracy", "a fraction in (0, 1]")
        if self.warmup_epochs < 0 or self.warmup_epochs >= max(self.epochs, 1) + 1:
            raise bad("warmup_epochs", "an integer in [0, epochs]")

    @classmethod
    def from_options(cls, **options: object) -> tuple[TrainConfig, dict[str, object]]:
        """Build from keyword options; return the config and the options it did not consume."""
        names = {f.name for f in fields(cls)}
        mine = {k: v for k, v in options.items() if k in names}
        rest = {k: v for k, v in options.items() if k not in names}
        return cls(**mine), rest  # type: ignore[arg-type]

    def identity(self) -> dict:
        """The fields that decide what training computes (all but :data:`PLACEMENT`), JSON-ready.

        A checkpoint records them, so a rerun can tell its own checkpoint from one of other options.
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in PLACEMENT}

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
