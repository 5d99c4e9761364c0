"""Options every training command shares (data, model, training, output) and what they resolve to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from distiq import data as dqdata
from distiq.data.arrays import ArrayDataset
from distiq.engine.config import ProgressOption, TrainSpec
from distiq.engine.weights import save_weights
from distiq.evaluate.api import evaluate
from distiq.io import write_json_atomic

from .processes import is_worker

console = Console(stderr=True)


class DataOptions(BaseModel):
    """Where the data come from."""

    model_config = ConfigDict(extra="forbid")
    data: str = Field(
        "fashion-mnist", description="Dataset name (fashion-mnist, digits), .npz file or folder."
    )
    data_root: str | None = Field(None, description="Folder of the dataset's files (overrides the default).")
    subsample: float | None = Field(
        None, description="Keep this many training samples (>1) or this fraction (<=1), stratified."
    )
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of training data held out.")
    data_seed: int = Field(0, description="Seed of the subsample and validation split.")


class CodeOptions(BaseModel):
    """Which user model code a weights file may name (commands that load weights files)."""

    model_config = ConfigDict(extra="forbid")
    model_code: list[str] = Field(
        default_factory=list,
        description="A package.module:factory that the weights files given may name (repeatable); "
        "loading never imports code a file names unless it is listed here.",
    )


def allowed_code(opts: CodeOptions, *given: str | None) -> list[str]:
    """The ``package.module:factory`` references a command may import: ``--model-code`` plus any the
    user typed as a model name (``--student pkg.mod:factory`` runs that code anyway)."""
    return [*opts.model_code, *(g for g in given if g and ":" in g)]


class TrainingOptions(TrainSpec, ProgressOption):
    """The training commands' options: the engine's own declaration (:class:`TrainSpec`)."""


def training_config(opts: BaseModel, out: Path) -> dict[str, Any]:
    """TrainConfig keyword options from command options, with checkpoints and log under ``out``."""
    kwargs = {k: v for k, v in opts.model_dump().items() if k in TrainingOptions.model_fields}
    kwargs.update(checkpoint_dir=str(out / "checkpoint"), log_path=str(out / "metrics.jsonl"))
    return kwargs


def load_dataset(spec: str, split: str, root: str | None = None) -> ArrayDataset | None:
    """A dataset by name, ``.npz`` path or image folder; ``None`` for a file's missing test split.

    The same resolution as a recipe's ``data.name`` (:func:`distiq.data.resolve`).
    """
    return dqdata.resolve(spec, split, root)


def sizes_of(data: ArrayDataset) -> dict[str, int]:
    """The size keywords of :func:`distiq.models.create` for a model that takes ``data``."""
    channels, side, _ = data.input_shape
    return {"num_classes": data.num_classes, "in_channels": channels, "image_size": side}


def prepare_data(opts: Any) -> tuple[ArrayDataset, ArrayDataset | None, ArrayDataset | None]:
    """Train, validation and test sets as the options describe."""
    full = load_dataset(opts.data, "train", opts.data_root)
    if opts.subsample is not None:
        n = int(opts.subsample) if opts.subsample > 1 else opts.subsample
        full = dqdata.subsample(full, n, seed=opts.data_seed)
    train, val = (full, None)
    if opts.val_fraction > 0:
        train, val = dqdata.split(full, opts.val_fraction, seed=opts.data_seed)
    return train, val, load_dataset(opts.data, "test", opts.data_root)


def finish(command: str, opts: BaseModel, model, result, val, test, **extra: Any) -> dict:
    """Save a trained model and the ``summary.json`` of a training command; return the summary
    (a ``--nproc`` job's other ranks: nothing, rank 0 writes)."""
    if is_worker():
        return {}
    save_weights(model, opts.out / "model.safetensors")
    summary = {
        "command": command,
        "options": opts.model_dump(mode="json"),
        "epochs_run": len(result.history),
        "stopped": result.stopped,
        "seconds_per_epoch": result.seconds_per_epoch,
        "val": evaluate(model, val) if val is not None else None,
        "test": evaluate(model, test) if test is not None else None,
        **extra,
    }
    save_summary(opts.out, summary)
    return summary


def save_summary(out: Path, summary: dict) -> Path:
    """Write ``summary.json`` in ``out`` and print where the results are."""
    path = write_json_atomic(out / "summary.json", summary)
    console.print(json.dumps(summary.get("test") or summary.get("val") or {}, indent=None))
    console.print(f"results in [bold]{out}[/bold]")
    return path
