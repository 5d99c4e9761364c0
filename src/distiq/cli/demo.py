"""``distiq demo``: teacher -> distilled student on Fashion-MNIST (or the digits), end to end.

Trains a CNN teacher, distills a ~30x smaller CNN student from it with Hinton KD, trains the same
student from scratch for comparison, and prints a table of test accuracy, parameters and size on
disk. Falls back to scikit-learn's digits (and says so) when Fashion-MNIST is not installed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.table import Table

from distiq import data as dqdata
from distiq.distill.api import distill
from distiq.engine.train import train
from distiq.engine.weights import save_weights
from distiq.errors import DataError
from distiq.evaluate.api import evaluate
from distiq.io import write_json_atomic
from distiq.models import count_parameters, create

from .common import console


class DemoOptions(BaseModel):
    """Options of ``distiq demo``."""

    model_config = ConfigDict(extra="forbid")
    out: Path = Field(Path("runs/demo"), description="Output folder.")
    samples: int = Field(20000, ge=100, description="Training samples used (stratified subsample).")
    epochs: int = Field(4, ge=1, description="Epochs for teacher and students.")
    seed: int = Field(0, description="Seed of data split and initial weights.")


def _load() -> tuple[str, dqdata.ArrayDataset, dqdata.ArrayDataset]:
    try:
        return "fashion-mnist", dqdata.load("fashion-mnist", "train"), dqdata.load("fashion-mnist", "test")
    except DataError as e:
        console.print(f"[yellow]Fashion-MNIST is not available ({e}); using the 8x8 digits instead.")
        return "digits", dqdata.load("digits", "train"), dqdata.load("digits", "test")


def run_demo(opts: DemoOptions) -> dict:
    """Run the demo and return its rows (also written to ``summary.json``)."""
    name, full, test = _load()
    full = dqdata.subsample(full, min(opts.samples, len(full)), seed=opts.seed)
    train_set, val_set = dqdata.split(full, 0.1, seed=opts.seed)
    shape = dict(
        num_classes=full.num_classes, in_channels=full.input_shape[0], image_size=full.input_shape[1]
    )
    common = dict(epochs=opts.epochs, lr=3e-3, seed=opts.seed, progress=None)

    def build(width: float, depth: int) -> torch.nn.Module:
        torch.manual_seed(opts.seed)
        return create("vgg-small", width=width, depth=depth, **shape)

    console.print(f"[bold]teacher[/bold] on {name}: {len(train_set):,} training samples")
    teacher = build(0.5, 5)
    train(teacher, train_set, val_set, checkpoint_dir=str(opts.out / "teacher-ckpt"), **common)
    console.print("[bold]student from scratch[/bold]")
    scratch = build(0.125, 3)
    train(scratch, train_set, val_set, checkpoint_dir=str(opts.out / "scratch-ckpt"), **common)
    console.print("[bold]student distilled (KD, T=4, alpha=0.9)[/bold]")
    student = build(0.125, 3)
    distill(
        teacher,
        student,
        train_set,
        val_set,
        offline=True,
        cache_dir=opts.out / "teacher-cache",
        checkpoint_dir=str(opts.out / "student-ckpt"),
        **common,
    )

    rows = {}
    models = {"teacher": teacher, "student (scratch)": scratch, "student (KD)": student}
    files = {"teacher": "teacher", "student (scratch)": "student-scratch", "student (KD)": "student-kd"}
    for label, model in models.items():
        path = save_weights(model, opts.out / f"{files[label]}.safetensors")
        rows[label] = {
            **evaluate(model, test),
            "parameters": count_parameters(model),
            "bytes": path.stat().st_size,
            "file": str(path),
        }
    table = Table(title=f"distiq demo on {name} (test split, {len(test):,} images)")
    for col in ("model", "accuracy", "macro F1", "parameters", "size on disk"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, r in rows.items():
        table.add_row(
            label,
            f"{100 * r['accuracy']:.2f}%",
            f"{r['f1_macro']:.4f}",
            f"{r['parameters']:,}",
            f"{r['bytes'] / 1024:.1f} KiB",
        )
    console.print(table)
    write_json_atomic(opts.out / "summary.json", {"dataset": name, "rows": rows})
    console.print(f"results in [bold]{opts.out}[/bold]")
    return rows
