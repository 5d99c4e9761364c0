"""``dq.prune``: prune a model (by weights or by channels) and fine-tune it back to accuracy.

Pruning alone costs accuracy; what recovers it is training the survivors for a while (Han et al., 2015),
ideally with the unpruned network as teacher, since its soft outputs carry more than the labels. Both go
through the one training loop (:func:`distiq.engine.train`, or :func:`distiq.distill` on top of it);
:func:`fine_tune` only adds :func:`~distiq.prune.schedule.keep_masks` around it so pruned weights stay
zero (and, for the gradual schedule, the sparsity grows during training).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import as_arrays
from distiq.distill.api import distill
from distiq.engine.config import TrainConfig
from distiq.engine.train import TrainResult, evaluate_loss_accuracy, train
from distiq.errors import DistiqError

from .magnitude import fold_masks_, prune_magnitude_, sparsity_table
from .schedule import CubicSchedule, keep_masks
from .spec import SCOPE
from .structured import prune_channels_

SCHEDULES = ("one-shot", "cubic")


def fine_tune(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None = None,
    *,
    teacher: nn.Module | None = None,
    gradual: CubicSchedule | None = None,
    scope: str = SCOPE,
    exclude: Iterable[str] = (),
    distill_options: Mapping[str, Any] | None = None,
    **train_options: Any,
) -> TrainResult:
    """Train a pruned model in place while its masks stay applied; returns the training result.

    Args:
        model: A model with masks attached (unstructured), a channel-pruned one, or (with ``gradual``)
            a dense one to prune gradually.
        train_data: Training samples.
        val_data: Validation samples (best-epoch restore, early stopping). With a gradual schedule they
            are only measured (``val_accuracy`` in the history) and the last epoch is kept, because
            earlier epochs are less sparse than asked.
        teacher: Distil from this model (e.g. the unpruned one) instead of training on labels alone.
        gradual: Zhu & Gupta's schedule over the training steps; ``None`` keeps the masks fixed. (Not
            ``schedule``: that is the learning-rate schedule, a training option.)
        scope: ``"global"`` or ``"layer"`` thresholds for the gradual steps.
        exclude: Layers the gradual steps must not prune.
        distill_options: Options of :func:`distiq.distill` (``loss``, ``temperature``, ``alpha``, ...).
        **train_options: :class:`~distiq.engine.config.TrainConfig` fields (``epochs``, ``lr``, ...).

    Each epoch's history record gains ``sparsity``, the fraction of zero weights at its end.
    """
    user_callback = train_options.pop("on_epoch_end", None)
    val_set = as_arrays(val_data) if val_data is not None else None
    if gradual is not None:
        cfg, _ = TrainConfig.from_options(**train_options)
        if cfg.checkpoint_dir or cfg.patience is not None or cfg.target_accuracy is not None:
            raise DistiqError(
                "the gradual schedule needs every epoch: leave checkpoint_dir, patience and "
                "target_accuracy unset"
            )

    def on_epoch_end(epoch: int, record: dict) -> None:
        record["sparsity"] = sparsity_table(model)["total"]["sparsity"]
        if gradual is not None and val_set is not None:
            val = evaluate_loss_accuracy(model, val_set, 1024)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        if user_callback is not None:
            user_callback(epoch, record)

    engine_val = None if gradual is not None else val_set
    with keep_masks(model, gradual, scope, tuple(exclude)):
        if teacher is None:
            return train(model, train_data, engine_val, on_epoch_end=on_epoch_end, **train_options)
        options = dict(distill_options or {})
        return distill(
            teacher, model, train_data, engine_val, on_epoch_end=on_epoch_end, **options, **train_options
        )


def working_copies(
    model: nn.Module, teacher: nn.Module | str | None, inplace: bool
) -> tuple[nn.Module, nn.Module | None]:
    """The model to change (a copy unless ``inplace``) and the teacher to fine-tune from:
    ``"original"`` is a frozen copy of ``model`` as given, taken before anything changes it."""
    if isinstance(teacher, str) and teacher != "original":
        raise DistiqError(f"teacher: expected a model or 'original', got {teacher!r}")
    if teacher == "original":
        teacher = copy.deepcopy(model).eval()
    return (model if inplace else copy.deepcopy(model)), teacher


def prune(
    model: nn.Module,
    amount: float | Mapping[str, float],
    *,
    structured: bool = False,
    scope: str = SCOPE,
    importance: str = "l1",
    example_input: torch.Tensor | None = None,
    exclude: Iterable[str] = (),
    round_to: int | None = None,
    train_data: Dataset | None = None,
    val_data: Dataset | None = None,
    pruning_schedule: str = "one-shot",
    ramp: float = 0.6,
    teacher: nn.Module | str | None = None,
    distill_options: Mapping[str, Any] | None = None,
    inplace: bool = False,
    **train_options: Any,
) -> nn.Module:
    """Prune ``model`` and, given training data, fine-tune it; return the pruned model.

    Args:
        model: The trained model (left untouched unless ``inplace``).
        amount: Fraction to remove: of the weights (unstructured) or of the output channels
            (structured). A mapping gives per-layer fractions by layer path.
        structured: Remove whole channels/neurons (the result is physically smaller) instead of
            zeroing single weights.
        scope: ``"global"`` (one threshold / ranking over all layers) or ``"layer"`` (each layer loses
            ``amount``).
        importance: Structured ranking: ``"l1"``, ``"l2"`` (filter norms) or ``"bn"`` (BatchNorm scale).
            Unstructured pruning ranks weights by ``|w|`` (l1 and l2 give the same order).
        example_input: One input batch for tracing (structured; default from the model's config).
        exclude: Layer paths left unpruned. Structured pruning always keeps the output layer.
        round_to: Structured: leave every pruned layer a multiple of this many channels.
        train_data: Fine-tune on these after pruning (required by the cubic schedule).
        val_data: Validation data for fine-tuning.
        pruning_schedule: ``"one-shot"`` (prune, then fine-tune) or ``"cubic"`` (unstructured only: Zhu
            & Gupta's gradual schedule over the first ``ramp`` fraction of the fine-tuning steps). Not
            ``schedule``, which is the learning-rate schedule of the fine-tuning.
        ramp: Fraction of fine-tuning steps over which the cubic schedule reaches ``amount``.
        teacher: Distil during fine-tuning from this model, or ``"original"`` for the unpruned model.
        distill_options: Options of :func:`distiq.distill` (``loss``, ``temperature``, ``alpha``, ...).
        inplace: Prune ``model`` itself instead of a copy.
        **train_options: Fine-tuning options (``epochs``, ``lr``, ``batch_size``, ...).

    Returns:
        The pruned model; unstructured masks are folded in (the zeros are plain weights).
    """
    if pruning_schedule not in SCHEDULES:
        raise DistiqError(
            f"pruning_schedule: expected one of {', '.join(SCHEDULES)}, got {pruning_schedule!r}"
        )
    if pruning_schedule == "cubic" and (structured or train_data is None or isinstance(amount, Mapping)):
        raise DistiqError(
            "pruning_schedule 'cubic' prunes during fine-tuning: needs train_data, a float amount "
            "and structured=False"
        )
    if round_to is not None and not structured:
        raise DistiqError("round_to: counts channels, so it needs structured=True")
    model, teacher = working_copies(model, teacher, inplace)
    if structured:
        prune_channels_(
            model,
            amount,
            importance=importance,
            scope=scope,
            example_input=example_input,
            exclude=exclude,
            round_to=round_to,
        )
    elif pruning_schedule == "one-shot":
        prune_magnitude_(model, amount, scope, exclude)
    sched = None
    if pruning_schedule == "cubic":
        cfg, _ = TrainConfig.from_options(**train_options)
        steps = cfg.epochs * math.ceil(len(as_arrays(train_data)) / cfg.batch_size)
        sched = CubicSchedule.over(float(amount), steps, ramp)  # type: ignore[arg-type]
    if train_data is not None:
        fine_tune(
            model,
            train_data,
            val_data,
            teacher=teacher,  # type: ignore[arg-type]
            gradual=sched,
            scope=scope,
            exclude=exclude,
            distill_options=distill_options,
            **train_options,
        )
    return fold_masks_(model)
