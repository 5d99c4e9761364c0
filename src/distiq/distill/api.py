"""``distiq.distill``: train a student from a teacher with any mix of the distillation methods."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import as_arrays
from distiq.engine.config import training_views
from distiq.engine.train import TrainResult, train

from .logits import make_logit_loss
from .objective import DistillObjective, FeatureSpec
from .offline import teacher_logits
from .schemes import freeze_, init_from_teacher_
from .spec import resolve_offline


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None = None,
    *,
    loss: str = "kd",
    temperature: float = 4.0,
    alpha: float = 0.9,
    loss_options: Mapping[str, Any] | None = None,
    features: Iterable[FeatureSpec | Mapping[str, Any]] = (),
    offline: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    freeze: Iterable[str] | None = None,
    init_from_teacher: bool = False,
    **train_options: Any,
) -> TrainResult:
    """Train ``student`` (in place) to match ``teacher`` and the labels.

    Args:
        teacher: Trained model; fixed during distillation.
        student: Model to train.
        train_data: Transfer set ``(x, y)``.
        val_data: Validation set for early stopping / target accuracy / best-epoch restore.
        loss: Registered logit loss: "kd", "mse", "hard-kd", "dkd" (or a user-registered one).
        temperature: Softening temperature of the logit loss.
        alpha: Weight of the logit term; ``1 - alpha`` weights the hard-label cross-entropy.
        loss_options: Extra options of the logit loss (e.g. ``{"beta": 8.0}`` for DKD).
        features: Feature terms, e.g. ``{"kind": "hint", "student": "features.3",
            "teacher": "features.6", "weight": 1.0}``; "merge" takes a list of teacher layers.
        offline: Compute the teacher's logits once (cached in ``cache_dir`` if given) and reuse them;
            ``None``: offline unless feature terms need the teacher online (as in recipes and the CLI).
        cache_dir: Folder for the offline cache of teacher logits.
        freeze: Student layers not to train (paths, globs, class names or "conv"/"pool"/"bn").
        init_from_teacher: First copy teacher weights into the student where names and shapes match.
        **train_options: Options of :class:`distiq.engine.config.TrainConfig` (epochs, lr, ...).

    Returns:
        The training result; ``result.model`` is the student (for a Keras student, its
        :class:`distiq.keras.KerasModule` view; the Keras model itself is trained in place).
    """
    teacher, student = keras_view(teacher), keras_view(student)
    train_set = as_arrays(train_data)
    specs = [f if isinstance(f, FeatureSpec) else FeatureSpec(**f) for f in features]
    if init_from_teacher:
        init_from_teacher_(student, teacher)
    if freeze:
        freeze_(student, freeze)
    logit_loss = make_logit_loss(loss, temperature=temperature, **dict(loss_options or {}))
    cached = None
    if resolve_offline(offline, specs):
        cached = teacher_logits(teacher.eval(), train_set, cache_dir, views=training_views(train_options))
    objective = DistillObjective(
        student, teacher, logit_loss, alpha, specs, train_set.x[:2], cached_logits=cached
    )
    return train(student, train_set, val_data, objective=objective, **train_options)


def keras_view(model: nn.Module) -> nn.Module:
    """A Keras model as its :class:`distiq.keras.KerasModule` (channels first, one state-dict entry
    per variable, layers by name); any other module as it is. Keras is looked up, never imported."""
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        from distiq.keras import as_module  # the optional extra, needed only for Keras models

        return as_module(model)
    return model
