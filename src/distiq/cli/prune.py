"""``distiq prune``: prune saved weights, fine-tune, save dense and compressed; ``distiq sparse``: inspect.

``distiq prune`` writes ``model.safetensors`` (loadable with :func:`distiq.prune.load_pruned`, also when
channels were removed), ``model.dqsp`` (the compressed sparse format) and ``summary.json`` in ``--out``.
``distiq sparse --file model.dqsp`` verifies a compressed file, prints its bytes per tensor and, with
``--out``, writes its weights back to a safetensors file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from pydantic import ConfigDict, Field

from distiq.evaluate.api import evaluate
from distiq.evaluate.fit import check_fits
from distiq.models import count_parameters
from distiq.prune import (
    load_pruned,
    prune,
    save_pruned,
    share_weights,
    sparse,
    sparsity_rich_table,
    sparsity_table,
)
from distiq.prune.sharing import fold_sharing_, sharing_table
from distiq.prune.spec import PruneSpec, SharingSpec

from .common import (
    CodeOptions,
    DataOptions,
    TrainingOptions,
    allowed_code,
    console,
    prepare_data,
    save_summary,
    training_config,
)
from .options import command


class PruneOptions(PruneSpec, SharingSpec, DataOptions, TrainingOptions, CodeOptions):
    """Options of ``distiq prune``: what to remove (:class:`PruneSpec`) and how to share the rest
    (:class:`SharingSpec`), as in a recipe's ``prune:``, plus the weights file, its fine-tuning and the
    output folder of one command."""

    weights: Path = Field(description="Trained model (.safetensors written by distiq train/distill).")
    pruning_schedule: str = Field(
        "one-shot", description="one-shot, or cubic (gradual, Zhu & Gupta 2017); schedule is the lr's."
    )
    ramp: float = Field(0.6, gt=0, le=1, description="Fraction of fine-tuning over which cubic ramps up.")
    epochs: int = Field(2, ge=0, description="Fine-tuning epochs after pruning (0: prune only).")
    teacher: str | None = Field(
        None, description="Distil while fine-tuning: 'original' (the unpruned model) or a weights file."
    )
    loss: str = Field("kd", description="Distillation loss with a teacher: kd, mse, hard-kd, dkd.")
    temperature: float = Field(4.0, gt=0, description="Distillation temperature.")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the distillation term.")
    sparse_values: str = Field(
        "int8", description="Values in model.dqsp: int8 (per-row scale) or float32; shared with --share-bits."
    )
    out: Path = Field(Path("runs/prune"), description="Output folder.")


class SparseOptions(CodeOptions):
    """Options of ``distiq sparse``."""

    model_config = ConfigDict(extra="forbid")
    file: Path = Field(description="A compressed weights file (.dqsp) written by distiq prune.")
    out: Path | None = Field(None, description="Write its weights to this .safetensors file.")


def run_prune(opts: PruneOptions) -> dict:
    """Prune, fine-tune, save ``model.safetensors``, ``model.dqsp`` and ``summary.json``; return it."""
    train_set, val_set, test_set = prepare_data(opts)
    model = load_pruned(opts.weights, allow_code=allowed_code(opts))
    check_fits(model, train_set, opts.weights)
    eval_set = test_set if test_set is not None else val_set
    before = evaluate(model, eval_set) if eval_set is not None else None
    teacher = opts.teacher
    if teacher is not None and teacher != "original":
        teacher = load_pruned(Path(teacher), allow_code=allowed_code(opts))
        check_fits(teacher, train_set, opts.teacher)
    options = {}
    if opts.epochs > 0:
        options = training_config(opts, opts.out)
        if opts.pruning_schedule == "cubic":  # the schedule counts steps from 0, so it must not resume
            options.pop("checkpoint_dir")
    torch.manual_seed(opts.seed)
    distill_options = {"loss": opts.loss, "temperature": opts.temperature, "alpha": opts.alpha}
    pruned = prune(
        model,
        opts.amount,
        structured=opts.structured,
        scope=opts.scope,
        importance=opts.importance,
        exclude=opts.exclude,
        round_to=opts.round_to,
        train_data=train_set if opts.epochs > 0 else None,
        val_data=val_set,
        pruning_schedule=opts.pruning_schedule,
        ramp=opts.ramp,
        teacher=teacher,
        distill_options=distill_options,
        **options,
    )
    shared = None
    if opts.share_bits is not None:
        shared = share_weights(
            pruned,
            **opts.sharing_options(),
            exclude=opts.exclude,
            train_data=train_set if opts.epochs > 0 else None,
            val_data=val_set,
            teacher=teacher,
            distill_options=distill_options,
            **_share_training(options),
        )
    report = sparse.save(
        shared if shared is not None else pruned,
        opts.out / "model.dqsp",
        values="shared" if shared is not None else opts.sparse_values,
    )
    sharing = sharing_table(shared) if shared is not None else None
    if shared is not None:
        pruned = fold_sharing_(shared)
    save_pruned(pruned, opts.out / "model.safetensors")
    table = sparsity_table(pruned)
    console.print(sparsity_rich_table(table))
    console.print(report.rich_table())
    summary = {
        "command": "prune",
        "options": opts.model_dump(mode="json"),
        "parameters": {"before": count_parameters(model), "after": count_parameters(pruned)},
        "sparsity": table,
        "compressed": {k: v for k, v in report.to_dict().items() if k != "records"},
        "sharing": sharing,
        "before": before,
        "val": evaluate(pruned, val_set) if val_set is not None else None,
        "test": evaluate(pruned, test_set) if test_set is not None else None,
    }
    save_summary(opts.out, summary)
    return summary


def _share_training(options: dict) -> dict:
    """The fine-tuning options again for the centroids, checkpointed apart from the pruning's."""
    if "checkpoint_dir" not in options:
        return options
    return options | {"checkpoint_dir": str(Path(options["checkpoint_dir"]).parent / "share-checkpoint")}


def run_sparse(opts: SparseOptions) -> dict:
    """Verify a compressed file, print its bytes per tensor, optionally write it out as safetensors."""
    report = sparse.info(opts.file)  # reads and checks every record
    model = None if opts.out is None else sparse.load_model(opts.file, allow_code=allowed_code(opts))
    console.print(report.rich_table())
    if model is not None:  # refused (one line) before the table is printed
        save_pruned(model, opts.out)
        console.print(f"weights in [bold]{opts.out}[/bold]")
    return report.to_dict()


def register(app: typer.Typer) -> None:
    """Add ``prune`` and ``sparse`` to the command line."""
    command(app, "prune", PruneOptions, "Prune saved weights (weights or channels), fine-tune, compress.")(
        run_prune
    )
    command(app, "sparse", SparseOptions, "Check a compressed .dqsp file; print or convert its weights.")(
        run_sparse
    )
